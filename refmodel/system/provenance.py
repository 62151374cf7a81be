"""Where a guest page has been: its recent history, and the requirement that protects it now.

When a check finds a page changed, what the page *is* now does not say who broke which rule; how it
got there does. A page hinted in round 5, released after DONE and then written by the guest is still
"a previously hinted page" (BAL-FPH-DEV-5), not merely a page the device was never given
(BAL-OP-DEV-D1). :meth:`PageHistory.protector` reads the history back to the last event that gave the
device a claim on the page, or took it away, and names the requirement in force.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable

import attrs


class Origin(enum.Enum):
    """An event in a page's life, as the suite sees it."""

    WRITTEN = "written by the guest"
    FREED = "freed by the guest"
    HINTED = "hinted"
    HINT_RELEASED = "released after DONE"
    HINT_REUSED = "reused by the guest before DONE"
    REPORTED = "reported"
    REPORT_ACKED = "report used by the device"
    INFLATED = "inflated"
    DEFLATED = "deflated"


@attrs.frozen
class Mark:
    origin: Origin
    step: int
    #: The command ID of the hinting round, for HINTED and HINT_RELEASED.
    round: int | None = None

    def __str__(self) -> str:
        where = f" (command ID {self.round})" if self.round is not None else ""
        return f"{self.origin.value}{where} at step {self.step}"


#: After these events the device may change the page (the two semantics, and inflate).
DEVICE_MAY_CHANGE = frozenset({Origin.HINTED, Origin.REPORTED, Origin.INFLATED})
#: After these events a change by the device breaks the named requirement.
PROTECTED_BY: dict[Origin, str] = {
    Origin.HINT_RELEASED: "BAL-FPH-DEV-5",
    Origin.REPORT_ACKED: "BAL-FPR-DEV-D1",
    Origin.DEFLATED: "BAL-OP-DEV-D1",
}
#: A page the device was never given (or whose history is forgotten).
NEVER_GIVEN = "BAL-OP-DEV-D1"
#: A hinted page the guest wrote before DONE: the device must keep what the guest wrote.
WRITTEN_AFTER_HINT = "BAL-FPH-D4"


class PageHistory:
    """The last ``depth`` events of every page that has any; memory grows with the pages touched."""

    def __init__(self, depth: int = 8) -> None:
        if depth < 2:
            raise ValueError("a page history needs a depth of at least 2")
        self.depth = depth
        self.step = 0
        self._marks: dict[int, deque[Mark]] = {}

    def tick(self) -> int:
        """The suite took a step; later events carry the new step number."""
        self.step += 1
        return self.step

    def record(self, pages: Iterable[int], origin: Origin, *, round: int | None = None) -> None:
        mark = Mark(origin, self.step, round)
        for page in pages:
            marks = self._marks.get(page)
            if marks is None:
                marks = self._marks[page] = deque(maxlen=self.depth)
            marks.append(mark)

    def history(self, page: int) -> tuple[Mark, ...]:
        return tuple(self._marks.get(page, ()))

    def last(self, page: int) -> Mark | None:
        marks = self._marks.get(page)
        return marks[-1] if marks else None

    def describe(self, page: int) -> str:
        marks = self.history(page)
        return "; ".join(str(m) for m in marks) if marks else "no recorded history"

    def protector(self, page: int) -> str | None:
        """The device requirement a change to ``page`` breaks now, or None if the device may change it."""
        written = False
        for mark in reversed(self.history(page)):
            if mark.origin in (Origin.WRITTEN, Origin.HINT_REUSED):
                written = True
            elif mark.origin is Origin.HINTED:
                return WRITTEN_AFTER_HINT if written else None
            elif mark.origin in DEVICE_MAY_CHANGE:
                return NEVER_GIVEN if written else None
            elif mark.origin in PROTECTED_BY:
                return PROTECTED_BY[mark.origin]
        return NEVER_GIVEN

    def untouched_since(self, page: int, origin: Origin) -> bool:
        """The page's last event is ``origin``: nobody has written or moved it since."""
        last = self.last(page)
        return last is not None and last.origin is origin
