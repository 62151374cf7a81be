"""QEMU's switchover rule in the timing model (migration_iteration_run): the dirty log is synced once what is
left in the bitmap, at 4 KiB a page, would go within the downtime limit at the bandwidth of the last window,
and the guest is stopped if what the sync leaves still does. Measured on QEMU 11.1 with Linux 7.2 (2 GiB):
the first sync 2.74 s in, before the pass was done, and the ~400,000 pages the driver held as hints (zeroed
when it took them) resent as zero pages after it."""

import attrs
import pytest

from refmodel.system.timing import PAGE, DriverTiming, GuestMix, HostTiming, Load, simulate

ALL_FULL = GuestMix(262144, 262144, 0, 0)
MIX = GuestMix(262144, 58710, 179200, 24234)
HOST = Load(migration=0.25).host(HostTiming())


def test_the_first_sync_comes_when_what_is_left_fits_the_downtime():
    run = simulate(ALL_FULL, HOST)
    pass_s = ALL_FULL.n_pages * HOST.full_s
    # Left at the sync: downtime_s of sending at the window's bandwidth (full pages, a few header bytes each).
    assert pass_s - run.bulk_end_s == pytest.approx(HOST.downtime_s * PAGE / (PAGE + 8), abs=0.02)
    assert run.wall_s == pytest.approx(pass_s + HOST.sync_s, abs=0.01)  # the rest goes while stopped


def test_a_longer_downtime_limit_switches_over_sooner():
    short, long = (simulate(ALL_FULL, attrs.evolve(HOST, downtime_s=d)).bulk_end_s for d in (0.3, 1.0))
    assert long < short - 0.5


def test_hints_bring_the_sync_forward():
    off, on = simulate(MIX, HOST), simulate(MIX, HOST, DriverTiming())
    assert on.bulk_end_s < off.bulk_end_s
    assert on.full_pages < off.full_pages


def test_hinted_blocks_zeroed_on_allocation_are_resent_as_zero_pages():
    fast = DriverTiming(blocks_per_s=5000.0, dirty_per_hint=0.0)  # all of free memory before the first sync
    zeroed = simulate(MIX, HOST, fast)
    clean = simulate(MIX, HOST, attrs.evolve(fast, zeroes_hinted=False))
    assert zeroed.hinted == clean.hinted == MIX.free
    # Every block hinted goes again as a zero page.
    assert zeroed.zero_pages - clean.zero_pages == pytest.approx(zeroed.hinted, rel=0.01)
    # Pending at the sync, they keep QEMU iterating with the guest running a little longer, but as flags.
    assert zeroed.full_pages == pytest.approx(clean.full_pages, rel=0.01)
    assert zeroed.wall_s > clean.wall_s and zeroed.bulk_end_s == pytest.approx(clean.bulk_end_s, abs=0.01)


def test_a_host_that_can_send_the_guest_within_the_downtime_switches_over_at_its_first_check():
    half_gib = GuestMix(131072, 30000, 90000, 11072)  # about 0.2 s of sending with a core
    idle = simulate(half_gib, HostTiming())
    assert idle.bulk_end_s == pytest.approx(HostTiming().window_s + HostTiming().sync_s, abs=0.002)
