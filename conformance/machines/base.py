"""What both conformance machines share: the recorder, known deviations, and the rule guard.

A subclass per implementation sets ``factory`` (zero-argument class, so Hypothesis' printed
reproducer runs as is). The runner sets ``recorder`` before each run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from hypothesis import note as _note, strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from refmodel.errors import PeerSpecViolation

from conformance.checks import Recorder

TIMEOUT = 10.0


def note(text: str) -> None:
    """hypothesis.note inside a search; a print when a counterexample is replayed by hand."""
    try:
        _note(text)
    except InvalidArgument:
        print(f"# {text}")


def live(self: ConformanceMachine) -> bool:
    """At run time: booted, and no known deviation ended the example."""
    return not self.ended and getattr(self, "booted", False)


def started(self: ConformanceMachine) -> bool:
    """The precondition of every rule: booted. Not ``live``: whether an asynchronous implementation
    (QEMU's iothread) meets a known deviation in a given step depends on timing, and a precondition
    that differs between a run and its replay makes Hypothesis stop the whole search
    (FlakyStrategyDefinition). Rules skip their body instead once the example ended (skip_if_ended)."""
    return getattr(self, "booted", False)


def skip_if_ended(f: Callable[..., None]) -> Callable[..., None]:
    """Make a rule a no-op once a known deviation ended the example (see :func:`started`)."""
    @functools.wraps(f)
    def step(self: ConformanceMachine, *args: Any, **kwargs: Any) -> None:
        if self.ended:
            note(f"{f.__name__}: skipped, the example ended on a known deviation")
            return
        f(self, *args, **kwargs)
    return step


class ConformanceMachine(RuleBasedStateMachine):
    #: Builds the implementation under test (set by the per-implementation subclass).
    factory: ClassVar[Any] = None
    #: Filled by the runner; a default keeps a bare ``TestCase`` usable.
    recorder: ClassVar[Recorder] = Recorder()
    timeout: ClassVar[float] = TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.ended = False  # a tolerated violation ended this example

    @property
    def R(self) -> Recorder:
        return type(self).recorder

    @contextlib.contextmanager
    def tolerate(self) -> Iterator[None]:
        """End the example quietly on a violation the run already knows about."""
        try:
            yield
        except PeerSpecViolation as e:
            if e.req_id not in self.R.tolerated:
                raise
            self.R.tolerated_seen.setdefault(e.req_id, str(e))
            note(f"known deviation {e.req_id}; this example ends here")
            self.ended = True

    @precondition(lambda self: not started(self))
    @rule()
    def idle(self) -> None:
        """Nothing happens (keeps a rule available when the boot itself ended the example)."""
        note("idle")


class GuestMachine(ConformanceMachine):
    """A machine with a guest: the workload rules, the same for both roles (``self.os`` is the GuestOS)."""

    def _written(self, pages: list[int]) -> None:
        """Hook: the workload just wrote ``pages``."""

    @precondition(lambda self: started(self))
    @rule(count=st.integers(1, 8), top=st.booleans())
    @skip_if_ended
    def workload_alloc_write(self, count: int, top: bool) -> None:
        pages = [self.os.workload_alloc_write(top=top) for _ in range(count)]
        self._written([p for p in pages if p is not None])
        note(f"workload allocates and writes pages {pages}")

    @precondition(lambda self: started(self) and self.os.workload)
    @rule(data=st.data())
    @skip_if_ended
    def workload_free(self, data: st.DataObject) -> None:
        pages = sorted(self.os.workload)  # may differ between replays of an asynchronous implementation,
        page = pages[data.draw(st.integers(0, 1 << 16)) % len(pages)]  # so draw an index, not a member
        self.os.workload_free(page)
        note(f"workload frees page {page}")
