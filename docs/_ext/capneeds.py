"""Which requirement checks need which capability, read from the conformance machines' source.

A check needs capability X when every place the machine names its requirement ID runs only with X
declared: in a rule whose precondition (``@precondition``, ``@step(when=...)``, ``@step(needs=...)``) tests
``Capability.X in self.caps``, after an early exit on its absence, under an ``if`` on it, or in a helper
that only such code calls. Tests on an attribute set from the capability (``self.per_queue_irq =
Capability.X in self.caps``), on a predicate method that returns one (``self._hinting()``), on
``getattr(obj, "method")`` for a capability's method, and on an attribute that only such code sets to
something other than None (``self.current_id is None``) count too.

The machine classes come from their runtime MRO, so rules and helpers may live in any module under
``conformance/`` (mixins and ``super()`` chains included). IDs the machines compute from a table (the
notification rules of ``conformance.machines.notify``) are not named where they are checked, so the
scan cannot see them; ``tests/docs`` checks that what it does report is skipped in a run.
"""

from __future__ import annotations

import ast
import inspect
import sys
from collections import defaultdict
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import NamedTuple

from conformance.interface import CAPABILITY_PROTOCOLS, _methods
from refmodel.capabilities import Capability
from spec.catalogue import catalogue

ROOT = Path(__file__).resolve().parents[2]
_EXITS = (ast.Return, ast.Continue, ast.Break, ast.Raise)
Caps = frozenset[Capability]
NONE: Caps = frozenset()
ALL: Caps = frozenset(Capability)


@cache
def _tree(path: str) -> ast.Module:
    return ast.parse(Path(path).read_text(), path)


def _ours(obj: object) -> str | None:
    """The source file of a class or function of ``conformance``, else None."""
    try:
        path = inspect.getsourcefile(obj)  # type: ignore[arg-type]
    except TypeError:
        return None
    return path if path and Path(path).resolve().is_relative_to(ROOT / "conformance") else None


def _self_attr(e: ast.AST) -> str | None:
    if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "self":
        return e.attr
    return None


def _capability(e: ast.AST) -> Capability | None:
    if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "Capability":
        return Capability.__members__.get(e.attr)
    return None


def _is_rule(obj: object) -> bool:
    """A rule, invariant or initializer: Hypothesis marks the function it registers."""
    return any(a.startswith("hypothesis_stateful_") for a in getattr(obj, "__dict__", {}))


def _is_super(e: ast.AST) -> bool:
    return isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "super"


class _Fn:
    """One function of a machine: its AST, where names in it resolve, and what the walk found."""

    def __init__(self, key: str, node: ast.FunctionDef, module: str, klass: type | None, entry: bool) -> None:
        self.key, self.node, self.module, self.klass, self.entry = key, node, module, klass, entry
        self.pre: Caps = NONE
        self.sites: list[tuple[str, Caps]] = []  # (callee key, guard at the call)
        self.ids: list[tuple[str, Caps]] = []  # (requirement ID, guard where it is named)
        self.sets: list[tuple[str, Caps]] = []  # (attribute, guard) where self.attr gets a value, not None


