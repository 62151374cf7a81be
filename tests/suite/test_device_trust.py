"""Verdicts on devices an implementer can trust: malformed driver input is judged by what the device did
(STATUS-DEV-2/3), a changed page is charged to the requirement its history names, and the dangerous
moments are reached by rules aimed at them. Each test drives the device machine step by step, as a
printed counterexample would."""

from __future__ import annotations

from typing import cast

import pytest

from conformance.checks import Recorder
from conformance.machines.device import MALFORMED, DeviceConformance
from conformance.machines.device.malformed import PACKED_MALFORMED
from conformance.mutants.device import ReportLenUnwrittenPacked
from conformance.registry import BUILTIN, machine_for, resolve
from refmodel.balloon.device import BalloonDevice
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.constants import DeviceStatus
from refmodel.virtio.features import Feature
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.packed.layout import DESC_FLAGS, PVIRTQ_DESC_SIZE, VIRTQ_DESC_F_WRITE


def machine(name: str, factory: type | None = None,
            drop: frozenset[Feature] = frozenset()) -> DeviceConformance:
    """A booted device machine for built-in ``name`` (or a machine around ``factory``)."""
    if factory is None:
        cls = cast("type[DeviceConformance]", machine_for(BUILTIN[name, "device"]))
    else:
        cls = type(f"{name}Conformance", (DeviceConformance,), {"factory": staticmethod(factory)})
    cls.recorder = Recorder()
    m = cls()
    m.boot(drop=drop, queue_size=8)
    return m


def fails_with(req_id: str, step) -> PeerSpecViolation:
    with pytest.raises(PeerSpecViolation) as e:
        step()
    assert e.value.req_id == req_id, e.value
    return e.value


# -- malformed driver input --------------------------------------------------------------------------------
@pytest.mark.verifies("STATUS-DEV-2", "STATUS-DEV-3")
@pytest.mark.parametrize("index", range(len(MALFORMED)), ids=[k.topic for k in MALFORMED])
def test_the_reference_device_asks_for_a_reset_after_each_malformed_input(index):
    m = machine("reference")
    kind = m._malformed_kinds()[index]
    assert kind is MALFORMED[index]  # with every feature negotiated, every class is on offer
    m.malformed_input(index)
    seen = m.R.observations[kind.topic]
    assert {"set DEVICE_NEEDS_RESET", "sent a configuration change notification"} <= seen, seen
    assert any(s.startswith("reported the breach (") for s in seen), seen
    assert {"STATUS-DEV-2", "STATUS-DEV-3", "RESET-DEV-1", "RESET-DEV-2"} <= m.R.exercised
    assert m.dev.read_status() & DeviceStatus.DRIVER_OK and m.drv.ok  # reset, probed again
    m.cycle(2)  # and the example goes on normally


@pytest.mark.verifies("STATUS-DEV-2", "STATUS-DEV-3")
@pytest.mark.parametrize("index", range(len(PACKED_MALFORMED)), ids=[k.topic for k in PACKED_MALFORMED])
def test_every_malformed_input_reaches_the_reference_over_packed_rings(index):
    cls = cast("type[DeviceConformance]", machine_for(resolve("reference", "device", ring="packed")))
    cls.recorder = Recorder()
    m = cls()
    m.boot(drop=frozenset(), queue_size=8)
    kind = m._malformed_kinds()[index]
    assert kind is PACKED_MALFORMED[index]
    m.malformed_input(index)
    seen = m.R.observations[kind.topic]
    assert {"set DEVICE_NEEDS_RESET", "sent a configuration change notification"} <= seen, seen
    if kind.breaks.startswith("PACKED-"):  # the ring's own malformed lists: the device names that requirement
        assert f"reported the breach ({kind.breaks})" in seen, seen
    assert m.dev.read_status() & DeviceStatus.DRIVER_OK and m.drv.ok
    m.cycle(2)


class ReturnsBadPfns(BalloonDevice):
    """Skips PFNs outside memory and returns the buffer, as QEMU does: nothing needs a reset."""

    def on_inflateq(self, chain):
        try:
            return super().on_inflateq(chain)
        except PeerSpecViolation:
            return 0


class KeepsBadPfns(BalloonDevice):
    """Holds an inflate buffer with a PFN outside memory for ever, and serves the next ones."""

    def on_inflateq(self, chain):
        try:
            return super().on_inflateq(chain)
        except PeerSpecViolation:
            return None


