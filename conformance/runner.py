"""Run a conformance machine against one implementation and turn the outcome into verdicts.

A run is a series of Hypothesis searches. Each search that fails yields one shrunk counterexample
for one requirement; that requirement is then tolerated (the example ends quietly where it breaks
again) and the search goes on, so one run reports several distinct failures.

Before the first search the runner builds one instance, as the machine's boot does, and checks it
against its role's Protocol (:func:`check_interface`): a missing method is one :class:`InterfaceError`
line, not an error in every example.

Each counterexample is a script that replays as printed (:func:`counterexample`): it tolerates what its
search tolerated, and the runner replays it itself, dropping every step the failure does not need.
:func:`run_levels` adds the virtqueue-level run of the reference's own split queues (:func:`merge`).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from refmodel.balloon.proposals.bits import BITS
from refmodel.errors import LocalSpecViolation, PeerSpecViolation
from refmodel.virtio.features import Feature
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.layout import place
from refmodel.virtio.split.driver import IndirectArena
from refmodel.virtio.virtq import QueueAddresses
from spec.catalogue import Requirement, catalogue

from conformance.search import pinned_constants
from conformance.checks import (DEVICE_CHECKS, DRIVER_CHECKS, NOT_YET, VIRTQUEUE_ONLY, Recorder,
                               capabilities_needed)
from conformance.harness import ImplementationError, deadline
from conformance.interface import (CAPABILITY_PROTOCOLS, ROLE_PROTOCOLS, Capability, InterfaceError,
                                   check_implementation)
from conformance.known_deviations import KnownDeviation, KnownDeviations, resolve as resolve_known
from conformance.machines.base import ConformanceMachine
from conformance.machines.device.boot import make_device
from conformance.machines.proposals import (DEVICE_CHECKS as PROPOSAL_DEVICE_CHECKS,
                                            DRIVER_CHECKS as PROPOSAL_DRIVER_CHECKS)
from conformance.machines.virtq import base as virtq_base
from conformance.machines.virtq.driver import queue_capabilities
from conformance.rings import ring_scope
from conformance.profiles import SHRINK_SECONDS, forced_seed, profile, shrink_budget
from conformance.registry import BUILTIN, Implementation, machine_for, ring_of

VERDICTS = ("pass", "fail", "not-applicable", "not-checkable", "skipped")
#: Feature names of the proposal profiles (not 1.4 bits), for their requirements' applicability.
PROPOSAL_BITS = {b.name: b.mask for b in BITS.values()}


@attrs.frozen
class Failure:
    req_id: str
    detail: str
    counterexample: tuple[str, ...]  # Hypothesis' shrunk steps, replayable as Python


@attrs.frozen
class RunError:
    """The implementation crashed or hung (or the harness did): no requirement to blame."""

    kind: str
    detail: str
    counterexample: tuple[str, ...]


#: Verdicts that say the check ran.
CHECKED = ("pass", "fail")


@attrs.frozen
class Verdict:
    requirement: Requirement
    verdict: str
    reason: str = ""
    failure: Failure | None = None
    known_deviation: bool = False
    #: The known-deviations entry that accepted the failure (None: not accepted, or accepted from a plain
    #: set of IDs, as the Python API takes).
    deviation: KnownDeviation | None = None
    level: str = "balloon"  # the machine that gave it: balloon, virtqueue, or both ("balloon+virtqueue")
    missing: tuple[Capability, ...] = ()  # skipped: the capabilities the implementation lacks for the check

    @property
    def accepted_by(self) -> str:
        """For a failure a known deviation accepted: ``known deviation`` and, when known, the list entry
        that accepted it (``known deviation, qemu line 12 (qemu>10.0)``); else empty."""
        if not self.known_deviation:
            return ""
        return "known deviation" + (f", {self.deviation.cite()}" if self.deviation else "")

    @property
    def checkable(self) -> bool:
        """Applicable to the features in play and checkable per the catalogue (whether or not checked)."""
        return self.verdict in (*CHECKED, "skipped")


@attrs.frozen
class RunResult:
    implementation: Implementation
    profile: str
    verdicts: tuple[Verdict, ...]
    errors: tuple[RunError, ...]
    seconds: float
    searches: int
    observations: dict[str, tuple[str, ...]] = attrs.Factory(dict)
    levels: tuple[str, ...] = ("balloon",)  # the machines whose verdicts this holds
    seed: int | None = None  # forced Hypothesis seed, if any
    #: The run was stopped (SIGINT, SIGTERM) before its search ended: the verdicts are those reached.
    interrupted: bool = False
    proposals: tuple[str, ...] = ()  # the proposal profiles judged besides virtio 1.4 (--proposal)

    @property
    def failed(self) -> bool:
        hard = [e for e in self.errors if e.kind != "nondeterministic"]
        return bool(hard) or any(v.verdict == "fail" and not v.known_deviation for v in self.verdicts)

    def by_id(self) -> dict[str, Verdict]:
        return {v.requirement.id: v for v in self.verdicts}

    @property
    def completeness(self) -> tuple[int, int]:
        """(checked, checkable): requirements with a pass or fail verdict, of those applicable to the
        features in play and checkable per the catalogue."""
        return (sum(v.verdict in CHECKED for v in self.verdicts), sum(v.checkable for v in self.verdicts))


def _header(cls: type, tolerated: frozenset[str]) -> list[str]:
    """The script's opening: the machine class for the implementation, as this run had it."""
    impl = cls.implementation  # type: ignore[attr-defined]
    args = [repr(impl.name), repr(impl.role)]
    if ring_of(impl) is not None:
        args.append("level='virtqueue'")
    if ring_of(impl) == "packed" or impl.ring == "packed":
        args.append("ring='packed'")
    for dut, arg, attr in (("qemu", "qemu_binary", "binary"), ("linux", "uml_binary", "uml")):
        if impl.name == dut and getattr(impl.factory, attr, None):
            args.append(f"{arg}={getattr(impl.factory, attr)!r}")
    name = cls.__name__
    impl_expr = f"resolve({', '.join(args)})"
    if impl.proposals:  # the profiles the run selected (a proposal mutant's own are kept by with_proposals)
        impl_expr = f"with_proposals({impl_expr}, {impl.proposals!r})"
    lines = ["from conformance.checks import Recorder",
             "from conformance.registry import machine_for, resolve, with_proposals",
             "from refmodel.virtio.features import Feature",
             f"{name} = machine_for({impl_expr})"]
    # A fresh recorder (the class is shared by every script run in one process), tolerating what the search
    # that found this failure tolerated: the script then goes past those, to this failure.
    if tolerated:
        lines.append(f"{name}.recorder = Recorder(tolerated=frozenset({sorted(tolerated)!r}))"
                     "  # found earlier in this run (or known deviations): tolerated, as in the search")
    else:
        lines.append(f"{name}.recorder = Recorder()")
    if cls.timeout != ConformanceMachine.timeout:  # type: ignore[attr-defined]
        lines.append(f"{name}.timeout = {cls.timeout!r}")  # type: ignore[attr-defined]
    return [*lines, ""]


