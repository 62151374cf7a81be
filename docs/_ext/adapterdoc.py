"""The reference half of "Writing an adapter", generated from :mod:`conformance.interface` at build time.

Every role Protocol, the transport, every capability Protocol and the optional attributes become
Python-domain entries (``.. py:method::``), so the page lists exactly the methods the suite checks
for (:func:`conformance.interface.check_implementation`) with their docstrings, the spec sections
those cite, and, for capabilities, the checks that never run without them (:mod:`capneeds`).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from capneeds import capability_uses, factory_calls, role_machines

from conformance import interface
from conformance.interface import CAPABILITY_PROTOCOLS, ROLE_CAPABILITIES, ROLE_PROTOCOLS, _methods
from refmodel.capabilities import Capability
from refmodel.virtio import transport
from refmodel.virtio.transport import Transport
from spec.catalogue import catalogue

ROOT = Path(__file__).resolve().parents[2]
_SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")
_ID = re.compile(r"\b((?:[A-Z][A-Z0-9]*-)+D?)(\d+)((?:/\d+)*)")


def sections(doc: str) -> list[str]:
    """The spec sections a docstring cites (``§5.5.6.5``), in order, once each."""
    return list(dict.fromkeys(_SECTION.findall(doc)))


def cited_ids(doc: str) -> list[str]:
    """Catalogue IDs a docstring names, ``SPLIT-DEV-8/9/12/13`` read as four."""
    ids = catalogue()
    out = []
    for prefix, first, more in _ID.findall(doc):
        for n in [first, *more.split("/")[1:]]:
            if prefix + n in ids and prefix + n not in out:
                out.append(prefix + n)
    return out


def signature(fn: Any) -> str:
    """``name(args) -> ret`` without ``self``, annotations as written in the source."""
    sig = inspect.signature(fn)
    parts, star = [], False
    for p in list(sig.parameters.values())[1:]:
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind is p.VAR_POSITIONAL:
            star = True
        text = ("*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else "") + p.name
        if p.annotation is not p.empty:
            text += f": {_ann(p.annotation)}"
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        parts.append(text)
    ret = "" if sig.return_annotation is sig.empty else f" -> {_ann(sig.return_annotation)}"
    return f"{fn.__name__}({', '.join(parts)}){ret}"


def _ann(a: Any) -> str:
    return a if isinstance(a, str) else getattr(a, "__name__", repr(a))


def _indent(text: str, n: int) -> list[str]:
    return [(" " * n + line).rstrip() for line in text.splitlines()]


def _doc(obj: Any) -> str:
    return inspect.getdoc(obj) or ""


def _capability_comments() -> dict[str, str]:
    """The ``#:`` comment above each :class:`Capability` member (the enum's own documentation)."""
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in Path(inspect.getsourcefile(Capability) or "").read_text().splitlines():
        text = line.strip()
        name = re.match(r"(\w+)\s*=", text)
        if text.startswith("#:"):
            pending.append(text[2:].strip())
        elif name and name.group(1) in Capability.__members__ and pending:
            out[name.group(1)] = " ".join(pending)
            pending = []
        elif text:
            pending = []
    return out


def _factory(proto: type) -> list[str]:
    """How the suite calls the factory: the calls in the role's machine, parameters named as the
    reference implementation's factory names them."""
    from conformance.registry import BUILTIN

    machine = role_machines()[proto]
    role, level = next(k for k, v in ROLE_PROTOCOLS.items() if v is proto)
    ref = BUILTIN["reference" if level == "balloon" else "virtq-reference", role].factory
    params = list(inspect.signature(ref).parameters.values())
    calls = factory_calls(machine)
    out = []
    for n, keywords in sorted(calls, reverse=True):
        args = [_param(p) for p in params[:n]]
        named = {p.name: p for p in params}
        if keywords:
            args += ["*", *(_param(named[k]) if k in named else k for k in keywords)]
        text = f"``make({', '.join(args)})``"
        if not n and len(calls) > 1:  # the device machine's other call: a VMM with its own RAM
            text += (" for a VMM that owns the guest's RAM: the factory has ``provides_memory = True``"
                     f" ({_cls(interface.VmmFactory)}) and the device is an "
                     f"{_cls(interface.OwnsGuestMemory)}")
        out.append(text)
    return out


def _param(p: inspect.Parameter) -> str:
    return p.name + (f": {_ann(p.annotation)}" if p.annotation is not p.empty else "")


def _method(proto: type, name: str, needed: str) -> list[str]:
    fn = getattr(proto, name)
    doc = _doc(fn)
    own, outer = sections(doc), sections(_doc(proto))
    spec = (", ".join(f"§{s}" for s in own) if own else
            ", ".join(f"§{s}" for s in outer) + " (the Protocol's)" if outer else "none cited")
    out = [f"   .. py:method:: {signature(fn)}", ""]
    out += _indent(doc or "(No docstring in the source.)", 6) + [""]
    out += [f"      :Spec: {spec}", f"      :Needed by: {needed}", ""]
    return out


def _protocol(proto: type, fields: list[str], needed: str, own_only: bool = False) -> list[str]:
    names = [m for m in _methods(proto) if not own_only or m in vars(proto)]
    out = [f".. py:class:: {proto.__name__}", f"   :module: {proto.__module__}", ""]
    out += _indent(_doc(proto), 3) + [""] + [f"   :{f}" for f in fields] + [""]
    for name in names:
        out += _method(proto, name, needed)
    if not names:
        out += ["   A marker: no methods, only the declaration.", ""]
    return out