class _Machine:
    """The functions of one machine class (every definition along its MRO) and the module helpers
    they call, each with the capabilities it certainly runs under."""

    def __init__(self, cls: type) -> None:
        self.mro = [k for k in cls.__mro__ if _ours(k)]
        self.fns: dict[str, _Fn] = {}
        self.aliases: dict[str, Caps] = {}  # attribute -> capabilities its truth implies
        self.state: dict[str, Caps] = {}  # attribute -> capabilities every non-None assignment runs under
        self.ids = set(catalogue())
        self.by_method = {m: cap for cap, proto in CAPABILITY_PROTOCOLS.items() for m in _methods(proto)}
        for klass in self.mro:
            node = next((n for n in ast.walk(_tree(_ours(klass) or "")) if isinstance(n, ast.ClassDef)
                         and n.name == klass.__name__), None)
            for item in node.body if node else ():
                if isinstance(item, ast.FunctionDef):
                    entry = _is_rule(vars(klass).get(item.name))
                    key = f"{klass.__qualname__}.{item.name}"
                    self.fns[key] = _Fn(key, item, klass.__module__, klass, entry)
        self._find_aliases()
        while True:  # the guards say where attributes are set, which may guard more: to a fixpoint
            walked: set[str] = set()
            while len(walked) < len(self.fns):  # walking may find module-level helpers to walk too
                for fn in [f for k, f in self.fns.items() if k not in walked]:
                    walked.add(fn.key)
                    self._walk(fn)
            self._solve()
            state = self._state()
            if state == self.state:
                break
            self.state = state

    # -- where a name goes -----------------------------------------------------------------------------------
    def _method(self, name: str, after: type | None = None) -> _Fn | None:
        """``self.name`` (the first definition along the MRO), or ``super().name`` seen from ``after``."""
        start = self.mro.index(after) + 1 if after in self.mro else 0
        for klass in self.mro[start:]:
            fn = self.fns.get(f"{klass.__qualname__}.{name}")
            if fn is not None:
                return fn
        return None

    def _global(self, module: str, name: str) -> _Fn | None:
        """A module-level function a machine function names (``started``), parsed from its own file."""
        obj = getattr(sys.modules.get(module), name, None)
        if not inspect.isfunction(obj):
            return None
        obj = inspect.unwrap(obj)
        key = f"{obj.__module__}:{obj.__name__}"
        if key in self.fns:
            return self.fns[key]
        path = _ours(obj)
        for node in _tree(path).body if path else ():
            if isinstance(node, ast.FunctionDef) and node.name == obj.__name__:
                fn = self.fns[key] = _Fn(key, node, obj.__module__, None, False)
                return fn
        return None

    def _resolve(self, fn: _Fn, node: ast.AST) -> _Fn | None:
        if _self_attr(node):
            return self._method(node.attr)  # type: ignore[attr-defined]
        if isinstance(node, ast.Attribute) and _is_super(node.value):
            return self._method(node.attr, after=fn.klass)
        if isinstance(node, ast.Name):  # a function of the class body (``when=_hinting``), or of the module
            own = self.fns.get(f"{fn.klass.__qualname__}.{node.id}") if fn.klass else None
            return own or self._global(fn.module, node.id)
        return None

    # -- what a test asserts ------------------------------------------------------------------------------
    def pos(self, e: ast.AST | None, fn: _Fn | None = None, depth: int = 0) -> Caps:
        """Capabilities certainly declared when ``e`` is true."""
        return self._truth(e, fn, depth)[0]

    def neg(self, e: ast.AST | None, fn: _Fn | None = None, depth: int = 0) -> Caps:
        """Capabilities certainly declared when ``e`` is false."""
        return self._truth(e, fn, depth)[1]

    def _truth(self, e: ast.AST | None, fn: _Fn | None, depth: int) -> tuple[Caps, Caps]:
        if e is None or depth > 8:
            return NONE, NONE
        if isinstance(e, ast.Compare) and len(e.ops) == 1:
            op, right = e.ops[0], e.comparators[0]
            cap = _capability(e.left)
            if cap is not None and isinstance(op, (ast.In, ast.NotIn)):
                return (frozenset({cap}), NONE) if isinstance(op, ast.In) else (NONE, frozenset({cap}))
            if isinstance(op, (ast.Is, ast.IsNot)) and isinstance(right, ast.Constant) \
                    and right.value is None:
                caps = self.state.get(_self_attr(e.left) or "", NONE)  # not None: it was set under caps
                return (NONE, caps) if isinstance(op, ast.Is) else (caps, NONE)
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            p, n = self._truth(e.operand, fn, depth + 1)
            return n, p
        if isinstance(e, ast.BoolOp):
            parts = [self._truth(v, fn, depth + 1) for v in e.values]
            ps, ns = [p for p, _ in parts], [n for _, n in parts]
            if isinstance(e.op, ast.And):
                return frozenset().union(*ps), frozenset.intersection(*ns)
            return frozenset.intersection(*ps), frozenset().union(*ns)
        if _self_attr(e):
            attr = _self_attr(e) or ""
            return self.aliases.get(attr, NONE) | self.state.get(attr, NONE), NONE
        if isinstance(e, ast.Call):
            name = e.func.id if isinstance(e.func, ast.Name) else None
            if name in ("getattr", "hasattr") and len(e.args) >= 2 and isinstance(e.args[1], ast.Constant):
                cap = self.by_method.get(e.args[1].value)  # type: ignore[arg-type]
                return (frozenset({cap}) if cap else NONE), NONE
            if name in ("callable", "bool") and e.args:
                return self._truth(e.args[0], fn, depth + 1)
            if fn is not None:
                return self._returns(self._resolve(fn, e.func), depth + 1)
        if isinstance(e, ast.Lambda):
            return self._truth(e.body, fn, depth + 1)
        if fn is not None and isinstance(e, ast.Name):  # a predicate passed by name
            return self._returns(self._resolve(fn, e), depth + 1)
        return NONE, NONE

    def _returns(self, fn: _Fn | None, depth: int) -> tuple[Caps, Caps]:
        """What a predicate function's single ``return`` asserts."""
        if fn is None:
            return NONE, NONE
        body = [s for s in fn.node.body
                if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]  # docstring
        if len(body) == 1 and isinstance(body[0], ast.Return):
            return self._truth(body[0].value, fn, depth)
        return NONE, NONE

    def _find_aliases(self) -> None:
        for fn in list(self.fns.values()):
            for node in ast.walk(fn.node):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and _self_attr(node.targets[0]):
                    caps = self.pos(node.value, fn)
                    if caps:
                        self.aliases[_self_attr(node.targets[0]) or ""] = caps

    # -- the walk ------------------------------------------------------------------------------------------
    def _walk(self, fn: _Fn) -> None:
        fn.pre, fn.sites, fn.ids, fn.sets = NONE, [], [], []
        for dec in fn.node.decorator_list:
            call = dec.func if isinstance(dec, ast.Call) else dec
            name = call.id if isinstance(call, ast.Name) else getattr(call, "attr", "")
            if isinstance(dec, ast.Call):
                tests = [*(dec.args if name == "precondition" else ()),
                         *(k.value for k in dec.keywords if k.arg in ("when", "needs"))]
                fn.pre |= frozenset().union(*(self.pos(t, fn) for t in tests))
            target = self._resolve(fn, call)
            if target is not None:  # a wrapper of ours: it runs whenever the function does
                fn.sites.append((target.key, NONE))
        self._block(fn, fn.node.body, NONE)

    def _block(self, fn: _Fn, stmts: Iterable[ast.stmt], guard: Caps) -> None:
        for s in stmts:
            self._visit(fn, s, guard)
            if isinstance(s, ast.If) and s.body and isinstance(s.body[-1], _EXITS) and not s.orelse:
                guard = guard | self.neg(s.test, fn)  # the rest runs only when the test was false

    def _visit(self, fn: _Fn, node: ast.AST, guard: Caps) -> None:
        if isinstance(node, ast.If):
            self._visit(fn, node.test, guard)
            self._block(fn, node.body, guard | self.pos(node.test, fn))
            self._block(fn, node.orelse, guard | self.neg(node.test, fn))
            return
        if isinstance(node, ast.IfExp):
            self._visit(fn, node.test, guard)
            self._visit(fn, node.body, guard | self.pos(node.test, fn))
            self._visit(fn, node.orelse, guard | self.neg(node.test, fn))
            return
        if isinstance(node, ast.BoolOp):  # short-circuit: later operands run only after earlier ones
            for v in node.values:
                self._visit(fn, v, guard)
                guard = guard | (self.pos(v, fn) if isinstance(node.op, ast.And) else self.neg(v, fn))
            return
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            value = node.value
            if not (isinstance(value, ast.Constant) and value.value is None):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for part in t.elts if isinstance(t, ast.Tuple) else [t]:
                        if _self_attr(part):
                            fn.sets.append((_self_attr(part) or "", guard))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in self.ids:
            fn.ids.append((node.value, guard))
            return
        if isinstance(node, (ast.Name, ast.Attribute)):
            target = self._resolve(fn, node)
            if target is not None and target is not fn:
                fn.sites.append((target.key, guard))
        for field, value in ast.iter_fields(node):
            if field == "decorator_list":
                continue
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self._block(fn, value, guard)
            elif isinstance(value, list):
                for v in value:
                    if isinstance(v, ast.AST):
                        self._visit(fn, v, guard)
            elif isinstance(value, ast.AST):
                self._visit(fn, value, guard)

    def _solve(self) -> None:
        """Each function's guard: what its precondition (a rule) and every call to it guarantee."""
        callers: dict[str, list[tuple[_Fn, Caps]]] = defaultdict(list)
        for fn in self.fns.values():
            for key, guard in fn.sites:
                callers[key].append((fn, guard))
        self.guard = {key: ALL for key in self.fns}
        changed = True
        while changed:
            changed = False
            for key, fn in self.fns.items():
                options = [fn.pre] if fn.entry else []
                options += [self.guard[c.key] | g for c, g in callers[key]]
                new = frozenset.intersection(*options) if options else NONE
                if new != self.guard[key]:
                    self.guard[key], changed = new, True

    def _state(self) -> dict[str, Caps]:
        out: dict[str, Caps] = {}
        for key, fn in self.fns.items():
            for attr, guard in fn.sets:
                g = self.guard[key] | guard
                out[attr] = out[attr] & g if attr in out else g
        return {attr: caps for attr, caps in out.items() if caps}

    def needs(self) -> dict[str, Caps]:
        """Requirement ID -> the capabilities every place the machine names it is guarded by."""
        out: dict[str, Caps] = {}
        for key, fn in self.fns.items():
            for req_id, guard in fn.ids:
                g = self.guard[key] | guard
                out[req_id] = out[req_id] & g if req_id in out else g
        return out

    def rules(self) -> dict[str, Caps]:
        """Rule (Class.method) -> the capabilities it runs only with."""
        return {fn.key: self.guard[key] for key, fn in self.fns.items() if fn.entry and self.guard[key]}


