"""The packed virtqueue machines have teeth: the reference packed queues pass both, on rings of sizes that
need not be powers of two and from positions just before a wrap, and every packed mutant is caught naming
the requirement it was built to break."""

import pytest

from conformance.checks import DEVICE_CHECKS, DRIVER_CHECKS, Recorder
from conformance.machines.virtq import PackedDeviceQueueConformance, PackedDriverQueueConformance
from conformance.registry import BUILTIN, machine_for, resolve, ring_of
from conformance.runner import run

PACKED_MUTANTS = sorted((n, r) for (n, r), impl in BUILTIN.items()
                        if impl.breaks and ring_of(impl) == "packed")


@pytest.mark.parametrize("role", ["device", "driver"])
def test_reference_packed_queue_passes_every_packed_check(role):
    res = run(resolve("reference", role, level="virtqueue", ring="packed"), "ci")
    assert res.levels == ("virtqueue",) and not res.errors, res.errors
    assert not [v for v in res.verdicts if v.verdict == "fail"]
    checks = {r for r, where in (DEVICE_CHECKS if role == "device" else DRIVER_CHECKS).items()
              if r.startswith("PACKED-") and where.startswith("virtqueue machine")}  # not the balloon level's
    passed = {v.requirement.id for v in res.verdicts if v.verdict == "pass"}
    assert passed == checks, (sorted(checks - passed), sorted(passed - checks))
    others = {v.verdict for v in res.verdicts if not v.requirement.id.startswith("PACKED-")}
    assert others == {"not-applicable"}  # a packed run checks PACKED-* only


def test_at_least_eight_packed_mutants_each_breaking_its_own_requirement():
    broken = [BUILTIN[key].breaks for key in PACKED_MUTANTS]
    assert len(broken) >= 8 and len(set(broken)) == len(broken)
    assert all(len(b) == 1 and b[0].startswith("PACKED-") for b in broken)


# Every ID a packed mutant breaks, literally (conformance.trace reads the marker from the source);
# test_the_marker_names_what_the_packed_mutants_break keeps it equal to the mutants' ``breaks``.
@pytest.mark.verifies(
    "PACKED-DEV-4", "PACKED-DEV-D2", "PACKED-DEV-D3", "PACKED-DEV-D4", "PACKED-DEV-D7", "PACKED-DEV-D9",
    "PACKED-DEV-D10", "PACKED-DEV-D11", "PACKED-DRV-12", "PACKED-DRV-D3", "PACKED-DRV-D8", "PACKED-DRV-D9",
    "PACKED-DRV-D10", "PACKED-DRV-D11", "PACKED-DRV-D12")
@pytest.mark.parametrize("name, role", [
    pytest.param(n, r, marks=pytest.mark.verifies(*BUILTIN[n, r].breaks), id=n) for n, r in PACKED_MUTANTS])
def test_packed_mutant_is_caught_naming_its_requirement(name, role):
    impl = BUILTIN[name, role]
    res = run(impl, "ci", max_failures=0)
    assert not res.errors, res.errors
    fails = [v for v in res.verdicts if v.verdict == "fail"]
    assert [v.requirement.id for v in fails] == list(impl.breaks), [(v.requirement.id, v.reason)
                                                                     for v in fails]
    assert any(line.startswith("state.setup(") for line in fails[0].failure.counterexample)


@pytest.mark.parametrize("machine, role", [(PackedDeviceQueueConformance, "device"),
                                           (PackedDriverQueueConformance, "driver")])
@pytest.mark.parametrize("qs, laps, back", [(3, 2, 1), (5, 1, 0), (7, 3, 3), (1, 2, 0)])
def test_many_wraps_from_just_before_one(machine, role, qs, laps, back):
    """A scripted run: twenty round trips on an odd-sized ring from ``back`` descriptors before a wrap, with
    mixed list lengths, indirect lists and out-of-order use: every check holds."""
    cls = machine_for(BUILTIN["virtq-packed-reference", role])
    assert issubclass(cls, machine)
    cls.recorder = rec = Recorder()
    state = cls()
    kwargs = {"quirks": True} if role == "driver" else {}
    state.setup(qs=qs, event_idx=True, indirect=True, laps=laps, back=back, **kwargs)
    for i in range(20):
        n_read, n_write = 1 + i % min(qs, 2), i % 2 if qs > 1 else 0
        state.add(n_read=n_read, n_write=n_write, indirect=i % 3 == 0, payload=bytes([i] * 7), cuts=[2],
                  **({"write_flag": i % 2 == 0} if role == "device" else {}))
        if i % 2:
            state.add(n_read=1, n_write=0, indirect=False, payload=b"x", cuts=[],
                      **({"write_flag": False} if role == "device" else {}))
        state.driver_suppress(enabled=i % 4 != 1)
        state.device_suppress(enabled=i % 5 != 2)
        state.round_trip(uses=[(i, 40), (0, 1)])
    start = max(0, laps * qs - back)
    end = state.used_pos if role == "device" else state.dev.next_used
    state.teardown()
    assert not state.ended and end - start > 2 * qs  # went round at least twice, every buffer back
    assert ("PACKED-DEV-D10" if role == "device" else "PACKED-DRV-D10") in rec.exercised


def test_the_marker_names_what_the_packed_mutants_break():
    from conformance.trace import verifying_tests

    node = "tests/virtio/test_packed_conformance.py::test_packed_mutant_is_caught_naming_its_requirement"
    claimed = {req_id for req_id, nodes in verifying_tests().items() if node in nodes}
    assert claimed == {req_id for key in PACKED_MUTANTS for req_id in BUILTIN[key].breaks}
