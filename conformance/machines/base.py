"""What every conformance machine shares: the recorder, known deviations, and the rule decorator.

A subclass per implementation sets ``factory`` (zero-argument class, so Hypothesis' printed
reproducer runs as is). The runner sets ``recorder`` before each run.

Every rule is declared with :func:`step`, every invariant that reads the implementation with
:func:`live_invariant`; both end the example quietly on a known deviation
(:meth:`ConformanceMachine.tolerate`), and note the violation they raise, so the printed
counterexample says which step broke what. Rules take every value they use as an argument (no
``st.data()``): Hypothesis prints arguments, and the printed script must run as is.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

from hypothesis import note as _note, strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from refmodel.errors import PeerSpecViolation, SpecViolation
from refmodel.virtio.features import Feature

from conformance.checks import Recorder

TIMEOUT = 10.0
#: Marks a rule made by :func:`step` (a test checks that every rule is one).
STEP_MARKER = "conformance_step_when"

F = Feature
#: The features either reference side may decline (or not offer) in an example.
OPTIONAL = (F.VIRTIO_BALLOON_F_MUST_TELL_HOST, F.VIRTIO_BALLOON_F_STATS_VQ, F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
            F.VIRTIO_BALLOON_F_FREE_PAGE_HINT, F.VIRTIO_BALLOON_F_PAGE_POISON, F.VIRTIO_BALLOON_F_PAGE_REPORTING,
            F.VIRTIO_F_EVENT_IDX, F.VIRTIO_F_INDIRECT_DESC)
CYCLES = st.integers(0, 3)  # device/driver cycles after a host action
#: An index into a list known only at run time (taken modulo its length): printed as a plain number.
PICK = st.integers(0, 1 << 16)

Method = TypeVar("Method", bound=Callable[..., None])


def note(text: str) -> None:
    """hypothesis.note inside a search; a print when a counterexample is replayed by hand. Either way
    each line is a Python comment, so a note never reads as a step of the printed script."""
    text = "\n".join(f"# {line}" for line in text.splitlines() or [""])
    try:
        _note(text)
    except InvalidArgument:
        print(text)


#: Marks an exception whose step already noted it (an inner step of a composite one such as round_trip).
_NOTED = "_conformance_noted"


def note_failure(where: str, e: Exception) -> None:
    """Note what the failing step raised, once, at the innermost step: the comment printed right before
    the raise (Hypothesis prints a step's notes before its line)."""
    if getattr(e, _NOTED, False):
        return
    with contextlib.suppress(AttributeError):  # an exception type with __slots__ cannot be marked
        setattr(e, _NOTED, True)
    what = f"{e.req_id} violated: {e.detail or e.paraphrase}" if isinstance(e, SpecViolation) else \
        f"{type(e).__name__}: {e}"
    tb = e.__traceback__
    while not where and tb is not None:  # a bare ``with self.tolerate():`` (boot): the function it is in
        if tb.tb_frame.f_code.co_name not in ("tolerate", "__exit__"):
            where = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    note(f"{where or 'this step'} fails here: {what}")


def live(self: ConformanceMachine) -> bool:
    """At run time: booted, and no known deviation ended the example."""
    return not self.ended and self.booted


def started(self: ConformanceMachine) -> bool:
    """The precondition of every rule: booted. Not ``live``: whether an asynchronous implementation
    (QEMU's iothread) meets a known deviation in a given step depends on timing, and a precondition
    that differs between a run and its replay makes Hypothesis stop the whole search
    (FlakyStrategyDefinition). Rules skip their body instead once the example ended (see :func:`step`)."""
    return self.booted


def step(when: Callable[[Any], object] | None = None, needs: Callable[[Any], object] | None = None,
         **strategies: st.SearchStrategy[Any]) -> Callable[[Method], Method]:
    """A rule of a conformance machine: ``@step(when=predicate, needs=predicate, arg=strategy, ...)``.

    Hypothesis may choose it once the machine booted and ``when(self)`` holds. ``when`` must read only what
    is fixed for the whole example (the offer, the capabilities): once a known deviation ended an example
    the bodies stop changing the machine, so a precondition on what they change (negotiated features,
    the workload) can differ between a run and its replay, and that stops the whole search
    (FlakyStrategyDefinition). ``needs`` takes those: it is read when the rule runs, and the rule does
    nothing if it fails. Once a known deviation ended the example the body is skipped, and a known
    deviation it raises ends the example quietly (:meth:`ConformanceMachine.tolerate`).
    """
    def decorate(f: Method) -> Method:
        @functools.wraps(f)
        def body(self: ConformanceMachine, *args: Any, **kwargs: Any) -> None:
            if self.ended:
                note(f"{f.__name__}: skipped, the example ended on a known deviation")
                return
            if needs is not None and not needs(self):
                note(f"{f.__name__}: nothing to do in this state")
                return
            with self.tolerate(f.__name__):
                f(self, *args, **kwargs)

        def allowed(self: ConformanceMachine) -> bool:
            return started(self) and (when is None or bool(when(self)))

        allowed.__qualname__ = allowed.__name__ = f"{f.__name__}_allowed"
        setattr(body, STEP_MARKER, when)
        return precondition(allowed)(rule(**strategies)(body))  # type: ignore[return-value]
    return decorate


def live_invariant() -> Callable[[Method], Method]:
    """An invariant that reads the implementation: checked only while the example is live, and a known
    deviation it finds ends the example quietly."""
    def decorate(f: Method) -> Method:
        @functools.wraps(f)
        def check(self: ConformanceMachine) -> None:
            if live(self):
                with self.tolerate(f.__name__):
                    f(self)
        return invariant()(check)  # type: ignore[return-value]
    return decorate


class ConformanceMachine(RuleBasedStateMachine):
    #: Builds the implementation under test (set by the per-implementation subclass).
    factory: ClassVar[Any] = None
    #: Filled by the runner; a default keeps a bare ``TestCase`` usable.
    recorder: ClassVar[Recorder] = Recorder()
    timeout: ClassVar[float] = TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.booted = False  # the initializer brought the implementation up
        self.ended = False  # a tolerated violation ended this example

    @property
    def R(self) -> Recorder:
        return type(self).recorder

    @contextlib.contextmanager
    def tolerate(self, where: str = "") -> Iterator[None]:
        """End the example quietly on a violation the run already knows about; note any other failure
        of the step ``where``."""
        try:
            yield
        except PeerSpecViolation as e:
            if e.req_id not in self.R.tolerated:
                note_failure(where, e)
                raise
            self.R.tolerated_seen.setdefault(e.req_id, str(e))
            note(f"known deviation {e.req_id}; this example ends here")
            self.ended = True
        except Exception as e:
            note_failure(where, e)
            raise

    @precondition(lambda self: not started(self))
    @rule()
    def idle(self) -> None:
        """Nothing happens (keeps a rule available when the boot itself ended the example)."""
        note("idle")


class GuestMachine(ConformanceMachine):
    """A machine with a guest: the workload rules, the same for both roles (``self.os`` is the GuestOS)."""

    #: The virtqueue layout the run asks for (``--ring``): "packed" has the reference side offer (the driver
    #: machine's device) or accept (the device machine's driver) VIRTIO_F_RING_PACKED; "split" neither.
    ring: ClassVar[str] = "split"

    def _written(self, pages: list[int]) -> None:
        """Hook: the workload just wrote ``pages``."""

    @step(count=st.integers(1, 8), top=st.booleans())
    def workload_alloc_write(self, count: int, top: bool) -> None:
        pages = [self.os.workload_alloc_write(top=top) for _ in range(count)]
        self._written([p for p in pages if p is not None])
        note(f"workload allocates and writes pages {pages}")

    @step(needs=lambda self: self.os.workload, pick=PICK)
    def workload_free(self, pick: int) -> None:
        pages = sorted(self.os.workload)  # may differ between replays of an asynchronous implementation,
        page = pages[pick % len(pages)]  # so the argument is an index, not a member
        self.os.workload_free(page)
        note(f"workload frees page {page}")