def _steps(exc: BaseException, cls: type) -> list[str]:
    """Hypothesis' shrunk steps: every call but ``state = ...``, the invariants and the teardown. One
    Hypothesis note is one call, however many lines its arguments take."""
    setup = cls.setup_state()  # type: ignore[attr-defined]
    invariants = {f"state.{i.function.__name__}()" for i in setup.invariants}
    return [entry for entry in map(str, getattr(exc, "__notes__", ()))
            if entry.startswith("state.") and entry not in invariants and entry != "state.teardown()"]


def _hypothesis_script(exc: BaseException, cls: type) -> list[str]:
    """The script as Hypothesis printed it: its notes become comments."""
    out = []
    for entry in map(str, getattr(exc, "__notes__", ())):
        code = entry.startswith(("state", cls.__name__, "#"))
        out += entry.splitlines() if code else [f"# {line}" for line in entry.splitlines()]
    return out


_NOT_A_REPLAY = RuntimeError("the step does not apply here")  # a candidate Hypothesis could not have run


def _key(e: BaseException | None) -> tuple[Any, ...] | None:
    """What a replay must raise to reproduce ``e``: its type and the requirement or call it names."""
    if e is None or e is _NOT_A_REPLAY:
        return None
    return type(e), getattr(e, "req_id", None), getattr(e, "call", None)


