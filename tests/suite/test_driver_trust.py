"""Driver verdicts an implementer can trust, step by step as a printed counterexample runs.

The false alarm first: a deflated page the driver poisoned, then written and freed by the guest, is not
the driver's fault. Then every check the driver machine gained, on the mutant built to break it and on
the reference driver, at the moment the rules aim at; and no rule draws from ``data()``.
"""

from __future__ import annotations

from typing import Any

import pytest

from conformance.adapters.linux import machine as linux_machine
from conformance.adapters.linux.machine import LinuxDriverConformance
from conformance.checks import Recorder
from conformance.machines.driver import DriverConformance
from conformance.machines.driver.boot import N_PAGES
from conformance.machines.driver.device import needless
from conformance.mutants import driver as mutants
from conformance.registry import BUILTIN, machine_for
from refmodel.balloon.driver import BalloonDriver
from refmodel.balloon.hinting import FreePageHintDriver
from refmodel.errors import PeerSpecViolation
from refmodel.system.guest_os import poison_pattern
from refmodel.virtio.features import Feature
from refmodel.virtio.virtq import Buffer, Chain

F = Feature
BOOT = dict(drop=frozenset(), queue_max=16, undefined_bit=False, event_idx=True, refuse=False, free_pages="anything")


def machine(impl: Any = None, **boot: Any) -> Any:
    """A booted driver machine for ``impl`` (a registry name or a driver class) with a fresh recorder."""
    if impl is None or isinstance(impl, str):
        base = machine_for(BUILTIN[impl or "reference", "driver"])
    else:
        base = type("Local", (DriverConformance,), {"factory": staticmethod(impl)})
    state = type("Trust", (base,), {"recorder": Recorder()})()
    state.boot(**{**BOOT, **boot})
    return state


def steps(state: Any, *calls: tuple[str, dict[str, Any]]) -> None:
    """Run each step, then every invariant, as Hypothesis does."""
    invariants = [i.function for i in type(state).setup_state().invariants]
    for name, kwargs in calls:
        getattr(state, name)(**kwargs)
        for inv in invariants:
            inv(state)


def breaks(req_id: str, state_or_impl: Any, *calls: tuple[str, dict[str, Any]],
           **boot: Any) -> PeerSpecViolation:
    with pytest.raises(PeerSpecViolation) as e:
        state = machine(state_or_impl, **boot) if not hasattr(state_or_impl, "boot") else state_or_impl
        steps(state, *calls)
    assert e.value.req_id == req_id, str(e.value)
    return e.value


# -- the false alarm -----------------------------------------------------------------------------------------
@pytest.mark.verifies("BAL-PP-DRV-1")
@pytest.mark.parametrize("drop, calls", [
    (frozenset(), [("set_target", dict(cycles=1, num_pages=1)), ("set_target", dict(cycles=2, num_pages=0))]),
    (frozenset({F.VIRTIO_BALLOON_F_MUST_TELL_HOST}), [("set_target", dict(cycles=2, num_pages=1)),
                                                       ("oom", dict(count=1))]),
], ids=["must-tell-host", "deflate-on-oom"])
def test_a_deflated_page_the_guest_wrote_and_freed_is_not_the_drivers_fault(drop, calls):
    """The two nightly traces: the driver poisons deflated page 0 and gives it back; the guest writes it and
    frees it; settle used to blame the driver for the page no longer holding poison_val."""
    state = machine(drop=drop, queue_max=4)
    steps(state, *calls)
    fill = poison_pattern(state.ref.config.get("poison_val"))
    assert state.os.pages.free & 1 and state.os.holds(0, fill)  # given back, poisoned: judged right then
    assert "BAL-PP-DRV-1" in state.R.exercised
    steps(state, ("workload_alloc_write", dict(count=1, top=False)), ("workload_free", dict(pick=0)))
    assert state.os.pages.free & 1 and not state.os.holds(0, fill)  # the guest's own write: legal
    steps(state, ("request_stats", {}), ("settle", {}))


class _Unpoisoned(BalloonDriver):
    def release(self, pfns: list[int]) -> None:
        for p in pfns:
            self.os.free_page(p)  # type: ignore[union-attr]


def test_a_deflated_page_given_back_unpoisoned_fails_at_that_moment():
    e = breaks("BAL-PP-DRV-1", _Unpoisoned, ("set_target", dict(cycles=2, num_pages=1)),
               ("set_target", dict(cycles=2, num_pages=0)))
    assert "deflated page 0 given back to the guest without poison_val" in str(e)


def test_a_device_change_after_the_driver_let_go_is_charged_to_the_rule_that_protected_the_page():
    """DeflatesEarly gives deflated pages back before the ack; the device's change then breaks BAL-OP-DRV-7,
    named when it happens even though the guest has not touched the page."""
    e = breaks("BAL-OP-DRV-7", mutants.DeflatesEarly, ("set_target", dict(cycles=2, num_pages=1)),
               ("set_target", dict(cycles=2, num_pages=0)))
    assert "after the driver had given it back to the guest" in str(e)


