"""The locked semantics: reported pages stay with the device until it returns them. Nothing is lost
across migration, and with PAGE_POISON every reported free page holds poison_val on the destination.
The safe host passes; each unsafe reporting policy is caught with a short trace."""

import pytest
from hypothesis import HealthCheck, note, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, \
    run_state_machine_as_test

from refmodel.system.guest import bits
from refmodel.system.migration import SAFE, UNSAFE_REPORTING_POLICIES, HostPolicy
from refmodel.system.scenario import ReportingSystem
from conformance.search import pinned_constants


class ReportingNothingLost(RuleBasedStateMachine):
    policy: HostPolicy = SAFE

    @initialize(n_in_use=st.integers(0, 6), poison=st.booleans())
    def boot(self, n_in_use, poison):
        self.sys = ReportingSystem(12, self.policy, poison=poison)
        for _ in range(n_in_use):
            self.sys.alloc_write()
        self.sys.migration_start()
        note(f"policy {self.policy.unsafe or 'safe'}; PAGE_POISON {poison}; {n_in_use} pages in use; migrating")

    def _workload(self):
        return self.sys.guest.allocated & ((1 << self.sys.n_pages) - 1)

    @precondition(lambda self: self._workload().bit_count() < self.sys.n_pages - 2)
    @rule()
    def alloc_write(self):
        self.sys.alloc_write()
        note(self.sys.trace[-1])

    @precondition(lambda self: self._workload())
    @rule(data=st.data())
    def free(self, data):
        self.sys.free(data.draw(st.sampled_from(bits(self._workload()))))
        note(self.sys.trace[-1])

    @rule(count=st.integers(1, 3))
    def driver_report(self, count):
        self.sys.driver_report(count)
        note(self.sys.trace[-1])

    @rule()
    def device_process(self):
        self.sys.device_process()
        note(self.sys.trace[-1])

    @rule()
    def driver_reap(self):
        self.sys.driver_reap()
        note(self.sys.trace[-1])

    @precondition(lambda self: self.sys.migrating)
    @rule()
    def migration_sync(self):
        self.sys.migration_sync()
        note(self.sys.trace[-1])

    @precondition(lambda self: self.sys.migrating)
    @rule(budget=st.integers(1, 6))
    def migration_send(self, budget):
        self.sys.migration_send(budget)
        note(self.sys.trace[-1])

    @invariant()
    def source_intact(self):
        bad = self.sys.guest.corrupted()
        assert not bad, f"the device changed in-use pages {bad} on the source"

    def teardown(self):
        if hasattr(self, "sys") and self.sys.migrating:
            self.sys.device_process()  # anything still queued is handled before the guest stops
            self.sys.driver_reap()
            out = self.sys.switchover()
            note(self.sys.trace[-1] + " (end of run)")
            assert not out.lost, f"pages {out.lost} arrived with the wrong contents on the destination"
            assert not self.sys.lost_poison(), f"reported pages {self.sys.lost_poison()} lost poison_val"


ReportingNothingLost.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None,
                                                  suppress_health_check=list(HealthCheck))
TestSafeReportingHost = ReportingNothingLost.TestCase


@pytest.mark.verifies("BAL-FPR-DEV-D1", "BAL-FPR-DEV-2")
@pytest.mark.parametrize("name", sorted(UNSAFE_REPORTING_POLICIES))
def test_unsafe_reporting_policy_is_caught_with_a_short_trace(name):
    machine = type(f"{name.title().replace('_', '')}Host", (ReportingNothingLost,),
                   {"policy": UNSAFE_REPORTING_POLICIES[name]})
    with pytest.raises(AssertionError) as exc, pinned_constants():  # as test_hinting_invariant
        run_state_machine_as_test(machine, settings=settings(
            max_examples=2000, stateful_step_count=20, deadline=None, database=None,
            suppress_health_check=list(HealthCheck), derandomize=True, report_multiple_bugs=False))
    steps = [n for n in exc.value.__notes__ if n.startswith("state.")
             and not n.startswith(("state.source_intact", "state.teardown"))]
    assert 0 < len(steps) <= 16, "\n".join(exc.value.__notes__)


def test_discard_after_ack_trace():
    """The shrunk history, kept as a regression: the guest reuses a page the device drops later."""
    s = ReportingSystem(4, UNSAFE_REPORTING_POLICIES["discard_after_ack"], poison=False)
    s.migration_start()
    s.driver_report(1)      # page 0 reported
    s.device_process()      # returned at once; its contents are dropped only on the next pass
    s.driver_reap()         # page 0 free again
    for _ in range(4):
        s.alloc_write()     # the guest takes page 0 and writes it
    s.device_process()      # ...and the late discard zeroes it
    assert s.guest.corrupted() == [0]
    safe = ReportingSystem(4, SAFE, poison=False)
    safe.migration_start()
    for step in ("driver_report", "device_process", "driver_reap"):
        getattr(safe, step)(*((1,) if step == "driver_report" else ()))
    for _ in range(4):
        safe.alloc_write()
    safe.device_process()
    assert safe.guest.corrupted() == [] and safe.switchover().lost == ()