def _replay(cls: type, steps: list[str],
            tolerated: frozenset[str]) -> tuple[BaseException | None, list[str]]:
    """Run ``steps`` in this process as the printed script would, checking each rule's preconditions (a
    shortened script must stay one Hypothesis could have run); returns what it raised and the script
    (with the notes this run made, in Hypothesis' order)."""
    setup = cls.setup_state()  # type: ignore[attr-defined]
    rules = {r.function.__name__: r for r in setup.rules}
    inits = {r.function.__name__: r for r in setup.initializers}
    pending = set(inits)
    lines = [f"state = {cls.__name__}()"]
    ns: dict[str, Any] = {cls.__name__: cls, "Feature": Feature}

    def execute(code: str, notes_first: bool) -> BaseException | None:
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, "<counterexample>", "exec"), ns)  # noqa: S102 - the suite's own script
            err = None
        except Exception as e:  # noqa: BLE001 - what the step raised is the outcome
            err = e
        printed = [ln if ln.startswith("#") else f"# {ln}" for ln in out.getvalue().splitlines()]
        lines.extend([*printed, code] if notes_first else [code, *printed])
        return err

    def invariants() -> BaseException | None:
        for inv in setup.invariants:
            if (not pending or inv.check_during_init) and all(p(ns["state"]) for p in inv.preconditions):
                if (err := execute(f"state.{inv.function.__name__}()", notes_first=False)) is not None:
                    return err
        return None

    saved = cls.recorder  # type: ignore[attr-defined]
    cls.recorder = Recorder(tolerated=tolerated)  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            ns["state"] = cls()
        if (err := invariants()) is not None:
            return err, lines
        for call in steps:
            name = call[len("state."):].split("(", 1)[0]
            if name in inits:
                if name not in pending:
                    return _NOT_A_REPLAY, lines
                pending.discard(name)
            elif pending or name not in rules or not all(p(ns["state"]) for p in rules[name].preconditions):
                return _NOT_A_REPLAY, lines
            if (err := execute(call, notes_first=True)) is not None or (err := invariants()) is not None:
                return err, lines
        return None, lines
    finally:
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            if "state" in ns:
                ns["state"].teardown()
        cls.recorder = saved  # type: ignore[attr-defined]


def counterexample(exc: BaseException, cls: type, tolerated: frozenset[str], seconds: float,
                   reproducible: bool = True) -> tuple[str, ...]:
    """The failure's steps as a script that runs as is and raises what ``exc`` is.

    The runner replays Hypothesis' shrunk steps itself, then drops each step whose absence still gives
    the same failure (a step that did nothing for it: a skipped step, an empty ``add``, ...); the script
    is the last replay that reproduced it, with the notes that replay made. A failure that does not
    replay (an asynchronous implementation) keeps Hypothesis' script and says so.
    """
    head = _header(cls, tolerated)
    steps = _steps(exc, cls)
    want = _key(exc)
    got, lines = _replay(cls, steps, tolerated) if reproducible and steps else (None, [])
    if want is None or _key(got) != want:
        why = "nondeterministic" if reproducible else "Hypothesis could not replay it either"
        return (*head, *_hypothesis_script(exc, cls),
                f"# (the runner's own replay of these steps did not fail the same way: {why})")
    stop = time.monotonic() + seconds
    i = len(steps) - 1
    while i >= 0 and time.monotonic() < stop:
        shorter = steps[:i] + steps[i + 1:]
        got, again = _replay(cls, shorter, tolerated)
        if _key(got) == want:
            steps, lines = shorter, again
        i -= 1
    return (*head, *lines, "state.teardown()")


def _root(exc: BaseException) -> tuple[BaseException, bool]:
    """The exception to report. A group (Hypothesis' FlakyFailure: the failure did not replay, as
    happens with an asynchronous VMM) is unwrapped to its most telling member."""
    if isinstance(exc, BaseExceptionGroup):
        members = list(exc.exceptions)
        for kind in (PeerSpecViolation, ImplementationError):
            for m in members:
                if isinstance(m, kind):
                    return m, True
        return (members[0] if members else exc), True
    return exc, False


