"""Notification decisions with and without VIRTIO_F_EVENT_IDX (§2.7.7, §2.7.10, Appendix A)."""

import pytest
from hypothesis import given, strategies as st

from refmodel.errors import PeerSpecViolation
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import QueueAddresses, u16, virtq_need_event
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver


@given(event=st.integers(0, 0xFFFF), old=st.integers(0, 0xFFFF), step=st.integers(1, 0x7FFF))
def test_need_event_means_event_crossed(event, old, step):
    new = u16(old + step)
    crossed = any(u16(old + k) == event for k in range(step))  # entries placed at idx old..new-1
    assert virtq_need_event(event, new, old) == crossed


def test_used_event_zero_example():
    # §2.7.7 note: used_event 0 means notify after the first buffer, then only after the 65536th.
    assert virtq_need_event(0, 1, 0)
    assert not virtq_need_event(0, 2, 1)
    assert virtq_need_event(0, 1, 0xFFFF + 1 & 0xFFFF)


def setup(event_idx, start=0):
    mem = GuestMemory(1 << 16)
    a = QueueAddresses.packed_at(0x100, 8)
    drv = SplitQueueDriver(mem, a, 8, event_idx=event_idx, start_idx=start)
    dev = SplitQueueDevice(mem, a, 8, event_idx=event_idx, start_idx=start)
    return mem, a, drv, dev


def one_used(drv, dev):
    drv.add([(0x8000, 4)], [(0x9000, 4)])
    drv.publish()
    c = dev.pop()
    dev.add_used(c.head, 0)
    return dev.notify_needed()


@pytest.mark.verifies("SPLIT-DEV-10", "SPLIT-DEV-9")
def test_device_follows_avail_flags_without_event_idx():
    mem, a, drv, dev = setup(False)
    assert one_used(drv, dev)
    drv.set_used_notifications(False)
    assert not one_used(drv, dev)


@pytest.mark.verifies("SPLIT-DEV-12", "SPLIT-DEV-13")
@pytest.mark.parametrize("start", [0, 65533])
def test_device_follows_used_event(start):
    mem, a, drv, dev = setup(True, start)
    drv.set_used_notifications(True)  # used_event = next used idx
    assert one_used(drv, dev)
    assert not one_used(drv, dev)  # used_event not moved: no second notification
    drv.harvest()
    drv.set_used_notifications(True)
    assert one_used(drv, dev)


@pytest.mark.verifies("SPLIT-DRV-21", "SPLIT-DRV-20")
def test_driver_follows_used_flags_without_event_idx():
    mem, a, drv, dev = setup(False)
    drv.add([(0x8000, 4)])
    assert drv.publish()
    dev.set_avail_notifications(False)
    drv.add([(0x8000, 4)])
    assert not drv.publish()


@pytest.mark.verifies("SPLIT-DRV-23", "SPLIT-DRV-24")
def test_driver_follows_avail_event():
    mem, a, drv, dev = setup(True, 65534)
    dev.set_avail_notifications(True)  # avail_event = device's next avail idx
    drv.add([(0x8000, 4)])
    drv.add([(0x8010, 4)])
    assert drv.publish()  # batch of two crosses avail_event
    drv.add([(0x8020, 4)])
    assert not drv.publish()  # avail_event not moved by the device


@pytest.mark.verifies("SPLIT-DRV-12", "SPLIT-DRV-14")
@pytest.mark.parametrize("event_idx, flags, req", [(False, 3, "SPLIT-DRV-12"), (True, 2, "SPLIT-DRV-14")])
def test_device_rejects_bad_avail_flags(event_idx, flags, req):
    mem, a, drv, dev = setup(event_idx)
    drv.add([(0x8000, 4)], [(0x9000, 4)])
    drv.publish()
    dev.add_used(dev.pop().head, 0)
    mem.write_u16(a.avail, flags)
    with pytest.raises(PeerSpecViolation, match=req):
        dev.notify_needed()


@pytest.mark.verifies("SPLIT-DEV-11")
def test_device_ignores_low_flag_bit_with_event_idx():
    mem, a, drv, dev = setup(True)
    drv.set_used_notifications(True)
    mem.write_u16(a.avail, 1)  # a driver breaking SPLIT-DRV-14 would be caught above; bit 0 alone is ignored
    drv.add([(0x8000, 4)], [(0x9000, 4)])
    drv.publish()
    dev.add_used(dev.pop().head, 0)
    assert dev.notify_needed()
