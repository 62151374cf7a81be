"""Known deviations: requirements whose failures a run accepts, each for every build or for some only.

One entry a line: a requirement ID, then, optionally, conditions on the implementation's version; ``#``
starts a comment::

    BAL-FPH-D5                          # every build
    PACKED-DEV-7    qemu==7.2           # QEMU 7.2.x only
    SPLIT-DEV-10    qemu>10.0           # QEMU after every 10.0.x
    SPLIT-DEV-13    qemu>=9.0 qemu<11   # every condition must hold

A condition is ``COMPONENT OP VERSION`` (spaces around ``OP`` allowed). ``COMPONENT`` is a product the
report's ``versions`` names (:data:`COMPONENTS`: ``qemu`` for "QEMU 10.0.2 ...", ``linux`` for "Linux
6.1.0-31-cloud-amd64 ..."); the first version given for it there is the one compared. ``OP`` is one of
``<  <=  >  >=  ==  !=``; ``VERSION`` is whole numbers joined by dots. A bound names a series when it has
fewer parts than the build's version: the build's version is cut to the bound's length before comparing,
so ``qemu==7.2`` is every 7.2.x, ``qemu>10.0`` is 10.1 on, ``qemu<=7.2`` is 7.2.x and earlier, and
``qemu>10.0.2`` is 10.0.3 on. An implementation whose versions do not name the component matches no
condition on it. Several lines may name one ID (their scopes add up); a run accepts a failure by the first
line that applies to the build, and a line whose conditions do not hold leaves that failure a plain FAIL.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Set

import attrs

from spec.catalogue import catalogue

from conformance.registry import DutError

#: Components a condition can name, and the word that precedes their version in the report's ``versions``.
COMPONENTS: Mapping[str, str] = {"linux": "Linux", "qemu": "QEMU"}

OPERATORS: Mapping[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    ">": operator.gt}

_OP = re.compile(r"\s*(<=|>=|==|!=|<|>)\s*")
_CONDITION = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)(<=|>=|==|!=|<|>)(.*)")
#: At most 9 digits a part: a bound is a release number, and int() of a long digit string is refused.
_VERSION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})*")


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@attrs.frozen
class Condition:
    component: str  # a key of COMPONENTS
    op: str  # a key of OPERATORS
    bound: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.component}{self.op}{'.'.join(map(str, self.bound))}"

    def holds(self, versions: str) -> bool:
        found = component_version(versions, self.component)
        if found is None:
            return False
        cut = (found + (0,) * len(self.bound))[:len(self.bound)]
        return OPERATORS[self.op](cut, self.bound)


def component_version(versions: str, component: str) -> tuple[int, ...] | None:
    """The first version ``versions`` (a report's ``versions`` value) gives for ``component``, if any."""
    m = re.search(rf"\b{COMPONENTS[component]}\s+v?({_VERSION.pattern})", versions, re.IGNORECASE)
    return _numbers(m.group(1)) if m else None


@attrs.frozen
class KnownDeviation:
    """One line of a known-deviations list."""

    req_id: str
    conditions: tuple[Condition, ...]  # all must hold; none: every build
    source: str  # the list as given to --known-deviations (a packaged list's name, or a path)
    line: int

    @property
    def scope(self) -> str:
        """The conditions as written back (``qemu>10.0``), or ``every build``."""
        return " ".join(map(str, self.conditions)) or "every build"

    def applies_to(self, versions: str) -> bool:
        return all(c.holds(versions) for c in self.conditions)

    def cite(self) -> str:
        """Where the entry is, for messages: ``qemu line 12 (qemu>10.0)``."""
        return f"{self.source} line {self.line} ({self.scope})"

    def to_json(self) -> dict[str, object]:
        return {"file": self.source, "line": self.line, "applies_to": [str(c) for c in self.conditions]}


@attrs.frozen(eq=False)
class KnownDeviations(Set[str]):
    """A parsed list: as a set (equal to, and hashed as, a frozenset), the requirement IDs it names,
    whatever their scope."""

    entries: tuple[KnownDeviation, ...] = ()

    def __hash__(self) -> int:
        return self._hash()

    def __contains__(self, item: object) -> bool:
        return any(e.req_id == item for e in self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(e.req_id for e in self.entries))

    def __len__(self) -> int:
        return len({e.req_id for e in self.entries})

    def applying(self, versions: str) -> dict[str, KnownDeviation]:
        """Per requirement ID, the first entry that applies to a build whose ``versions`` string is this."""
        out: dict[str, KnownDeviation] = {}
        for e in self.entries:
            if e.req_id not in out and e.applies_to(versions):
                out[e.req_id] = e
        return out

    def not_applying(self, versions: str) -> tuple[KnownDeviation, ...]:
        """Entries for IDs no entry applies to on this build (they accept nothing here)."""
        applied = self.applying(versions)
        return tuple(e for e in self.entries if e.req_id not in applied)


def resolve(known: Iterable[str], versions: str) -> dict[str, KnownDeviation | None]:
    """The known deviations that apply to a build: per ID, the entry accepting it (None: ``known`` is a
    plain set of IDs, as the Python API takes, which applies to every build)."""
    if isinstance(known, KnownDeviations):
        return dict(known.applying(versions))
    return dict.fromkeys(known)


def parse(text: str, source: str) -> KnownDeviations:
    """The list in ``text`` (from ``source``, named in errors). Bad input is one :class:`DutError` line
    naming the file, the line and the field."""
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        where = f"--known-deviations {source}:{n}"
        req, *rest = content.split(None, 1)
        if req not in catalogue():
            raise DutError(f"{where}: unknown requirement {req!r}")
        conditions = tuple(_condition(t, where) for t in _OP.sub(r"\1", "".join(rest)).split())
        entries.append(KnownDeviation(req, conditions, source, n))
    return KnownDeviations(tuple(entries))


def _condition(token: str, where: str) -> Condition:
    m = _CONDITION.fullmatch(token)
    if m is None:
        raise DutError(f"{where}: {token!r}: not a condition COMPONENT OP VERSION (e.g. qemu>=10.1; OP one "
                       f"of {' '.join(OPERATORS)})")
    component, op, version = m.group(1).lower(), m.group(2), m.group(3)
    if component not in COMPONENTS:
        raise DutError(f"{where}: {token!r}: unknown component {m.group(1)!r} "
                       f"(one of: {', '.join(COMPONENTS)})")
    if not _VERSION.fullmatch(version):
        raise DutError(f"{where}: {token!r}: version {version!r} is not whole numbers joined by dots "
                       "(e.g. 10.0.2)")
    return Condition(component, op, _numbers(version))