#: Seconds a factory gets to build one instance (a VMM starts its process on the first call).
BUILD_TIMEOUT = 60.0


def _build(impl: Implementation) -> tuple[Any, str] | None:
    """One instance built with the arguments the machine's boot passes, and its level; None for an
    implementation with a machine of its own (a real guest, which boots per example)."""
    factory = impl.factory
    if ring_of(impl) is not None:
        kwargs: dict[str, Any] = {"event_idx": False, "indirect_desc": False, "start_idx": 0}
        if impl.role == "driver":
            kwargs["indirect_arena"] = IndirectArena(*virtq_base.ARENA)
        addrs = place(virtq_base.RING, 8) if ring_of(impl) == "packed" else \
            QueueAddresses.packed_at(virtq_base.RING, 8)
        return factory(GuestMemory(virtq_base.MEM), addrs, 8, **kwargs), "virtqueue"
    if impl.machine is not None:
        return None
    if impl.role == "driver":
        return factory(), "balloon"
    return make_device(factory)[0], "balloon"


def check_interface(impl: Implementation, timeout: float | None = None) -> RunError | None:
    """Raise :class:`InterfaceError` (one line, naming ``--dut``) if the implementation lacks a method of
    its role or of a capability it declares. A factory that raises or hangs is returned as the run's one
    error: every example would meet it at boot."""
    return _interface(impl, timeout)[0]


def _interface(impl: Implementation,
               timeout: float | None) -> tuple[RunError | None, frozenset[Capability] | None]:
    """:func:`check_interface`, and the capabilities the built instance declares (None: not built here)."""
    try:
        with deadline(max(BUILD_TIMEOUT, timeout or 0), f"{impl.role} factory"):
            built = _build(impl)
        if built is None:
            return None, None
        if built[1] == "virtqueue" and impl.role == "driver":
            return None, queue_capabilities(built[0])  # as the machine reads them
        return None, check_implementation(built[0], ROLE_PROTOCOLS[impl.role, built[1]], impl.role)
    except InterfaceError as e:
        raise InterfaceError(f"--dut {impl.name}: {e}") from None
    except ImplementationError as e:
        return RunError("implementation", f"building the {impl.role}: {e.what}", ()), None
    except Exception as e:  # noqa: BLE001 - the implementation's own code
        return RunError("implementation", f"building the {impl.role} raised {type(e).__name__}: {e}",
                        ()), None


def search(impl: Implementation, profile_name: str, *, known_deviations: frozenset[str] = frozenset(),
           max_failures: int = 8, progress: Callable[[str], None] = lambda s: None,
           timeout: float | None = None, seed: int | None = None,
           ) -> tuple[dict[str, Failure], list[RunError], Recorder, int]:
    """Search for failures; returns them, errors, what was exercised, and the number of searches.
    ``seed`` forces Hypothesis' seed (and turns derandomization off)."""
    cls = machine_for(impl)
    if timeout is not None:
        cls.timeout = timeout
    settings = profile(profile_name, seed)
    scaled = getattr(impl.factory, "profiles", {}).get(profile_name)
    if scaled:  # a slow implementation (a booted guest per example) runs fewer, shorter examples
        settings = type(settings)(settings, **scaled)
    failures: dict[str, Failure] = {}
    errors: list[RunError] = []
    total = Recorder()
    tolerated = set(known_deviations)
    searches = 0
    budget = float(SHRINK_SECONDS.get(profile_name, 20))  # for shortening each printed counterexample
    try:
        while len(failures) <= max_failures:
            rec = Recorder(tolerated=frozenset(tolerated))
            cls.recorder = rec
            searches += 1
            progress(f"{impl.name} ({impl.role}): search {searches}, {profile_name} profile")
            try:
                # notes carry the trace; the constant pool is the suite's, not the implementation's
                with shrink_budget(profile_name), with_reporter(lambda _: None), pinned_constants(), \
                        forced_seed(seed):
                    run_state_machine_as_test(cls, settings=settings)
            except KeyboardInterrupt:
                raise
            except BaseException as raised:  # noqa: BLE001 - everything becomes a verdict or an error
                failure = _judge(raised, impl, cls, rec, budget, errors, progress)
                if failure is not None:
                    failures[failure.req_id] = failure
                    tolerated.add(failure.req_id)
                    continue
            finally:
                total.exercised |= rec.exercised
                total.features |= rec.features
                for topic, values in rec.observations.items():
                    total.narrow(topic, values)
                for k, v in rec.tolerated_seen.items():
                    total.tolerated_seen.setdefault(k, v)
            break
    except KeyboardInterrupt:  # in a search, or while a failure was replayed or shortened (not kept)
        total.interrupted = True
        progress("  STOPPED: interrupted; the verdicts reached so far stand")
    return failures, errors, total, searches