# -- status and initialization ------------------------------------------------------------------------------
def test_the_reference_resets_rereads_and_gives_up_with_failed_then_retries_after_a_reset():
    state = machine(refuse=True)
    assert state.booted and state.ref.refused == 1 and state.ref.reset_after_failed
    assert {"RESET-DRV-1", "INIT-DRV-4", "INIT-DRV-6", "STATUS-DRV-3"} <= state.R.exercised


@pytest.mark.parametrize("mutant, req_id, refuse", [
    (mutants.AssumesResetDone, "RESET-DRV-1", False),
    (mutants.NeverRereadsStatus, "INIT-DRV-4", False),
    (mutants.GivesUpSilently, "INIT-DRV-6", True),
    (mutants.RetriesWithoutReset, "STATUS-DRV-3", True),
    (mutants.StaleUsedFlags, "SPLIT-DRV-18", False),
])
def test_a_status_or_ring_setup_mutant_fails_at_boot(mutant, req_id, refuse):
    breaks(req_id, mutant, refuse=refuse)


def test_guest_ram_is_stale_before_boot_so_an_uninitialized_used_ring_shows():
    state = machine()
    q = state.ref.queues["inflateq"]
    assert state.ref.mem.read_u16(q.addrs.used) == 0  # the reference zeroed it
    assert state.os.mem.read(0, 4) == bytes([0xEE]) * 4  # the page nobody has written yet


def test_needless_descriptors_are_the_ones_no_layout_needs():
    page = 4096
    assert needless(Chain(0, (Buffer(0, 4),), ())) is None
    assert needless(Chain(0, (), (Buffer(0, page), Buffer(page, page)))) is None  # a page-by-page report
    assert needless(Chain(0, (Buffer(0, 0),), ())) is None  # one empty buffer is still one descriptor
    assert "zero-length" in needless(Chain(0, (Buffer(0, 4), Buffer(8, 0)), ()))
    assert "inside a page" in needless(Chain(0, (Buffer(0, 4), Buffer(4, 4)), ()))
    assert needless(Chain(0, (Buffer(0, 4),), (Buffer(4, 4),))) is None  # two directions: two descriptors


def test_splitting_buffers_fails_split_drv_3_and_the_reference_passes():
    calls = (("set_target", dict(cycles=3, num_pages=8)), ("request_stats", {}))
    breaks("SPLIT-DRV-3", mutants.SplitsBuffers, *calls)
    state = machine()
    steps(state, *calls)
    assert "SPLIT-DRV-3" in state.R.exercised


@pytest.mark.parametrize("poison", [False, True])
def test_a_guest_relying_on_free_pages_gets_reporting_only_with_poison(poison):
    drop = frozenset() if poison else frozenset({F.VIRTIO_BALLOON_F_PAGE_POISON})
    state = machine(drop=drop, free_pages="kept")
    assert state.has(F.VIRTIO_BALLOON_F_PAGE_REPORTING) == poison and "BAL-FB-DRV-3" in state.R.exercised
    if not poison:
        breaks("BAL-FB-DRV-3", mutants.ReportsOverInitOnFree, drop=drop, free_pages="kept")
        breaks("BAL-FB-DRV-3", mutants.ReportsOverInitOnFree, free_pages="kept, device without PAGE_POISON")


def test_a_driver_that_says_nothing_of_free_pages_is_not_judged_on_it():
    class Silent(BalloonDriver):
        def __init__(self) -> None:
            super().__init__()
            self.init_on_free = None  # type: ignore[assignment]  # no such setting

    state = machine(Silent, free_pages="kept")
    assert state.init_on_free is None and "BAL-FB-DRV-3" not in state.R.exercised


# -- hinting -------------------------------------------------------------------------------------------------
def test_hinting_nothing_in_a_round_fails_bal_fph_drv_4_and_the_reference_supplies_pages():
    breaks("BAL-FPH-DRV-4", mutants.HintsNothing, ("hint_start", dict(cycles=3)))
    state = machine()
    steps(state, ("hint_start", dict(cycles=3)), ("settle", {}))
    assert state.ref.hint.received_pages and "BAL-FPH-DRV-4" in state.R.exercised


class _NeverEchoesHint(FreePageHintDriver):
    def send_command_id(self, cid: int) -> bool:
        return False


class _NeverEchoes(mutants._HintMutant):
    HINT = _NeverEchoesHint


def test_a_command_id_left_unanswered_fails_bal_fph_drv_4_at_settle():
    e = breaks("BAL-FPH-DRV-4", _NeverEchoes, ("hint_start", dict(cycles=2)), ("settle", {}))
    assert "never echoing" in str(e)


