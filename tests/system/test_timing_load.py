"""The timing model takes the CPU a run got as an input (refmodel.system.timing.Load), and an ordering can
count its quiet time on the guest's clock, so a starved guest is not taken for one that stopped hinting."""

import attrs
import pytest

from refmodel.system.orderings import CapThenLift, Paced, parse
from refmodel.system.timing import (IDLE, DriverTiming, GuestMix, HostTiming, Load, ReportingDuring,
                                    ReportingTiming, simulate)

MIX = GuestMix(262144, 58710, 179200, 24234)  # a 1 GiB guest like the real bench's
HOST, DRIVER = HostTiming(), DriverTiming()


def test_a_starved_vcpu_hints_as_a_slower_driver():
    shared = Load(migration=0.5)  # a race worth the name: QEMU does not switch over at its first check
    half = simulate(MIX, HOST, DRIVER, load=Load(vcpu=0.5, migration=0.5))
    slower = simulate(MIX, HOST, attrs.evolve(DRIVER, blocks_per_s=DRIVER.blocks_per_s / 2,
                                              first_hint_s=DRIVER.first_hint_s * 2), load=shared)
    assert half.full_pages == pytest.approx(slower.full_pages)
    assert half.full_pages > simulate(MIX, HOST, DRIVER, load=shared).full_pages * 1.2  # the race lost further


def test_a_starved_migration_thread_sends_slower_and_hints_win_more():
    idle, slow = (simulate(MIX, HOST, None, load=load) for load in (IDLE, Load(migration=0.25)))
    assert slow.wall_s == pytest.approx(4 * idle.wall_s, rel=0.03)
    idle, slow = (simulate(MIX, HOST, DRIVER, load=load) for load in (IDLE, Load(migration=0.25)))
    assert slow.full_pages < 0.7 * idle.full_pages
    # Without hints the pages are about the same whatever the load (a longer run: a few more resends).
    busy = simulate(MIX, HOST, load=Load(0.3, 0.3)).full_pages
    assert busy == pytest.approx(simulate(MIX, HOST).full_pages, rel=0.01)


def test_shares_outside_a_core_and_a_half_are_refused():
    for bad in ({"vcpu": 0.0}, {"migration": 2.0}, {"vcpu": -1.0}):
        with pytest.raises(ValueError, match="load: CPU shares"):
            Load(**bad)


def test_on_the_guest_clock_a_late_first_hint_is_waited_for():
    """A vCPU with a third of a core sends its first hint after the wall-clock bound: counted on the guest's
    clock the ordering waits for it, and is still lifted by its wall-clock bound at the latest."""
    late = attrs.evolve(DRIVER, first_hint_s=0.12)
    load = Load(vcpu=0.33)
    wall, guest = (simulate(MIX, HOST, late, Paced(0.5, clock=c), load=load) for c in ("wall", "guest"))
    assert guest.full_pages < 0.7 * wall.full_pages
    never = simulate(MIX, HOST, None, Paced(0.5, clock="guest", bound_s=1.0), load=Load(vcpu=0.05))
    assert never.bulk_end_s <= 1.0 + simulate(MIX, HOST).bulk_end_s + 0.01


def test_the_guest_clock_is_named_and_checked():
    assert parse("gate", clock="guest").clock == "guest"
    assert CapThenLift(1e9).clock == "wall"
    with pytest.raises(ValueError, match="ordering"):
        parse("pace:0.5", clock="cpu")


def test_reporting_goes_on_while_a_slow_migration_runs():
    """A pass every 2 s: a migration that lasts past the next one sends fewer pages in full; one that ends
    before it sends the same as with reporting frozen at migrate."""
    rep = ReportingTiming(first_pass_s=2.0, pass_s=0.0)  # passes at 2, 4, 6 and 8 s after the free
    mix = GuestMix(524288, 91478, 384000, 48810)  # the 2 GiB guest: seven passes
    free = mix.free
    since = 7.2  # three passes done, the fourth due 0.8 s into the migration
    before = mix.reported(rep.reported(free, since))
    frozen = simulate(before, HOST, load=Load(migration=0.1))
    going = simulate(before, HOST, ReportingDuring(rep, free, since), load=Load(migration=0.1))
    assert going.full_pages < frozen.full_pages - 0.5 * rep.pages_per_pass(free)
    fast = simulate(before, HOST, ReportingDuring(rep, free, since))
    assert fast.wall_s < 0.8 and fast.full_pages == pytest.approx(simulate(before, HOST).full_pages, rel=1e-3)


def test_a_run_recorded_without_the_migration_thread_is_not_taken_as_a_starved_one():
    """Runs on QEMU 11.1 made before the migration thread was found under its 9.0 name carry no
    ``migration`` samples: their load is unknown (no record), not a migration share of 0 (clamped to 0.05,
    a host 20 times slower)."""
    from refmodel.system.real_runs import measured_load

    samples = [(0.0, {"vcpu0": 1.0, "vcpu1": 1.0}), (1.0, {"vcpu0": 1.5, "vcpu1": 1.2})]
    run = {"mode": "off", "wall": 1.0, "cpu": samples}
    assert measured_load(run) is None
    run["cpu"] = [(0.0, {**s, "migration": s["vcpu0"]}) if t == 0 else (t, {**s, "migration": 1.25})
                  for t, s in samples]
    assert measured_load(run).migration == pytest.approx(0.25)