def _judge(raised: BaseException, impl: Implementation, cls: type, rec: Recorder, budget: float,
           errors: list[RunError], progress: Callable[[str], None]) -> Failure | None:
    """What a search's exception means: a failure of a requirement (returned), or an error (appended)."""
    e, flaky = _root(raised)

    def script() -> tuple[str, ...]:
        return counterexample(e, cls, rec.tolerated, budget, reproducible=not flaky and not isinstance(e, Flaky))

    suffix = " (did not happen again when Hypothesis replayed it: nondeterministic)" if flaky else ""
    if isinstance(e, PeerSpecViolation) and e.role != impl.role:
        # The implementation blamed our reference side for a rule that binds the other role.
        errors.append(RunError("implementation", f"the implementation raised {e.req_id} ({e.role} rule) "
                               f"against the reference {e.role}: {e.detail}{suffix}", script()))
        progress(f"  ERROR the implementation blamed the reference {e.role}: {e.req_id}")
    elif isinstance(e, PeerSpecViolation):
        progress(f"  FAIL {e.req_id}: {e.detail}{suffix}")
        return Failure(e.req_id, e.detail + suffix, script())
    elif isinstance(e, ImplementationError):
        errors.append(RunError("implementation", str(e) + suffix, script()))
        progress(f"  ERROR {e}{suffix}")
    elif isinstance(e, LocalSpecViolation):
        errors.append(RunError("harness", f"the reference side broke {e.req_id}: {e}", script()))
        progress(f"  HARNESS ERROR {e}")
    elif isinstance(e, InterfaceError):  # raised at boot: the same for every example
        raise InterfaceError(f"--dut {impl.name}: {e}") from None
    elif isinstance(e, Flaky):  # FlakyStrategyDefinition, FlakyReplay (a FlakyFailure is unwrapped)
        # The implementation behaved differently on replay (an asynchronous VMM): the search stops here,
        # the verdicts found so far stand, and the report says why it stopped.
        first = str(e).splitlines()[0] if str(e) else ""
        errors.append(RunError("nondeterministic", f"search stopped: {type(e).__name__}: {first}", script()))
        progress(f"  NOTE the implementation is nondeterministic; search stopped ({type(e).__name__})")
    else:
        errors.append(RunError("harness", f"{type(e).__name__}: {e}", script()))
        progress(f"  HARNESS ERROR {type(e).__name__}: {e}")
    return None


def _applicable(r: Requirement, features: int) -> bool:
    for name in r.features:
        try:
            bit = Feature[name].mask
        except KeyError:
            if name not in PROPOSAL_BITS:
                return False
            bit = PROPOSAL_BITS[name]
        if not features & bit:
            return False
    return True


