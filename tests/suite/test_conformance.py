"""The conformance suite has teeth: the reference implementations pass, every mutant fails with the
requirement it was built to break, and each counterexample replays as plain Python."""

import subprocess
import sys

import pytest

from conformance.checks import DEVICE_CHECKS, DRIVER_CHECKS, NOT_YET, VIRTQUEUE_ONLY
from conformance.registry import BUILTIN, ring_of
from conformance.runner import VERDICTS, run
from spec.catalogue import catalogue
from suite_mutant_runs import first_failure_run, reference_ci_run

#: The packed ring's mutants have their own test (tests/virtio/test_packed_conformance.py).
#: The proposal profiles' mutants too (tests/suite/test_proposal_profiles.py, each under its profile).
MUTANTS = sorted((n, r) for (n, r), impl in BUILTIN.items()
                 if impl.breaks and ring_of(impl) != "packed" and not impl.proposals)


@pytest.mark.parametrize("role", ["device", "driver"])
def test_reference_passes_everything_it_checks(role):
    res = reference_ci_run(role)  # run_levels at ci: the balloon level, merged with its split queues' run
    assert res.levels == ("balloon", "virtqueue")  # the split ring's run and the packed ring's
    assert not res.errors, res.errors
    fails = [v for v in res.verdicts if v.verdict == "fail"]
    assert not fails, fails
    by_id = res.by_id()
    passed = {i for i, v in by_id.items() if v.verdict == "pass"}
    checks = DEVICE_CHECKS if role == "device" else DRIVER_CHECKS
    # Almost every check in the table ran; the rest say why they were skipped.
    assert len(passed) >= 0.9 * len(checks), sorted(set(checks) - passed)
    # A check the tables do not list passes with no detail and hides behind a stale NOT_YET reason.
    unlisted = sorted(i for i in passed if not by_id[i].reason)
    assert not unlisted, f"checked but in no check table: {unlisted}"
    queue_only = {i for i in VIRTQUEUE_ONLY if i in checks}
    assert queue_only and {i: by_id[i].level for i in queue_only} == {i: "virtqueue" for i in queue_only}
    assert {v.verdict for v in res.verdicts} <= set(VERDICTS)
    assert len(res.verdicts) == sum(1 for r in catalogue().values() if r.role == role and r.profile == "virtio-1.4")


def test_at_least_twenty_mutants_break_different_requirements():
    # Different per level: a virtqueue-level mutant may break a rule a balloon-level one also breaks.
    broken = {(impl.machine, impl.breaks) for (n, r), impl in BUILTIN.items() if (n, r) in MUTANTS}
    assert len(MUTANTS) >= 20 and len(broken) == len(MUTANTS)


# Every ID some mutant breaks, literally: conformance.trace reads @pytest.mark.verifies from the source, and
# test_the_mutant_test_verifies_what_the_mutants_break keeps the list equal to the mutants' ``breaks``.
# Each parametrized case also carries its own mutant's IDs (for the test report's properties).
@pytest.mark.verifies(
    "STATUS-DRV-3", "STATUS-DEV-1", "STATUS-DEV-2", "STATUS-DEV-3", "FEAT-DRV-1", "FEAT-DEV-2",
    "FEAT-DEV-3", "RESET-DEV-1", "RESET-DRV-1", "CFG-DEV-2", "SPLIT-DEV-1", "SPLIT-DRV-3", "SPLIT-DEV-3",
    "SPLIT-DRV-4", "SPLIT-DEV-6", "SPLIT-DEV-9", "SPLIT-DEV-10", "SPLIT-DEV-11", "SPLIT-DEV-12",
    "SPLIT-DEV-13", "SPLIT-DEV-14", "SPLIT-DEV-15", "SPLIT-DRV-18", "SPLIT-DRV-20", "SPLIT-DRV-21",
    "SPLIT-DRV-24", "SPLIT-DEV-D1", "SPLIT-DEV-D2", "SPLIT-DEV-D4", "INIT-DRV-4", "INIT-DRV-5",
    "INIT-DRV-6", "NOTIFY-DEV-D1", "BAL-FB-DRV-3", "BAL-CFG-D2", "BAL-OP-DRV-6", "BAL-OP-DRV-7",
    "BAL-OP-DRV-9", "BAL-OP-DRV-11", "BAL-OP-DEV-D1", "BAL-ST-DRV-1", "BAL-ST-DRV-5", "BAL-ST-DEV-1",
    "BAL-FPH-DRV-1", "BAL-FPH-DRV-3", "BAL-FPH-DRV-4", "BAL-FPH-DRV-5", "BAL-FPH-DRV-6", "BAL-FPH-DRV-9",
    "BAL-FPH-DRV-10", "BAL-FPH-DEV-2", "BAL-FPH-DEV-3", "BAL-FPH-DEV-5", "BAL-FPH-DEV-6", "BAL-FPH-D1",
    "BAL-FPH-D3", "BAL-FPH-D4", "BAL-PP-DRV-2", "BAL-FPR-DRV-2", "BAL-FPR-DRV-3", "BAL-FPR-DEV-2", "BAL-FPR-DEV-D1",
    "PACKED-DEV-D13")
