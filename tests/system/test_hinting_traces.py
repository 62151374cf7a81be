"""Counterexamples kept as regression traces: each unsafe host policy loses data (or pages) on its
trace, and the safe host, replaying the very same steps, loses nothing.

The traces are the shrunk histories the property tests print, written out as calls.
"""

import pytest

from refmodel.system.migration import SAFE, UNSAFE_POLICIES
from refmodel.system.scenario import HintingSystem


def stale_hint(s):
    """A hint queued in round 2 is processed after the sync that starts round 3."""
    s.migration_start()          # cmd id 2
    s.driver_config_change()     # driver echoes 2
    s.driver_hint()              # page 0 hinted (queued, not yet seen by the device)
    s.reclaim_hinted(0)          # guest takes page 0 back and writes it: dirty
    s.migration_sync()           # page 0 goes to to_send; cmd id 3
    s.device_process()           # the hint tagged 2 arrives now
    return s.switchover()


def deferred_clear(s):
    """Hints collected in a round clear their bits only after the next sync."""
    s.migration_start()
    s.driver_config_change()
    s.driver_hint()
    s.reclaim_hinted(0)
    s.device_process()           # hint accepted in its own round...
    return s.switchover()        # ...but applied after the final sync, erasing the write


def discard_race(s):
    """Firecracker's race: the guest reuses a hinted page before the device processes the hint."""
    s.migration_start()
    s.driver_config_change()
    s.driver_hint()
    s.reclaim_hinted(0)
    s.device_process()           # a discarding device zeroes page 0 under the guest
    return s.outcome()


def cancel_without_done(s):
    """Migration is cancelled; without DONE the driver holds its hinted pages forever."""
    s.migration_start()
    s.driver_config_change()
    s.driver_hint()
    s.device_process()
    s.cancel()
    s.driver_config_change()
    return s.outcome()


TRACES = {
    "apply_stale_hints": (stale_hint, "lost"),
    "clear_after_sync": (deferred_clear, "lost"),
    "discard_hinted": (discard_race, "corrupted"),
    "skip_done_on_cancel": (cancel_without_done, "leaked_hinted"),
}


def test_every_unsafe_policy_has_a_trace():
    assert set(TRACES) == set(UNSAFE_POLICIES)


@pytest.mark.verifies("BAL-FPH-DEV-3", "BAL-FPH-D4", "BAL-FPH-DEV-6")
@pytest.mark.parametrize("name", sorted(TRACES))
def test_unsafe_policy_loses_on_its_trace(name):
    trace, symptom = TRACES[name]
    bad = trace(HintingSystem(16, UNSAFE_POLICIES[name]))
    assert getattr(bad, symptom), bad
    good = trace(HintingSystem(16, SAFE))
    assert not good.lost and not good.corrupted and not good.leaked_hinted, good


def test_efficiency_is_reported():
    s = HintingSystem(16)
    for _ in range(4):
        s.alloc_write()
    s.migration_start()
    s.driver_config_change()
    while s.driver_hint():
        pass
    s.device_process()
    out = s.switchover()
    # 4 workload + 4 ring pages in use; the hinted free pages are skipped.
    assert out.ideal == 8
    assert out.pages_sent < s.guest.n_pages
    assert s.migration.stats.hinted_pages_skipped > 0