def verdicts(role: str, failures: dict[str, Failure], rec: Recorder,
             known: frozenset[str] | Mapping[str, KnownDeviation | None],
             unobservable: dict[str, str] | None = None, scope: str = "",
             capabilities: frozenset[Capability] | None = None,
             proposals: tuple[str, ...] = ()) -> tuple[Verdict, ...]:
    """One verdict per requirement of ``role``. ``unobservable``: requirements the adapter's transport
    hides from the reference peer (with why); they are not-checkable for this implementation.
    ``capabilities``: what the implementation declares (None: unknown), so a skipped check names the
    capability it lacked. ``proposals``: the proposal profiles selected (``--proposal``), whose
    requirements are judged too (and the bit-collision rules, ``proposal-bits``). ``known``: the known
    deviations that apply, with the entry that accepts each (a mapping), or their IDs alone."""
    unobservable = unobservable or {}
    entries: Mapping[str, KnownDeviation | None] = known if isinstance(known, Mapping) else {}
    checks = DEVICE_CHECKS if role == "device" else DRIVER_CHECKS
    if proposals:
        checks = {**checks, **(PROPOSAL_DEVICE_CHECKS if role == "device" else PROPOSAL_DRIVER_CHECKS)}
    judged = ("virtio-1.4", *proposals, *(("proposal-bits",) if proposals else ()))
    level = "virtqueue" if scope else "balloon"
    out = []
    for r in catalogue().values():
        if r.role != role or r.profile not in judged:
            continue
        if scope and not r.id.startswith(scope):
            out.append(Verdict(r, "not-applicable", f"a virtqueue-level run checks {scope}* requirements only"))
        elif r.id in failures:
            out.append(Verdict(r, "fail", failures[r.id].detail, failures[r.id], r.id in known,
                               entries.get(r.id)))
        elif r.id in rec.tolerated_seen:
            out.append(Verdict(r, "fail", f"known deviation: {rec.tolerated_seen[r.id]}", None, True,
                               entries.get(r.id)))
        elif r.legacy:
            out.append(Verdict(r, "not-applicable", "transitional (legacy) interface: not modelled"))
        elif not r.checkable:
            out.append(Verdict(r, "not-checkable", r.reason))
        elif r.id in unobservable:
            out.append(Verdict(r, "not-checkable", f"with this adapter: {unobservable[r.id]}"))
        elif not _applicable(r, rec.features):
            out.append(Verdict(r, "not-applicable", f"needs {' + '.join(r.features)}, never in play"))
        elif r.id in rec.exercised:
            out.append(Verdict(r, "pass", checks.get(r.id, "")))
        elif r.id in checks:
            out.append(_skipped(r, checks[r.id], capabilities, bool(scope)))
        else:
            out.append(Verdict(r, "skipped", f"no check in this suite yet: {NOT_YET[r.id]}" if r.id in NOT_YET
                               else "no check in this suite yet"))
    return tuple(attrs.evolve(v, level=level) for v in out)


def _skipped(r: Requirement, check: str, capabilities: frozenset[Capability] | None,
             level_is_queue: bool) -> Verdict:
    """A check that never ran, naming the capabilities it needs that the implementation does not declare."""
    if r.id in VIRTQUEUE_ONLY and not level_is_queue:
        return Verdict(r, "skipped", f"checked by the virtqueue-level machine only ({check}): run --level "
                                     "virtqueue on the implementation's split virtqueue")
    if capabilities is None:  # not known (an implementation with a machine of its own)
        return Verdict(r, "skipped", f"check ({check}) never ran: the implementation lacks a capability it "
                                     "needs, or no example reached it")
    missing = tuple(c for c in capabilities_needed(r.id) if c not in capabilities)
    if not missing:
        return Verdict(r, "skipped", f"check ({check}) never ran: no example reached it")
    names = " and ".join(f"{c.name} ({CAPABILITY_PROTOCOLS[c].__name__})" for c in missing)
    return Verdict(r, "skipped", f"check ({check}) never ran: the implementation does not declare the "
                                 f"capability {names}", missing=missing)


def implementation_version(impl: Implementation) -> str:
    """What the report's ``versions`` says of ``impl``: its factory's ``version`` (QEMU's is known once it
    has started), else its description."""
    return getattr(impl.factory, "version", None) or impl.description