def test_hints_after_the_driver_read_stop_fail_bal_fph_drv_5_and_those_already_queued_do_not():
    calls = ("hint_race", dict(end="hint_stop", lead=1, cycles=3))
    breaks("BAL-FPH-DRV-5", mutants.HintsThroughStop, calls)
    for end in ("hint_stop", "hint_done"):
        state = machine()
        steps(state, ("hint_race", dict(end=end, lead=1, cycles=3)), ("settle", {}))
        assert state.ref.hint.ignored_hints  # in the ring when the round ended: not the driver's fault
        assert "BAL-FPH-DRV-5" in state.R.exercised


def test_hinted_pages_given_back_before_done_must_be_initialized():
    calls = ("hint_then_shrink", dict(lead=2, count=4))
    breaks("BAL-FPH-DRV-9", mutants.ShrinksUninitialized, calls)
    state = machine()
    steps(state, calls, ("hint_done", dict(cycles=2)), ("settle", {}))
    assert "BAL-FPH-DRV-9" in state.R.exercised and "BAL-FPH-DRV-10" in state.R.exercised


def test_the_device_overwrites_only_hinted_pages_the_driver_still_holds():
    state = machine()
    steps(state, ("hint_start", dict(cycles=3)))
    assert state.ref.discarded and not state.ref.discarded & ~state.os.pages.hinted


# -- the other moments ---------------------------------------------------------------------------------------
def test_a_reset_mid_round_starts_over_on_both_sides():
    state = machine()
    steps(state, ("set_target", dict(cycles=3, num_pages=8)), ("reset_mid_round", dict(lead=1, cycles=3)),
          ("settle", {}))
    assert state.ref.resets == 2 and state.ref.ballooned.bit_count() == 8
    assert state.ref.hint.echoed == {2}  # the new device's first ID again: the driver started over


@pytest.mark.parametrize("mutant, call", [
    (mutants.DeflatesEarly, ("deflate_then_reuse", dict(grow=8, keep=0, count=4, top=False))),
    (mutants.ReusesReportedEarly, ("report_then_reuse", dict(count=4))),
])
def test_the_aimed_moments_catch_early_reuse_in_one_step(mutant, call):
    breaks(mutant.breaks, mutant, call)
    state = machine()
    steps(state, call, ("settle", {}))


def test_the_balloon_grown_to_the_end_of_memory_takes_the_last_page_and_gives_it_back():
    state = machine()
    top = state.os.pages.free.bit_length()  # the highest free page, + 1
    steps(state, ("balloon_to_memory_end", dict(spare=0, back=False)))
    assert not state.os.pages.free and state.ref.ballooned.bit_length() == top > N_PAGES // 2
    steps(state, ("balloon_to_memory_end", dict(spare=2, back=True)), ("settle", {}))
    assert not state.ref.ballooned


def test_a_bitmap_bound_off_at_the_end_of_memory_is_caught_in_one_step():
    breaks("PROP-BMP-DRV-3", "mutant-bitmap-past-memory", ("balloon_to_memory_end", dict(spare=0, back=False)))


# -- replayable counterexamples ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [DriverConformance, LinuxDriverConformance])
def test_no_driver_rule_draws_from_data(cls):
    for r in cls.setup_state().rules:
        assert all(repr(s) != "data()" for s in r.arguments.values()), r.function.__name__


def test_a_route_with_a_kick_grace_judges_the_snapshot_it_waited_on(monkeypatch):
    """A real guest runs beside the suite: it may publish again between the read that found its last entry
    announced and the judgment. The judgment is that read's, and the new entry is the next check's (the
    UML route's in-band test failed SPLIT-DRV-21 on reporting_vq under load, its kick 0.2-0.5 s behind)."""
    cls = type("Racing", (LinuxDriverConformance,), {"factory": staticmethod(BUILTIN["reference", "driver"].factory),
                                                     "recorder": Recorder()})
    state = cls()
    DriverConformance.boot(state, **{**BOOT, "event_idx": False})
    reads = []
    published = {"inflateq": [1, 2, 2, 2]}  # the guest publishes its second entry right after the first read

    def avail(q: Any) -> int:
        name = next(n for n, v in state.ref.queues.items() if v is q)
        if name in published:
            reads.append(name)
            return published[name][min(reads.count(name) - 1, 3)]
        return state.avail_seen.get(name, 0)

    state._avail_idx = avail
    state.avail_seen = {"inflateq": 0}
    state.ref.kicked_at["inflateq"] = 1  # the first entry's kick
    state._check_kicks()
    assert state.avail_seen["inflateq"] == 1 and reads == ["inflateq"]
    monkeypatch.setattr(linux_machine, "KICK_GRACE", 0.0)  # the next check: its kick never comes
    with pytest.raises(PeerSpecViolation, match=r"SPLIT-DRV-21.*inflateq: avail idx 1->2"):
        state._check_kicks()