@pytest.mark.parametrize("name, role", [
    pytest.param(n, r, marks=pytest.mark.verifies(*BUILTIN[n, r].breaks), id=n) for n, r in MUTANTS])
def test_mutant_is_caught_naming_its_requirement(name, role):
    impl = BUILTIN[name, role]
    res = first_failure_run(name, role)
    assert not res.errors, res.errors
    fails = [v for v in res.verdicts if v.verdict == "fail"]
    assert fails, f"{name} passed the suite"
    assert {v.requirement.id for v in fails} <= set(impl.breaks), [(v.requirement.id, v.reason) for v in fails]
    trace = fails[0].failure.counterexample
    assert any(line.startswith("state = ") for line in trace) and any("state." in line for line in trace[3:])


def test_the_mutant_test_verifies_what_the_mutants_break():
    from conformance.trace import verifying_tests

    node = "tests/suite/test_conformance.py::test_mutant_is_caught_naming_its_requirement"
    claimed = {req_id for req_id, nodes in verifying_tests().items() if node in nodes}
    broken = {req_id for key in MUTANTS for req_id in BUILTIN[key].breaks}
    assert claimed == broken, (f"add to its verifies marker: {sorted(broken - claimed)}; "
                               f"no mutant breaks: {sorted(claimed - broken)}")


def test_counterexample_replays_as_is(tmp_path):
    impl = BUILTIN["mutant-stale-actual", "driver"]
    res = run(impl, "ci", max_failures=0)
    script = tmp_path / "repro.py"
    script.write_text("\n".join(next(v for v in res.verdicts if v.failure).failure.counterexample) + "\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "BAL-OP-DRV-11" in out.stderr, out.stderr[-2000:]


def test_every_checkable_requirement_has_a_check_or_a_reason():
    for r in catalogue().values():
        if r.profile != "virtio-1.4" or not r.checkable or r.legacy:
            continue
        table = DEVICE_CHECKS if r.role == "device" else DRIVER_CHECKS
        assert r.id in table or r.id in NOT_YET, f"{r.id}: no check and no stated reason"


def test_check_tables_name_known_requirements_of_the_right_role():
    cat = catalogue()
    for table, role in ((DEVICE_CHECKS, "device"), (DRIVER_CHECKS, "driver")):
        for req_id in table:
            assert cat[req_id].role == role and cat[req_id].checkable, req_id
    for req_id, why in NOT_YET.items():
        assert req_id in cat and why and req_id not in DEVICE_CHECKS and req_id not in DRIVER_CHECKS, req_id


def _reads_ended(fn, cls, seen=None) -> bool:
    """Whether ``fn``, or a method or module function it names, reads ``ended``."""
    seen = set() if seen is None else seen
    code = getattr(fn, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    if "ended" in code.co_names or "live" in code.co_names:
        return True
    for name in code.co_names:
        target = getattr(cls, name, None) or getattr(fn, "__globals__", {}).get(name)
        if callable(target) and _reads_ended(target, cls, seen):
            return True
    return any(_reads_ended(c.cell_contents, cls, seen) for c in getattr(fn, "__closure__", None) or ()
               if callable(c.cell_contents))


def test_every_rule_skips_once_the_example_ended_and_no_precondition_reads_ended():
    """An asynchronous implementation meets a known deviation at timing-dependent steps. If preconditions
    read ``ended``, the rules Hypothesis may choose differ between a run and its replay, and it stops the
    search (FlakyStrategyDefinition); so every rule is a ``step``, which skips its body instead."""
    from conformance.machines.base import STEP_MARKER
    from conformance.machines.device import DeviceConformance
    from conformance.machines.driver import DriverConformance
    from conformance.machines.virtq import DeviceQueueConformance, DriverQueueConformance
    from conformance.adapters.linux.machine import LinuxDriverConformance

    for cls in (DeviceConformance, DriverConformance, LinuxDriverConformance, DeviceQueueConformance,
                DriverQueueConformance):
        rules = cls.setup_state().rules
        assert rules
        for r in rules:
            if r.function.__name__ != "idle":
                assert hasattr(r.function, STEP_MARKER), f"{cls.__name__}.{r.function.__name__} is not a step"
            for pred in r.preconditions:
                assert not _reads_ended(pred, cls), (cls.__name__, r.function.__name__)
