"""The 2016 seed protocol: the unordered host loses data on a short trace that Hypothesis finds; the
ordered host (SEED-DEV-1, SEED-DEV-2) loses nothing on the same steps; garbage replies name their rule.
"""

import pytest
from hypothesis import HealthCheck, note, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from refmodel.errors import BrokenSide, LocalSpecViolation, PeerSpecViolation
from refmodel.system.guest import bits
from refmodel.system.scenario import SeedSystem
from conformance.search import pinned_constants


def stale_bitmap(s):
    """The bitmap says page 0 is free; the guest writes it; a sync; then the host applies the bitmap."""
    s.migration_start()
    s.host_request()
    s.driver_reply()          # page 0 is free now and set in the bitmap
    s.alloc_write()           # the guest takes page 0 and writes it: dirty
    s.migration_sync()        # page 0 moves to to_send
    s.device_process()        # the bitmap arrives and clears page 0 again
    return s.switchover()


@pytest.mark.verifies("SEED-DEV-1")
def test_unordered_host_loses_the_page():
    s = SeedSystem(8, ordered=False)
    assert stale_bitmap(s).lost == (0,), "\n".join(s.trace)


@pytest.mark.verifies("SEED-DEV-1")
def test_ordered_host_drops_the_stale_bitmap():
    s = SeedSystem(8, ordered=True)
    out = stale_bitmap(s)
    assert out.lost == () and s.device.dropped == 1, "\n".join(s.trace)


@pytest.mark.verifies("SEED-DEV-1")
def test_ordered_host_still_saves_pages():
    s = SeedSystem(16, ordered=True)
    s.alloc_write()
    s.migration_start()
    s.host_request()
    s.driver_reply()
    s.device_process()
    out = s.switchover()
    assert out.lost == () and s.device.applied == 1
    assert out.pages_sent <= 1 + 4 + 1, out  # the used page, the 4 ring pages; not the 15 free pages


class SeedNothingLost(RuleBasedStateMachine):
    ordered = True

    @initialize(n_in_use=st.integers(0, 4))
    def boot(self, n_in_use):
        self.sys = SeedSystem(8, ordered=self.ordered)
        for _ in range(n_in_use):
            self.sys.alloc_write()
        self.sys.migration_start()
        note(f"{'ordered' if self.ordered else 'unordered'} host; {n_in_use} pages in use; migration started")

    def _workload(self):
        return self.sys.guest.allocated & ((1 << self.sys.n_pages) - 1)

    @precondition(lambda self: self._workload().bit_count() < self.sys.n_pages // 2)
    @rule()
    def alloc_write(self):
        self.sys.alloc_write()
        note(self.sys.trace[-1])

    @precondition(lambda self: self._workload())
    @rule(data=st.data())
    def free(self, data):
        self.sys.free(data.draw(st.sampled_from(bits(self._workload()))))
        note(self.sys.trace[-1])

    @precondition(lambda self: self.sys.can_request)
    @rule()
    def host_request(self):
        self.sys.host_request()
        note(self.sys.trace[-1])

    @rule()
    def driver_reply(self):
        self.sys.driver_reply()
        note(self.sys.trace[-1])

    @rule()
    def device_process(self):
        self.sys.device_process()
        note(self.sys.trace[-1])

    @precondition(lambda self: self.sys.migrating)
    @rule()
    def migration_sync(self):
        self.sys.migration_sync()
        note(self.sys.trace[-1])

    def teardown(self):
        if hasattr(self, "sys") and self.sys.migrating:
            out = self.sys.switchover()
            note(self.sys.trace[-1])
            assert not out.lost, f"pages {out.lost} arrived with the wrong contents on the destination"


SeedNothingLost.TestCase.settings = settings(max_examples=100, stateful_step_count=20, deadline=None,
                                             suppress_health_check=list(HealthCheck))
TestOrderedSeedHost = SeedNothingLost.TestCase


@pytest.mark.verifies("SEED-DEV-1")
def test_unordered_seed_host_is_caught_with_a_short_trace():
    machine = type("UnorderedSeedHost", (SeedNothingLost,), {"ordered": False})
    with pytest.raises(AssertionError) as exc, pinned_constants():  # as test_hinting_invariant
        run_state_machine_as_test(machine, settings=settings(
            max_examples=4000, stateful_step_count=12, deadline=None, database=None,
            suppress_health_check=list(HealthCheck), derandomize=True))
    steps = [n for n in exc.value.__notes__ if n.startswith("state.") and not n.startswith("state.teardown")]
    assert 0 < len(steps) <= 8, "\n".join(exc.value.__notes__)


def _reply(s, payload):
    """Replace the driver's reply with ``payload`` as one out-buffer."""
    s.migration_start()
    s.host_request()
    s.vq_drv.harvest()
    s.mem.write(s.scratch + 64, payload)
    s.vq_drv.add([(s.scratch + 64, len(payload))])
    s.vq_drv.publish()


@pytest.mark.verifies("SEED-DRV-1", "SEED-DRV-2")
@pytest.mark.parametrize("payload, req", [
    ((16).to_bytes(8, "little") + bytes(8), "SEED-DRV-1"),       # bmap_len says 16, 8 bytes follow
    ((4096).to_bytes(8, "little") + bytes(4096), "SEED-DRV-2"),  # a bitmap longer than guest memory
    (b"\x01\x02", "SEED-DRV-1"),                                 # no room for bmap_len
])
def test_garbage_reply_is_a_peer_violation(payload, req):
    s = SeedSystem(8, ordered=True)
    _reply(s, payload)
    with pytest.raises(PeerSpecViolation) as exc:
        s.device.process()
    assert exc.value.req_id == req


@pytest.mark.verifies("SEED-DRV-3")
def test_unsolicited_reply_is_a_peer_violation():
    s = SeedSystem(8, ordered=True)
    s.mem.write(s.scratch + 64, (8).to_bytes(8, "little") + bytes(8))
    s.vq_drv.add([(s.scratch + 64, 16)])
    s.vq_drv.publish()
    with pytest.raises(PeerSpecViolation) as exc:
        s.device.process()
    assert exc.value.req_id == "SEED-DRV-3"


@pytest.mark.verifies("SEED-DEV-2")
def test_ordered_host_keeps_one_request_outstanding():
    """A reply carries nothing that pairs it with a request, so the ordered host never asks twice."""
    s = SeedSystem(8, ordered=True)
    s.migration_start()
    s.host_request()
    with pytest.raises(LocalSpecViolation) as exc:
        s.device.request()
    assert exc.value.req_id == "SEED-DEV-2"
    with pytest.raises(BrokenSide):  # a side that broke the protocol stays broken
        s.device.request()
    fresh = SeedSystem(8, ordered=True)
    fresh.migration_start()
    assert fresh.host_request() and fresh.driver_reply() and fresh.device_process() == 1
    assert fresh.host_request()  # answered: the next request is allowed