def run(impl: Implementation, profile_name: str = "ci", *, known_deviations: Iterable[str] = frozenset(),
        progress: Callable[[str], None] = lambda s: None, timeout: float | None = None,
        max_failures: int = 8, seed: int | None = None) -> RunResult:
    """Check the interface, then search. Raises :class:`InterfaceError` for a missing method, and
    :class:`ProfileError` for a profile or seed that cannot be used. ``known_deviations``: a parsed list
    (:class:`~conformance.known_deviations.KnownDeviations`; each entry applies only to the builds it names,
    judged by :func:`implementation_version` once the implementation is built), or IDs for every build."""
    profile(profile_name, seed)  # before building anything
    start = time.perf_counter()
    broken, capabilities = _interface(impl, timeout)
    version = implementation_version(impl)
    applied = resolve_known(known_deviations, version)
    if isinstance(known_deviations, KnownDeviations) and (idle := known_deviations.not_applying(version)):
        progress(f"  known deviations not applied to {version}: "
                 + ", ".join(f"{e.req_id} ({e.scope})" for e in idle))
    failures: dict[str, Failure]
    if broken is not None:
        progress(f"  ERROR {broken.detail}")
        failures, errors, rec, searches = {}, [broken], Recorder(), 0
    else:
        try:
            failures, errors, rec, searches = search(impl, profile_name, known_deviations=frozenset(applied),
                                                     progress=progress, timeout=timeout,
                                                     max_failures=max_failures, seed=seed)
        finally:  # a factory that keeps processes across examples (the C library's) lets them go
            close = getattr(impl.factory, "close", None)
            if callable(close):
                close()
    cls = machine_for(impl)
    scope = getattr(cls, "scope", "")
    judged = verdicts(impl.role, failures, rec, applied, unobservable=getattr(cls, "unobservable", None),
                      scope=scope, capabilities=capabilities, proposals=impl.proposals)
    judged = ring_scope(cls, judged)
    if rec.interrupted:  # a check not reached may only have been waiting for its example
        judged = tuple(attrs.evolve(v, reason=f"{v.reason} (the run was interrupted)") if v.verdict == "skipped"
                       else v for v in judged)
    return RunResult(impl, profile_name, judged,
                     tuple(errors),
                     time.perf_counter() - start, searches,
                     {k: tuple(sorted(v)) for k, v in sorted(rec.observations.items())},
                     levels=("virtqueue" if scope else "balloon",), seed=seed, interrupted=rec.interrupted,
                     proposals=impl.proposals)


#: Balloon-level implementations whose split virtqueues the suite also knows as a virtqueue-level
#: implementation: :func:`run_levels` runs both and merges the verdicts (the SPLIT-* checks that only
#: the virtqueue machines make then count for the balloon implementation too).
QUEUES_OF = {"reference": ("virtq-reference", "virtq-packed-reference")}


def run_levels(impl: Implementation, profile_name: str = "ci", **kwargs: Any) -> RunResult:
    """:func:`run`, merged (:func:`merge`) with a run of ``impl``'s own split virtqueues at the virtqueue
    level when the suite knows them (:data:`QUEUES_OF`)."""
    res = run(impl, profile_name, **kwargs)
    if impl.machine is not None:
        return res
    for name in QUEUES_OF.get(impl.name, ()):
        queues = BUILTIN.get((name, impl.role))
        if queues is None or res.interrupted:
            break
        if impl.ring == "packed" and ring_of(queues) != "packed":
            continue  # a packed run's split verdicts are not-applicable (ring_scope), whatever split queues do
        res = merge(res, run(queues, profile_name, **kwargs))
    return res


def merge(balloon: RunResult, queue: RunResult) -> RunResult:
    """One result from a balloon-level run and a virtqueue-level run of the same implementation's queues:
    per requirement, a failure at either level, else a pass at either, else the balloon level's verdict.
    Each verdict keeps the level it came from (both, when both levels passed it)."""
    theirs = queue.by_id()
    out = []
    for v in balloon.verdicts:
        w = theirs.get(v.requirement.id)
        if w is None or w.verdict not in CHECKED or v.verdict == "fail":
            out.append(v)
        elif v.verdict == "pass" and w.verdict == "pass":
            out.append(attrs.evolve(v, level=f"{v.level}+{w.level}"))
        else:
            out.append(w)
    name = queue.implementation.name
    errors = (*balloon.errors, *(attrs.evolve(e, detail=f"virtqueue level ({name}): {e.detail}")
                                 for e in queue.errors))
    observations = {**balloon.observations, **{f"virtqueue: {k}": v for k, v in queue.observations.items()}}
    return RunResult(balloon.implementation, balloon.profile, tuple(out), errors,
                     balloon.seconds + queue.seconds, balloon.searches + queue.searches, observations,
                     levels=tuple(dict.fromkeys((*balloon.levels, *queue.levels))), seed=balloon.seed,
                     interrupted=balloon.interrupted or queue.interrupted, proposals=balloon.proposals)