def _cls(proto: type) -> str:
    return f":py:class:`{proto.__name__} <{proto.__module__}.{proto.__name__}>`"


def _ids(ids: tuple[str, ...]) -> str:
    return ", ".join(f":need:`{i} <{i}>`" for i in ids)


def _rules(rules: tuple[str, ...]) -> str:
    return ", ".join(f"``{r}``" for r in rules)


def page() -> str:
    uses = capability_uses()
    comments = _capability_comments()
    out = ["Roles and levels", "----------------", "",
           "One Protocol per role and level. ``--role`` picks the role, ``--level`` the level",
           "(``balloon`` by default). Every method below is checked for when the run starts",
           "(``check_implementation``); a missing one stops the run with a one-line error naming it.", ""]
    for (role, level), proto in ROLE_PROTOCOLS.items():
        caps = sorted(ROLE_CAPABILITIES[proto], key=lambda c: list(Capability).index(c))
        fields = [f"Role, level: {role}, {level}",
                  f"Factory: {'; or '.join(_factory(proto))}",
                  "Capabilities: " + (", ".join(f"{_cls(CAPABILITY_PROTOCOLS[c])} (``{c.value}``)"
                                                for c in caps) or "none")]
        if issubclass(proto, Transport):
            fields.append(f"Also: every method of {_cls(Transport)}")
        title = f"{role.capitalize()}, {level} level: ``{proto.__name__}``"
        out += [title, "~" * len(title), ""]
        out += _protocol(proto, fields, "every check (required)", own_only=True)
    title = "The transport: ``Transport``"
    out += [title, "~" * len(title), "",
            f"In ``{_rel(transport)}`` because the reference driver calls it too: a balloon device under",
            "test provides it, and a driver under test is handed one.", ""]
    out += _protocol(Transport, ["Role: the driver-facing half of every balloon device"],
                     "every check (required)")
    out += [".. py:class:: Interrupts", f"   :module: {transport.__name__}", "",
            *_indent(_doc(transport.Interrupts), 3), ""]
    out += ["Capabilities", "------------", "",
            "Optional abilities, declared in a ``capabilities`` attribute (a set of",
            ":py:class:`~refmodel.capabilities.Capability`). Each stands for a Protocol whose methods the",
            "implementation must then have. *Skipped without it* lists the requirements whose checks run",
            "only when the capability is declared, read from the machines' source",
            "(``docs/_ext/capneeds.py``): every place a machine names the requirement is inside a rule,",
            "branch or helper that tests for the capability. Without it those requirements are reported",
            "``skipped``. Checks that the reference peer makes while such a rule runs, and requirement IDs",
            "the machines look up in a table, are not in the list; the rules are, and so are the IDs the",
            "Protocol's docstring cites.", ""]
    out += [".. py:class:: Capability", "   :module: refmodel.capabilities", "",
            *_indent(_doc(Capability), 3), ""]
    for cap in Capability:
        proto = CAPABILITY_PROTOCOLS[cap]
        out += [f"   .. py:attribute:: {cap.name}", f"      :value: {cap.value!r}", "",
                f"      {comments.get(cap.name, '')} See {_cls(proto)}.", ""]
    for cap in Capability:
        proto = CAPABILITY_PROTOCOLS[cap]
        roles = [p for p, allowed in ROLE_CAPABILITIES.items() if cap in allowed]
        use = uses[cap]
        title = f"``{cap.name}``: ``{proto.__name__}``"
        out += [title, "~" * len(title), ""]
        target = f"{Capability.__module__}.Capability.{cap.name}"
        fields = [f"Capability: :py:attr:`Capability.{cap.name} <{target}>` (``{cap.value!r}`` in reports)",
                  "Declared by: " + ", ".join(_cls(r) for r in roles),
                  "Skipped without it: " + (_ids(use.ids) or "no check the machines name where they test it"),
                  f"Rules that run only with it: {_rules(use.rules) or 'none'}"]
        cited = [i for i in cited_ids(_doc(proto)) if i not in use.ids]
        if cited:
            fields.append(f"Cited by its docstring: {_ids(tuple(cited))}")
        needed = f"the checks skipped without ``{cap.name}``: {_ids(use.ids)}" if use.ids else \
            f"the rules that need ``{cap.name}``: {_rules(use.rules)}" if use.rules else \
            f"declaring ``{cap.name}``"
        out += _protocol(proto, fields, needed)
    out += ["Optional attributes", "-------------------", "",
            "Read with ``getattr`` where present; nothing is required.", ""]
    for proto in (interface.DeclaresNumbering, interface.OwnsGuestMemory, interface.VmmFactory):
        out += [f".. py:class:: {proto.__name__}", f"   :module: {proto.__module__}", "",
                *_indent(_doc(proto), 3), ""]
        for name, ann in proto.__annotations__.items():
            out += [f"   .. py:attribute:: {name}", f"      :type: {_ann(ann)}", ""]
    return "\n".join(out)


def _rel(module: Any) -> str:
    return Path(module.__file__).resolve().relative_to(ROOT).as_posix()
