"""The reference hint device judges a driver: garbage on free_page_vq is a peer violation naming the
requirement, and the device's own IDs follow BAL-FPH-D1 / BAL-FPH-DEV-2."""

import pytest

from refmodel.balloon.constants import VIRTIO_BALLOON_CMD_ID_DONE, VIRTIO_BALLOON_CMD_ID_STOP
from refmodel.errors import BrokenSide, PeerSpecViolation
from refmodel.balloon.hinting import (DEVICE_TRANSITIONS, DRIVER_TRANSITIONS, DeviceHintEvent, DeviceHintState,
                              DriverHintState)
from refmodel.system.scenario import HintingSystem

ID_BUF = 0x3000


def rig():
    s = HintingSystem(16)
    s.migration_start()  # device publishes id 2
    return s, s.driver.vq, s.mem


def out(vq, mem, value, size=4, addr=ID_BUF):
    mem.write(addr, value.to_bytes(8, "little")[:size])
    vq.add([(addr, size)])
    vq.publish()


def expect(s, req):
    with pytest.raises(PeerSpecViolation) as exc:
        s.device.process()
    assert exc.value.req_id == req and exc.value.role == "driver", str(exc.value)
    with pytest.raises(BrokenSide):
        s.device.process()


@pytest.mark.verifies("BAL-FPH-DRV-1")
@pytest.mark.parametrize("size", [3, 8, 0])
def test_cmd_id_buffer_must_be_4_bytes(size):
    s, vq, mem = rig()
    out(vq, mem, 2, size=size)
    expect(s, "BAL-FPH-DRV-1")


@pytest.mark.verifies("BAL-FPH-D3")
def test_a_hint_sent_as_an_out_buffer_is_named_as_such():
    s, vq, mem = rig()
    out(vq, mem, 2)
    vq.add([(0x3000, 4096)])  # a whole page, as an out-buffer
    vq.publish()
    expect(s, "BAL-FPH-D3")


@pytest.mark.verifies("BAL-FPH-DRV-3")
def test_double_echo():
    s, vq, mem = rig()
    out(vq, mem, 2)
    out(vq, mem, 2, addr=ID_BUF + 8)
    expect(s, "BAL-FPH-DRV-3")


@pytest.mark.verifies("BAL-FPH-DRV-3")
def test_replayed_id_after_stop():
    s, vq, mem = rig()
    out(vq, mem, 2)
    out(vq, mem, VIRTIO_BALLOON_CMD_ID_STOP, addr=ID_BUF + 8)
    s.device.process()
    out(vq, mem, 2, addr=ID_BUF + 16)
    expect(s, "BAL-FPH-DRV-3")


@pytest.mark.verifies("BAL-FPH-D2")
@pytest.mark.parametrize("value", [7, VIRTIO_BALLOON_CMD_ID_DONE])
def test_echo_of_an_id_never_published(value):
    s, vq, mem = rig()
    out(vq, mem, value)
    expect(s, "BAL-FPH-D2")


@pytest.mark.verifies("BAL-FPH-DRV-2")
def test_hint_before_any_echo():
    s, vq, mem = rig()
    vq.add(writable=[(0x0, 4096)])
    vq.publish()
    expect(s, "BAL-FPH-DRV-2")


@pytest.mark.verifies("SPLIT-DRV-D1", "BAL-FPH-D3")
def test_hint_outside_guest_memory():
    s, vq, mem = rig()
    out(vq, mem, 2)
    s.device.process()
    vq.add(writable=[(0x0, 4096)])
    vq.publish()
    # corrupt the descriptor: point the hint past the end of guest memory
    slot = mem.read_u16(s.device.vq.addrs.avail + 4 + 2 * (s.device.vq.last_avail_idx % 8))
    mem.write_u64(s.device.vq.addrs.desc + 16 * slot, mem.size + 4096)
    expect(s, "SPLIT-DRV-D1")


@pytest.mark.verifies("BAL-FPH-DEV-3", "PROP-FPH-1", "PROP-FPH-9")
def test_unaligned_and_stale_hints_are_ignored_not_applied():
    s, vq, mem = rig()
    out(vq, mem, 2)
    vq.add(writable=[(0x800, 4096)])  # covers no whole page
    vq.publish()
    s.device.process()
    assert s.device.applied_pages == 0
    s.device.start()  # id 3; the driver still tags with 2
    vq.add(writable=[(0x1000, 4096)])
    vq.publish()
    s.device.process()
    assert s.device.applied_pages == 0 and s.device.ignored_hints == 1


@pytest.mark.verifies("BAL-FPH-D1", "BAL-FPH-DEV-2", "PROP-FPH-3")
def test_device_ids_are_fresh_and_never_reserved():
    s = HintingSystem(16)
    seen = []
    for _ in range(50):
        seen.append(s.device.start())
        s.device.stop()
    assert all(i >= 2 for i in seen) and len(set(seen)) == len(seen)


def test_hint_tables_cover_every_host_event_from_every_state():
    for st in DeviceHintState:
        for ev in (DeviceHintEvent.START, DeviceHintEvent.STOP, DeviceHintEvent.DONE):
            assert (st, ev) in DEVICE_TRANSITIONS
    assert DEVICE_TRANSITIONS[DeviceHintState.REQUESTED, DeviceHintEvent.RECV_CURRENT_ID] is DeviceHintState.ACTIVE
    # the driver never goes back to HINTING for the same round without a new ID
    assert all(new is not DriverHintState.HINTING or old is not DriverHintState.HINTING or ev.name == "SEND_HINT"
               for (old, ev), new in DRIVER_TRANSITIONS.items())


def test_driver_falls_back_to_smaller_blocks_once_no_large_block_is_free():
    """With order 2 and min_order 0 the driver hints 4-page blocks first, then the free pages left in
    the partly used block [0, 4); with min_order 2 (Linux's way) those stay unhinted."""
    for min_order, left, applied in ((0, 0, 15), (2, 0b1110, 12)):
        s = HintingSystem(16)
        s.driver.order, s.driver.min_order = 2, min_order
        assert s.guest.alloc() == 0  # page 0 in use
        s.device.start()
        s.driver_config_change()
        s.device.process()  # the echo
        while s.driver.hint_one():
            s.device.process()
        assert s.guest.free == left, (min_order, bin(s.guest.free))
        assert s.device.applied_pages == applied, min_order


def test_device_records_part_page_hints_and_rounds_the_driver_did_not_stop():
    """Observations for the proposal (PROP-FPH-8, PROP-FPH-7), not violations: the device counts hint
    buffers off 4 KiB boundaries, and rounds it ended that the driver closed with a STOP."""
    s, vq, mem = rig()
    out(vq, mem, 2)
    vq.add(writable=[(0x800, 4096)])
    vq.add(writable=[(0x2000, 4096)])
    vq.publish()
    s.device.process()
    assert (s.device.part_page_hints, s.device.whole_page_hints) == (1, 1)
    s.device.start()  # id 3 ends the active round
    assert s.device.stop_owed and s.device.device_ended_rounds == 1
    out(vq, mem, 3, addr=ID_BUF + 8)  # the driver echoes the new ID without a STOP first
    s.device.process()
    assert not s.device.stop_owed and s.device.stops_after_device_end == 0
    s.device.start()  # id 4 ends round 3
    out(vq, mem, VIRTIO_BALLOON_CMD_ID_STOP, addr=ID_BUF + 16)
    s.device.process()
    assert (s.device.device_ended_rounds, s.device.stops_after_device_end) == (2, 1)
