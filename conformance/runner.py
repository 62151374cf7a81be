"""Run a conformance machine against one implementation and turn the outcome into verdicts.

A run is a series of Hypothesis searches. Each search that fails yields one shrunk counterexample
for one requirement; that requirement is then tolerated (the example ends quietly where it breaks
again) and the search goes on, so one run reports several distinct failures.

Before the first search the runner builds one instance, as the machine's boot does, and checks it
against its role's Protocol (:func:`check_interface`): a missing method is one :class:`InterfaceError`
line, not an error in every example.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from refmodel.errors import LocalSpecViolation, PeerSpecViolation
from refmodel.virtio.features import Feature
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.split.driver import IndirectArena
from refmodel.virtio.virtq import QueueAddresses
from spec.catalogue import Requirement, catalogue

from conformance.search import pinned_constants
from conformance.checks import DEVICE_CHECKS, DRIVER_CHECKS, Recorder
from conformance.harness import ImplementationError, deadline
from conformance.interface import ROLE_PROTOCOLS, InterfaceError, check_implementation
from conformance.machines.device.boot import make_device
from conformance.machines.virtq import DeviceQueueConformance, DriverQueueConformance, base as virtq_base
from conformance.profiles import profile, shrink_budget
from conformance.registry import Implementation, machine_for

VERDICTS = ("pass", "fail", "not-applicable", "not-checkable", "skipped")


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


@attrs.frozen
class Verdict:
    requirement: Requirement
    verdict: str
    reason: str = ""
    failure: Failure | None = None
    known_deviation: bool = False


@attrs.frozen
class RunResult:
    implementation: Implementation
    profile: str
    verdicts: tuple[Verdict, ...]
    errors: tuple[RunError, ...]
    seconds: float
    searches: int
    observations: dict[str, tuple[str, ...]] = attrs.Factory(dict)

    @property
    def failed(self) -> bool:
        hard = [e for e in self.errors if e.kind != "nondeterministic"]
        return bool(hard) or any(v.verdict == "fail" and not v.known_deviation for v in self.verdicts)

    def by_id(self) -> dict[str, Verdict]:
        return {v.requirement.id: v for v in self.verdicts}


def _notes(exc: BaseException, cls: type) -> tuple[str, ...]:
    """Hypothesis' shrunk steps as a script that runs as is; our own notes become comments."""
    impl = cls.implementation  # type: ignore[attr-defined]
    lines = ["from conformance.registry import machine_for, resolve", "from refmodel.virtio.features import Feature",
             f"{cls.__name__} = machine_for(resolve({impl.name!r}, {impl.role!r}))", ""]
    for note in getattr(exc, "__notes__", ()):
        for line in str(note).splitlines():
            code = line.startswith(("state", "    ", ")", "]", "}")) or line.startswith(cls.__name__)
            lines.append(line if code else f"# {line}")
    return tuple(lines)


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
    if impl.machine in (DeviceQueueConformance, DriverQueueConformance):
        kwargs: dict[str, Any] = {"event_idx": False, "indirect_desc": False, "start_idx": 0}
        if impl.role == "driver":
            kwargs["indirect_arena"] = IndirectArena(*virtq_base.ARENA)
        return factory(GuestMemory(virtq_base.MEM), QueueAddresses.packed_at(virtq_base.RING, 8), 8,
                       **kwargs), "virtqueue"
    if impl.machine is not None:
        return None
    if impl.role == "driver":
        return factory(), "balloon"
    return make_device(factory)[0], "balloon"


def check_interface(impl: Implementation, timeout: float | None = None) -> RunError | None:
    """Raise :class:`InterfaceError` (one line, naming ``--dut``) if the implementation lacks a method of
    its role or of a capability it declares. A factory that raises or hangs is returned as the run's one
    error: every example would meet it at boot."""
    try:
        with deadline(max(BUILD_TIMEOUT, timeout or 0), f"{impl.role} factory"):
            built = _build(impl)
        if built is not None:
            check_implementation(built[0], ROLE_PROTOCOLS[impl.role, built[1]], impl.role)
    except InterfaceError as e:
        raise InterfaceError(f"--dut {impl.name}: {e}") from None
    except ImplementationError as e:
        return RunError("implementation", f"building the {impl.role}: {e.what}", ())
    except Exception as e:  # noqa: BLE001 - the implementation's own code
        return RunError("implementation", f"building the {impl.role} raised {type(e).__name__}: {e}", ())
    return None