@pytest.mark.parametrize("device", [ReturnsBadPfns, KeepsBadPfns])
def test_a_device_that_ignores_the_input_and_carries_on_passes(device):
    m = machine(device.__name__, device)
    m.malformed_input(5)  # inflateq: PFN outside guest memory
    assert m.R.observations["malformed inflateq: PFN outside guest memory"] == {"ignored it and carried on"}
    assert "STATUS-DEV-2" in m.R.exercised and "STATUS-DEV-3" not in m.R.exercised


def test_a_device_that_stops_silently_fails_status_dev_2():
    m = machine("mutant-hides-its-error")
    err = fails_with("STATUS-DEV-2", lambda: m.malformed_input(5))
    assert "stopped serving inflateq" in err.detail


def test_a_device_that_asks_for_a_reset_without_a_notification_fails_status_dev_3():
    m = machine("mutant-needs-reset-unannounced")
    fails_with("STATUS-DEV-3", lambda: m.malformed_input(8))  # a descriptor loop


def test_no_rule_draws_from_data():
    """A printed trace replays as is: every draw is an argument of the rule (data=data(...) is not)."""
    for rule in DeviceConformance.setup_state().rules:
        assert all(repr(s) != "data()" for s in rule.arguments.values()), rule.function.__name__


# -- provenance decides the label --------------------------------------------------------------------------
@pytest.mark.verifies("BAL-FPH-DEV-5")
def test_a_hinted_page_changed_after_done_and_written_since_is_bal_fph_dev_5():
    """The device keeps changing the pages it was hinted after DONE; the guest takes one back and writes
    it. What the page is now (a workload page) would say BAL-OP-DEV-D1; its history says BAL-FPH-DEV-5."""
    m = machine("mutant-writes-hinted-after-done")
    m.hint_start(2)  # the driver echoes and hints; the device applies the hints
    assert m.dev.hinted_pages()
    m.hint_done(1)  # the driver sees DONE and releases its pages
    assert not m.os.pages.hinted
    m.workload_alloc_write(8, False)  # the lowest free pages: the released ones
    m.cycle(1)
    err = fails_with("BAL-FPH-DEV-5", m.workload_pages_intact)
    assert "workload page" in err.detail and "hinted (command ID" in err.detail
    assert "released after DONE" in err.detail


@pytest.mark.verifies("BAL-FPH-D4")
def test_a_hinted_page_the_guest_wrote_must_keep_the_write():
    m = machine("mutant-discards-rewritten-hints")
    m.guest_reuses_hinted(0, 1)
    err = fails_with("BAL-FPH-D4", m.workload_pages_intact)
    assert "reused by the guest before DONE" in err.detail


def test_the_reference_keeps_a_rewritten_hinted_page_and_that_exercises_bal_fph_d4():
    m = machine("reference")
    m.guest_reuses_hinted(0, 2)
    m.workload_pages_intact()
    assert "BAL-FPH-D4" in m.R.exercised


@pytest.mark.verifies("BAL-FPH-DEV-5")
def test_after_done_a_rewritten_hinted_page_is_protected_by_done():
    """Hinted, reused by the guest, then DONE: a change now breaks BAL-FPH-DEV-5 (the device's claim
    ended with the round), not only BAL-FPH-D4."""
    m = machine("mutant-writes-hinted-after-done")
    m.guest_reuses_hinted(0, 1)
    m.hint_done(0)
    m.cycle(1)
    fails_with("BAL-FPH-DEV-5", m.workload_pages_intact)


# -- the dangerous moments ---------------------------------------------------------------------------------
@pytest.mark.verifies("SPLIT-DEV-9", "SPLIT-DEV-11")
def test_suppression_mid_batch_reaches_split_dev_9_and_11_for_the_reference():
    m = machine("reference", drop=frozenset({Feature.VIRTIO_F_EVENT_IDX}))
    m.suppression_mid_batch(False)
    assert "SPLIT-DEV-9" in m.R.exercised and not m.has(Feature.VIRTIO_F_EVENT_IDX)
    m.suppression_mid_batch(True)  # probes again with EVENT_IDX
    assert m.has(Feature.VIRTIO_F_EVENT_IDX)
    assert {"SPLIT-DEV-11", "SPLIT-DEV-12", "SPLIT-DEV-13"} <= m.R.exercised


@pytest.mark.parametrize("name, event_idx, req", [
    ("mutant-ignores-no-interrupt", False, "SPLIT-DEV-9"),
    ("mutant-honours-no-interrupt-with-event-idx", True, "SPLIT-DEV-11"),
    ("mutant-no-used-notification", True, "SPLIT-DEV-12"),  # silent without the stray bit: not SPLIT-DEV-11
])
def test_suppression_mid_batch_names_the_requirement_the_device_breaks(name, event_idx, req):
    m = machine(name)
    fails_with(req, lambda: m.suppression_mid_batch(event_idx))