@cache
def machine(cls: type) -> _Machine:
    return _Machine(cls)


def factory_calls(cls: type) -> list[tuple[int, tuple[str, ...]]]:
    """How machine ``cls`` calls the implementation's factory: (positional arguments, keyword names),
    from every call of a ``factory`` in its functions and the module helpers they use."""
    out: list[tuple[int, tuple[str, ...]]] = []
    for fn in machine(cls).fns.values():
        for node in ast.walk(fn.node):
            if isinstance(node, ast.Call) and "factory" in (getattr(node.func, "attr", None),
                                                            getattr(node.func, "id", None)):
                call = (len(node.args), tuple(k.arg for k in node.keywords if k.arg))
                if call not in out:
                    out.append(call)
    return out


def role_machines() -> dict[type, type]:
    """Role Protocol -> the machine class the suite runs for it (the reference implementation's)."""
    from conformance.interface import ROLE_PROTOCOLS
    from conformance.registry import BUILTIN, machine_for

    names = {("device", "balloon"): "reference", ("driver", "balloon"): "reference",
             ("device", "virtqueue"): "virtq-reference", ("driver", "virtqueue"): "virtq-reference"}
    return {proto: machine_for(BUILTIN[names[key], key[0]]) for key, proto in ROLE_PROTOCOLS.items()}


class Use(NamedTuple):
    """What the suite does only when an implementation declares a capability."""

    ids: tuple[str, ...]  # requirement IDs whose checks never run without it
    rules: tuple[str, ...]  # machine rules (Class.method) that run only with it


@cache
def capability_uses() -> dict[Capability, Use]:
    """Capability -> the checks (of the machine's role) and rules that need it."""
    from conformance.interface import ROLE_CAPABILITIES

    cat = catalogue()
    ids: dict[Capability, set[str]] = {cap: set() for cap in Capability}
    rules: dict[Capability, set[str]] = {cap: set() for cap in Capability}
    for proto, cls in role_machines().items():
        role = "device" if "Device" in proto.__name__ else "driver"
        m = machine(cls)
        for req_id, caps in m.needs().items():
            for cap in caps & ROLE_CAPABILITIES[proto]:
                if cat[req_id].role == role:
                    ids[cap].add(req_id)
        for rule, caps in m.rules().items():
            for cap in caps & ROLE_CAPABILITIES[proto]:
                rules[cap].add(rule)
    order = {req_id: i for i, req_id in enumerate(cat)}
    return {cap: Use(tuple(sorted(ids[cap], key=order.__getitem__)), tuple(sorted(rules[cap])))
            for cap in Capability}