def search(impl: Implementation, profile_name: str, *, known_deviations: frozenset[str] = frozenset(),
           max_failures: int = 8, progress: Callable[[str], None] = lambda s: None,
           timeout: float | None = None) -> tuple[dict[str, Failure], list[RunError], Recorder, int]:
    """Search for failures; returns them, errors, what was exercised, and the number of searches."""
    cls = machine_for(impl)
    if timeout is not None:
        cls.timeout = timeout
    settings = profile(profile_name)
    scaled = getattr(impl.factory, "profiles", {}).get(profile_name)
    if scaled:  # a slow implementation (a booted guest per example) runs fewer, shorter examples
        settings = type(settings)(settings, **scaled)
    failures: dict[str, Failure] = {}
    errors: list[RunError] = []
    total = Recorder()
    tolerated = set(known_deviations)
    searches = 0
    while len(failures) <= max_failures:
        rec = Recorder(tolerated=frozenset(tolerated))
        cls.recorder = rec
        searches += 1
        progress(f"{impl.name} ({impl.role}): search {searches}, {profile_name} profile")
        try:
            # notes carry the trace; the constant pool is the suite's, not the implementation's
            with shrink_budget(profile_name), with_reporter(lambda _: None), pinned_constants():
                run_state_machine_as_test(cls, settings=settings)
        except BaseException as raised:  # noqa: BLE001 - everything becomes a verdict or an error
            if isinstance(raised, KeyboardInterrupt):
                raise
            e, flaky = _root(raised)
            suffix = " (did not happen again when Hypothesis replayed it: nondeterministic)" if flaky else ""
            if isinstance(e, PeerSpecViolation) and e.role != impl.role:
                # The implementation blamed our reference side for a rule that binds the other role.
                errors.append(RunError("implementation", f"the implementation raised {e.req_id} ({e.role} rule) "
                                       f"against the reference {e.role}: {e.detail}{suffix}", _notes(e, cls)))
                progress(f"  ERROR the implementation blamed the reference {e.role}: {e.req_id}")
            elif isinstance(e, PeerSpecViolation):
                failures[e.req_id] = Failure(e.req_id, e.detail + suffix, _notes(e, cls))
                tolerated.add(e.req_id)
                progress(f"  FAIL {e.req_id}: {e.detail}{suffix}")
                continue
            elif isinstance(e, ImplementationError):
                errors.append(RunError("implementation", str(e) + suffix, _notes(e, cls)))
                progress(f"  ERROR {e}{suffix}")
            elif isinstance(e, LocalSpecViolation):
                errors.append(RunError("harness", f"the reference side broke {e.req_id}: {e}", _notes(e, cls)))
                progress(f"  HARNESS ERROR {e}")
            elif isinstance(e, InterfaceError):  # raised at boot: the same for every example
                raise InterfaceError(f"--dut {impl.name}: {e}") from None
            elif isinstance(e, Flaky):  # FlakyStrategyDefinition, FlakyReplay (a FlakyFailure is unwrapped)
                # The implementation behaved differently on replay (an asynchronous VMM): the search stops
                # here, the verdicts found so far stand, and the report says why it stopped.
                errors.append(RunError("nondeterministic", f"search stopped: {type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''}", _notes(e, cls)))
                progress(f"  NOTE the implementation is nondeterministic; search stopped ({type(e).__name__})")
            else:
                errors.append(RunError("harness", f"{type(e).__name__}: {e}", _notes(e, cls)))
                progress(f"  HARNESS ERROR {type(e).__name__}: {e}")
        finally:
            total.exercised |= rec.exercised
            total.features |= rec.features
            for topic, values in rec.observations.items():
                total.narrow(topic, values)
            for k, v in rec.tolerated_seen.items():
                total.tolerated_seen.setdefault(k, v)
        break
    return failures, errors, total, searches


def _applicable(r: Requirement, features: int) -> bool:
    for name in r.features:
        try:
            bit = Feature[name].mask
        except KeyError:
            return False
        if not features & bit:
            return False
    return True


def verdicts(role: str, failures: dict[str, Failure], rec: Recorder, known: frozenset[str],
             unobservable: dict[str, str] | None = None, scope: str = "") -> tuple[Verdict, ...]:
    """One verdict per requirement of ``role``. ``unobservable``: requirements the adapter's transport
    hides from the reference peer (with why); they are not-checkable for this implementation."""
    unobservable = unobservable or {}
    checks = DEVICE_CHECKS if role == "device" else DRIVER_CHECKS
    out = []
    for r in catalogue().values():
        if r.role != role or r.profile != "virtio-1.4":
            continue
        if scope and not r.id.startswith(scope):
            out.append(Verdict(r, "not-applicable", f"a virtqueue-level run checks {scope}* requirements only"))
        elif r.id in failures:
            out.append(Verdict(r, "fail", failures[r.id].detail, failures[r.id], r.id in known))
        elif r.id in rec.tolerated_seen:
            out.append(Verdict(r, "fail", f"known deviation: {rec.tolerated_seen[r.id]}", None, True))
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
            out.append(Verdict(r, "skipped", f"check ({checks[r.id]}) never ran: the implementation lacks a "
                                             "capability it needs, or no example reached it"))
        else:
            out.append(Verdict(r, "skipped", "no check in this suite yet"))
    return tuple(out)


def run(impl: Implementation, profile_name: str = "ci", *, known_deviations: frozenset[str] = frozenset(),
        progress: Callable[[str], None] = lambda s: None, timeout: float | None = None,
        max_failures: int = 8) -> RunResult:
    """Check the interface, then search. Raises :class:`InterfaceError` for a missing method."""
    start = time.perf_counter()
    broken = check_interface(impl, timeout)
    failures: dict[str, Failure]
    if broken is not None:
        progress(f"  ERROR {broken.detail}")
        failures, errors, rec, searches = {}, [broken], Recorder(), 0
    else:
        failures, errors, rec, searches = search(impl, profile_name, known_deviations=known_deviations,
                                                 progress=progress, timeout=timeout,
                                                 max_failures=max_failures)
    cls = machine_for(impl)
    return RunResult(impl, profile_name, verdicts(impl.role, failures, rec, known_deviations,
                                                  unobservable=getattr(cls, "unobservable", None),
                                                  scope=getattr(cls, "scope", "")),
                     tuple(errors),
                     time.perf_counter() - start, searches,
                     {k: tuple(sorted(v)) for k, v in sorted(rec.observations.items())})