@pytest.mark.verifies("BAL-FPH-DEV-3")
@pytest.mark.parametrize("end", ["done", "stop", "new command ID", "reset"])
def test_hints_in_flight_when_a_round_ends_are_not_applied(end):
    assert machine("reference").round_ends_with_hints_in_flight(end, 1) is None
    m = machine("mutant-applies-stale-hints")
    if end == "reset":  # a reset forgets the hints: nothing stale is left to apply
        m.round_ends_with_hints_in_flight(end, 1)
    else:
        fails_with("BAL-FPH-DEV-3", lambda: m.round_ends_with_hints_in_flight(end, 1))


@pytest.mark.verifies("SPLIT-DEV-15")
def test_a_used_len_over_bytes_the_device_never_wrote_fails_split_dev_15():
    ok = machine("reference")
    ok.report_and_return(False)
    assert "SPLIT-DEV-15" in ok.R.exercised and not ok.has(Feature.VIRTIO_BALLOON_F_PAGE_POISON)
    m = machine("mutant-report-len-unwritten")
    err = fails_with("SPLIT-DEV-15", lambda: m.report_and_return(False))
    assert "still holds the canary" in err.detail


class _LenWithoutWrite(PackedQueueDevice):
    """Writes each used descriptor's len but never VIRTQ_DESC_F_WRITE, as QEMU does (AMB-PACKED-USED-WRITE)."""

    def write_used_descriptor(self, pos: int, buf_id: int, length: int) -> None:
        super().write_used_descriptor(pos, buf_id, length)
        flags = self.addrs.desc + PVIRTQ_DESC_SIZE * (pos % self.queue_size) + DESC_FLAGS
        self.mem.write_u16(flags, self.mem.read_u16(flags) & ~VIRTQ_DESC_F_WRITE)


class _ClaimsWithoutWrite(ReportLenUnwrittenPacked):
    """A report's used len over every page, the pages left as they were, and WRITE never set."""

    def make_queue(self, name, *args, **kwargs):
        return _LenWithoutWrite(*args, **kwargs)


@pytest.mark.verifies("PACKED-DEV-D13")
def test_a_used_len_over_bytes_the_device_never_wrote_fails_packed_dev_d13_over_packed_rings():
    ok = cast("type[DeviceConformance]", machine_for(resolve("reference", "device", ring="packed")))
    ok.recorder = Recorder()
    state = ok()
    state.boot(drop=frozenset(), queue_size=8)
    state.report_and_return(False)
    assert state.packed and "PACKED-DEV-D13" in state.R.exercised and not state.drv.canaried
    m = machine("mutant-report-len-unwritten-packed")
    assert m.packed and isinstance(m.drv.vqs["reporting_vq"], PackedQueueDriver)
    err = fails_with("PACKED-DEV-D13", lambda: m.report_and_return(False))
    assert "reporting_vq: Buffer ID" in err.detail and "still holds the canary" in err.detail
    # Without WRITE a used descriptor's len is reserved (2.8.4): it claims nothing, whatever it holds.
    cls = type("ClaimsWithoutWriteConformance", (DeviceConformance,),
               {"factory": staticmethod(_ClaimsWithoutWrite), "ring": "packed"})
    cls.recorder = Recorder()
    quiet = cls()
    quiet.boot(drop=frozenset(), queue_size=8)
    quiet.report_and_return(False)
    assert "PACKED-DEV-D13" in quiet.R.exercised and not quiet.drv.canaried


@pytest.mark.verifies("BAL-FPR-DEV-2")
def test_a_reported_page_inflated_in_the_turn_of_its_ack_is_not_charged_to_the_device():
    """Found by the soak profile (seed 2): the driver took the ack of a reported page and inflated the
    same page before the device's next look; the device discarded it, as an inflated page may be, and the
    machine read it as a reported page that lost poison_val."""
    m = machine("reference")
    m.hint_start(cycles=3)
    for _ in range(6):
        m.request_stats()
    for turns in (1, 1, 1, 2, 2):
        m.guest_reuses_hinted(device_turns=turns, pick=0)
    m.request_stats()
    m.report()
    m.report()
    m.inflate_laid_out(count=8, layout="split")
    m.workload_pages_intact()
    assert "BAL-FPR-DEV-2" in m.R.exercised
