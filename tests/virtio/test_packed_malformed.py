"""Every class of malformed packed-ring input becomes a PeerSpecViolation naming the broken requirement.

Each case builds a valid ring with the reference driver (or writes descriptors by hand), corrupts guest
memory the way a broken driver (or device) would, and checks the other side's verdict: the requirement,
the role it binds, and that the side then stays in ERROR. Nothing else may escape.
"""

import pytest

from refmodel.errors import BrokenSide, LayoutError, LocalSpecViolation, PeerSpecViolation
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import SCRUB_ID, IndirectArena, PackedQueueDriver
from refmodel.virtio.packed.events import EventSuppress, pack_notification
from refmodel.virtio.packed.layout import (PDESC_FMT, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT,
                                           VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE,
                                           avail_flags, place, used_flags)
from refmodel.virtio.virtq import QueueAddresses

QS = 4
MEM = 1 << 16
BUF = 0x8000
TABLE = 0xA000
A = VIRTQ_DESC_F_AVAIL  # lap 1 (wrap counter 1): available = AVAIL alone, used = AVAIL | USED
U = VIRTQ_DESC_F_USED


def pair(qs=QS, indirect=True, event_idx=False, **drv_kw):
    mem = GuestMemory(MEM)
    a = place(0x100, qs)
    drv = PackedQueueDriver(mem, a, qs, indirect_desc=indirect, event_idx=event_idx,
                            indirect_arena=IndirectArena(0xC000, 0x1000), **drv_kw)
    dev = PackedQueueDevice(mem, a, qs, indirect_desc=indirect, event_idx=event_idx,
                            check_driver_writes=drv_kw.get("check_device_writes", False))
    return mem, a, drv, dev


def desc(mem, a, off, addr, length, flags, buf_id=0, table=None):
    mem.pack(PDESC_FMT, (a.desc if table is None else table) + 16 * off, addr, length, buf_id, flags)


def raises(call, req_id, role):
    with pytest.raises(PeerSpecViolation) as exc:
        call()
    assert exc.value.req_id == req_id, str(exc.value)
    assert exc.value.role == role
    with pytest.raises(BrokenSide):  # the side stays in ERROR
        call()
    return exc.value


def expect(dev, req_id):
    return raises(dev.pop, req_id, "driver")


def expect_harvest(drv, req_id):
    return raises(drv.harvest, req_id, "device")


def used_one(**kw):
    """A published list of one readable and one writable element, popped by the device."""
    mem, a, drv, dev = pair(**kw)
    buf_id = drv.add([(BUF, 16)], [(BUF + 0x100, 16)], token="t")
    drv.publish()
    chain = dev.pop()
    return mem, a, drv, dev, buf_id, chain


# -- the device judges the driver --------------------------------------------------------------------------
@pytest.mark.verifies("PACKED-DRV-D2")
def test_head_marked_like_a_used_descriptor():
    mem, a, drv, dev = pair()
    desc(mem, a, 0, BUF, 16, A | U)
    expect(dev, "PACKED-DRV-D2")


@pytest.mark.verifies("PACKED-DRV-D2")
def test_later_descriptor_with_wrong_wrap_flags():
    mem, a, drv, dev = pair()
    desc(mem, a, 1, BUF, 16, A | U)
    desc(mem, a, 0, BUF, 16, A | VIRTQ_DESC_F_NEXT)
    expect(dev, "PACKED-DRV-D2")


@pytest.mark.verifies("PACKED-DRV-D2")
def test_second_lap_uses_the_flipped_counter():
    # Positions 4.. are lap 2 (wrap counter 0): AVAIL alone there means "not available", not "available".
    mem, a, drv, dev = pair()
    for _ in range(QS):
        drv.add([(BUF, 16)])
    drv.publish()
    for c in [dev.pop() for _ in range(QS)]:
        dev.add_used(c.head, 0)
    assert len(drv.harvest()) == QS and dev.pop() is None
    desc(mem, a, 0, BUF, 16, A)  # lap 1's available pattern, stale in lap 2: not available
    assert dev.pop() is None
    desc(mem, a, 0, BUF, 16, 0)  # AVAIL == USED == 0 == the lap 2 counter: looks used
    expect(dev, "PACKED-DRV-D2")


@pytest.mark.verifies("PACKED-DRV-11")
def test_first_descriptor_available_before_the_rest():
    mem, a, drv, dev = pair()
    desc(mem, a, 1, BUF, 16, 0)  # still zero-initialized
    desc(mem, a, 0, BUF, 16, A | VIRTQ_DESC_F_NEXT)
    expect(dev, "PACKED-DRV-11")


@pytest.mark.verifies("PACKED-DRV-7")
def test_list_round_the_whole_ring():
    mem, a, drv, dev = pair()
    for off in range(QS):
        desc(mem, a, off, BUF, 16, A | VIRTQ_DESC_F_NEXT)
    expect(dev, "PACKED-DRV-7")


@pytest.mark.verifies("PACKED-DRV-10")
def test_list_runs_into_descriptors_in_flight():
    mem, a, drv, dev = pair()
    drv.add([(BUF, 16), (BUF, 16)])
    drv.publish()
    assert dev.pop() is not None  # offsets 0 and 1 in flight
    desc(mem, a, 2, BUF, 16, A | VIRTQ_DESC_F_NEXT)
    desc(mem, a, 3, BUF, 16, A | VIRTQ_DESC_F_NEXT)  # next would be offset 0 again, in flight
    expect(dev, "PACKED-DRV-10")


@pytest.mark.verifies("PACKED-DRV-10")
def test_descriptor_made_available_over_one_in_flight():
    mem, a, drv, dev = pair()
    for _ in range(QS):
        drv.add([(BUF, 16)])
    drv.publish()
    for _ in range(QS):
        dev.pop()
    desc(mem, a, 0, BUF, 16, U)  # lap 2's available pattern on a slot the device still holds
    expect(dev, "PACKED-DRV-10")


@pytest.mark.verifies("PACKED-DRV-12")
def test_indirect_not_negotiated():
    mem, a, drv, dev = pair(indirect=False)
    desc(mem, a, 0, TABLE, 16, A | VIRTQ_DESC_F_INDIRECT)
    expect(dev, "PACKED-DRV-12")


@pytest.mark.verifies("PACKED-DRV-15")
@pytest.mark.parametrize("layout", ["INDIRECT|NEXT", "NEXT then INDIRECT"])
def test_indirect_in_a_next_list(layout):
    mem, a, drv, dev = pair()
    desc(mem, a, 0, TABLE, 0, 0, table=TABLE)
    if layout == "INDIRECT|NEXT":
        desc(mem, a, 1, BUF, 16, A)
        desc(mem, a, 0, TABLE, 16, A | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT)
    else:
        desc(mem, a, 1, TABLE, 16, A | VIRTQ_DESC_F_INDIRECT)
        desc(mem, a, 0, BUF, 16, A | VIRTQ_DESC_F_NEXT)
    expect(dev, "PACKED-DRV-15")


@pytest.mark.verifies("PACKED-DRV-D7")
@pytest.mark.parametrize("length", [0, 8, 24])
def test_indirect_table_of_bad_length(length):
    mem, a, drv, dev = pair()
    desc(mem, a, 0, TABLE, length, A | VIRTQ_DESC_F_INDIRECT)
    expect(dev, "PACKED-DRV-D7")


@pytest.mark.verifies("PACKED-DRV-14")
def test_indirect_table_longer_than_queue_size():
    mem, a, drv, dev = pair()
    for i in range(QS + 1):
        desc(mem, a, i, BUF, 16, 0, table=TABLE)
    desc(mem, a, 0, TABLE, 16 * (QS + 1), A | VIRTQ_DESC_F_INDIRECT)
    expect(dev, "PACKED-DRV-14")


@pytest.mark.verifies("PACKED-DRV-13")
@pytest.mark.parametrize("inner", [VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_AVAIL, 0x40])
def test_flag_other_than_write_inside_an_indirect_table(inner):
    mem, a, drv, dev = pair()
    desc(mem, a, 0, BUF, 16, VIRTQ_DESC_F_WRITE, table=TABLE)
    desc(mem, a, 1, BUF, 16, VIRTQ_DESC_F_WRITE | inner, table=TABLE)
    desc(mem, a, 0, TABLE, 32, A | VIRTQ_DESC_F_INDIRECT)
    expect(dev, "PACKED-DRV-13")


@pytest.mark.verifies("PACKED-DRV-D4")
@pytest.mark.parametrize("addr, length", [(MEM, 1), (MEM - 8, 16), (2**64 - 8, 16),
                                          (0xFFFFFFFFFFFFF000, 0x2000)])
def test_element_outside_guest_memory_or_wrapping(addr, length):
    mem, a, drv, dev = pair()
    desc(mem, a, 0, addr, length, A)
    expect(dev, "PACKED-DRV-D4")


@pytest.mark.verifies("PACKED-DRV-D4")
@pytest.mark.parametrize("where", ["table", "entry"])
def test_indirect_table_or_its_entry_outside_memory(where):
    mem, a, drv, dev = pair()
    if where == "table":
        desc(mem, a, 0, MEM - 16, 32, A | VIRTQ_DESC_F_INDIRECT)
    else:
        desc(mem, a, 0, MEM - 4, 16, 0, table=TABLE)
        desc(mem, a, 0, TABLE, 16, A | VIRTQ_DESC_F_INDIRECT)
    expect(dev, "PACKED-DRV-D4")


@pytest.mark.verifies("PACKED-DRV-8")
@pytest.mark.parametrize("indirect", [False, True])
def test_readable_after_writable(indirect):
    mem, a, drv, dev = pair()
    if indirect:
        desc(mem, a, 0, BUF, 16, VIRTQ_DESC_F_WRITE, table=TABLE)
        desc(mem, a, 1, BUF, 16, 0, table=TABLE)
        desc(mem, a, 0, TABLE, 32, A | VIRTQ_DESC_F_INDIRECT)
    else:
        desc(mem, a, 1, BUF, 16, A)
        desc(mem, a, 0, BUF, 16, A | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT)
    expect(dev, "PACKED-DRV-8")


@pytest.mark.verifies("PACKED-DRV-D13")
def test_buffer_longer_than_4gib():
    # Over 4 GiB of real buffers is too much memory for a test: the device sees a memory whose bounds
    # check accepts anything above 0x8000, backed by a small buffer.
    small = GuestMemory(MEM)
    a = place(0x100, QS)

    class Huge(GuestMemory):
        def contains(self, addr, length):
            return addr >= 0x8000 and length >= 0 or super().contains(addr, length)

    dev = PackedQueueDevice(Huge(buffer=small._buf), a, QS)
    desc(small, a, 1, 0x8000, 0x10, A)
    desc(small, a, 0, 0x8000, 0xFFFFFFFF, A | VIRTQ_DESC_F_NEXT)
    expect(dev, "PACKED-DRV-D13")


@pytest.mark.verifies("PACKED-DRV-D5")
def test_buffer_id_reused_while_in_flight():
    mem, a, drv, dev, buf_id, chain = used_one()
    desc(mem, a, 2, BUF, 16, A, buf_id=buf_id)
    expect(dev, "PACKED-DRV-D5")


@pytest.mark.verifies("PACKED-DRV-D5")
def test_available_counts_refuse_a_duplicate_id():
    mem, a, drv, dev = pair()
    desc(mem, a, 0, BUF, 16, A, buf_id=7)
    desc(mem, a, 1, BUF, 16, A, buf_id=7)
    raises(dev.available, "PACKED-DRV-D5", "driver")


@pytest.mark.verifies("PACKED-DRV-1", "PACKED-DRV-D1")
def test_misplaced_parts():
    mem = GuestMemory(MEM)
    good = place(0x100, QS)
    for addrs, req in ((QueueAddresses(good.desc + 8, good.avail, good.used), "PACKED-DRV-1"),
                       (QueueAddresses(good.desc, good.avail + 2, good.used), "PACKED-DRV-1"),
                       (QueueAddresses(good.desc, good.avail, MEM), "PACKED-DRV-D1"),
                       (QueueAddresses(MEM - 16, good.avail, good.used), "PACKED-DRV-D1")):
        with pytest.raises(PeerSpecViolation) as exc:
            PackedQueueDevice(mem, addrs, QS)
        assert exc.value.req_id == req
        with pytest.raises(LocalSpecViolation) as exc:
            PackedQueueDriver(mem, addrs, QS)
        assert exc.value.req_id == req


@pytest.mark.verifies("PACKED-DRV-D8")
@pytest.mark.parametrize("event_idx, flags, off, why", [
    (False, 0x3, 0, "reserved"), (True, 0x3, 0, "reserved"), (False, 0x2, 0, "without VIRTIO_F_EVENT_IDX"),
    (True, 0x2 | 0x4, 0, "reserved flag bits"), (True, 0x2, QS, "outside a ring"),
    (False, 0x1 | 0x8000, 0, "reserved"),
])
def test_bad_driver_event_suppression(event_idx, flags, off, why):
    mem, a, drv, dev, buf_id, chain = used_one(event_idx=event_idx)
    EventSuppress(flags & 3, off, 0, flags >> 2).write(mem, a.avail)
    dev.add_used(buf_id, 0)
    assert why in str(raises(dev.notify_needed, "PACKED-DRV-D8", "driver"))


@pytest.mark.verifies("PACKED-DRV-2")
def test_driver_changes_a_descriptor_in_flight():
    mem, a, drv, dev, buf_id, chain = used_one(check_device_writes=True)
    desc(mem, a, 1, BUF + 0x200, 16, A | VIRTQ_DESC_F_WRITE, buf_id=buf_id)  # the list's second element
    raises(lambda: dev.add_used(buf_id, 0), "PACKED-DRV-2", "driver")


@pytest.mark.verifies("PACKED-DRV-D9")
def test_driver_writes_the_device_area():
    mem, a, drv, dev = pair(check_device_writes=True)
    dev.set_avail_notifications(False)
    mem.write_u16(a.used + 2, 0)
    expect(dev, "PACKED-DRV-D9")


@pytest.mark.verifies("PACKED-DRV-4", "PACKED-DRV-D14")
def test_notification_data():
    mem, a, drv, dev = pair(qs=3)
    drv.add([(BUF, 16)])
    drv.publish()
    drv.add([(BUF, 16)] * 2)  # pending: offset 1 holds its first descriptor, not yet available
    data = drv.notification_data(5)
    assert data == pack_notification(5, 1, 1)
    dev.check_notification_data(data, 5)
    drv.publish()  # now the next is offset 0 of lap 2 (wrap counter 0)
    assert drv.notification_data(5) == pack_notification(5, 0, 0)
    dev.check_notification_data(drv.notification_data(5), 5)
    raises(lambda: dev.check_notification_data(data, 5), "PACKED-DRV-4", "driver")
    _, _, drv, dev = pair(qs=3)
    raises(lambda: dev.check_notification_data(drv.notification_data(1), 2), "PACKED-DRV-D14", "driver")


# -- what the device must ignore ------------------------------------------------------------------------
@pytest.mark.verifies("PACKED-DEV-D5", "PACKED-DEV-D6")
def test_device_ignores_table_ids_and_write_on_the_indirect_descriptor():
    mem, a, drv, dev = pair()
    desc(mem, a, 0, BUF, 16, 0, buf_id=0xBEEF, table=TABLE)
    desc(mem, a, 1, BUF + 16, 8, VIRTQ_DESC_F_WRITE, buf_id=0x1234, table=TABLE)
    desc(mem, a, 0, TABLE, 32, A | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, buf_id=3)
    c = dev.pop()
    got = (c.head, c.indirect, [(b.addr, b.len) for b in c.readable], [(b.addr, b.len) for b in c.writable])
    assert got == (3, True, [(BUF, 16)], [(BUF + 16, 8)])


@pytest.mark.verifies("PACKED-DEV-D12")
def test_nothing_available_is_not_an_error():
    mem, a, drv, dev = pair()
    for _ in range(3):
        assert dev.pop() is None and dev.available() == 0
    drv.add([(BUF, 16)])
    drv.publish()
    assert dev.available() == 1 and dev.pop() is not None and dev.pop() is None


def test_buffer_id_comes_from_the_last_descriptor():
    mem, a, drv, dev = pair()
    desc(mem, a, 1, BUF, 16, A | VIRTQ_DESC_F_WRITE, buf_id=9)
    desc(mem, a, 0, BUF, 16, A | VIRTQ_DESC_F_NEXT, buf_id=1)
    assert dev.pop().head == 9


# -- the driver judges the device -------------------------------------------------------------------------
@pytest.mark.verifies("PACKED-DEV-D2")
@pytest.mark.parametrize("flags", [U, U | VIRTQ_DESC_F_WRITE])
def test_used_descriptor_with_avail_unlike_used(flags):
    mem, a, drv, dev, buf_id, chain = used_one()
    desc(mem, a, 0, 0, 0, flags, buf_id=buf_id)
    expect_harvest(drv, "PACKED-DEV-D2")


@pytest.mark.verifies("PACKED-DEV-D2")
def test_used_descriptor_with_the_wrong_wrap_counter():
    mem, a, drv, dev, buf_id, chain = used_one()
    desc(mem, a, 0, 0, 0, used_flags(0), buf_id=buf_id)  # lap 2's used pattern in lap 1
    expect_harvest(drv, "PACKED-DEV-D2")


@pytest.mark.verifies("PACKED-DEV-D4")
def test_used_id_not_in_flight():
    mem, a, drv, dev, buf_id, chain = used_one()
    desc(mem, a, 0, 0, 0, A | U, buf_id=buf_id + 1)
    expect_harvest(drv, "PACKED-DEV-D4")


@pytest.mark.verifies("PACKED-DEV-D4")
def test_one_buffer_used_twice():
    mem, a, drv, dev = pair()
    ids = [drv.add([(BUF, 16)]) for _ in range(2)]
    drv.publish()
    dev.pop()
    dev.pop()
    desc(mem, a, 0, 0, 0, A | U, buf_id=ids[0])
    desc(mem, a, 1, 0, 0, A | U, buf_id=ids[0])
    expect_harvest(drv, "PACKED-DEV-D4")


@pytest.mark.verifies("PACKED-DEV-D3")
def test_used_len_longer_than_writable():
    mem, a, drv, dev, buf_id, chain = used_one()
    desc(mem, a, 0, 0, 17, A | U | VIRTQ_DESC_F_WRITE, buf_id=buf_id)
    expect_harvest(drv, "PACKED-DEV-D3")


@pytest.mark.verifies("PACKED-DRV-D3", "PACKED-DRV-D6")
def test_driver_ignores_len_without_write_and_next_in_used():
    mem, a, drv, dev, buf_id, chain = used_one()
    desc(mem, a, 0, 0, 0xFFFFFFFF, A | U | VIRTQ_DESC_F_NEXT, buf_id=buf_id)
    (u,) = drv.harvest()
    assert (u.head, u.len, u.token) == (buf_id, 0, "t")
    mem, a, drv, dev, buf_id, chain = used_one(used_len_needs_write=False)  # AMB-PACKED-USED-WRITE
    desc(mem, a, 0, 0, 7, A | U, buf_id=buf_id)
    assert drv.harvest()[0].len == 7


@pytest.mark.verifies("PACKED-DEV-6", "PACKED-DEV-1")
@pytest.mark.parametrize("which, req", [(0, "PACKED-DEV-6"), (1, "PACKED-DEV-1")])
def test_device_uses_a_buffer_not_yet_made_available(which, req):
    mem, a, drv, dev = pair()
    first = drv.add([(BUF, 16)])
    drv.publish()
    pending = [drv.add([(BUF, 16)]), drv.add([(BUF, 16)])]  # offset 1 keeps its old flags until publish
    desc(mem, a, 0, 0, 0, A | U, buf_id=pending[which])
    expect_harvest(drv, req)
    assert first not in pending


@pytest.mark.verifies("PACKED-DEV-7")
def test_used_flags_written_before_the_buffer_id():
    mem, a, drv, dev = pair(scrub_used=True)
    drv.add([(BUF, 16), (BUF, 16)])  # the first descriptor carries SCRUB_ID, the last the real ID
    drv.publish()
    dev.pop()
    assert mem.unpack(PDESC_FMT, a.desc)[2] == SCRUB_ID
    mem.write_u16(a.desc + 14, A | U)  # flags only
    expect_harvest(drv, "PACKED-DEV-7")


@pytest.mark.verifies("PACKED-DEV-7")
def test_device_changes_a_used_descriptor_after_marking_it():
    mem, a, drv, dev, buf_id, chain = used_one(check_device_writes=True)
    dev.add_used(buf_id, 4)
    assert len(drv.harvest()) == 1
    mem.pack(PDESC_FMT, a.desc, 0, 8, buf_id, used_flags(1) | VIRTQ_DESC_F_WRITE)
    for _ in range(2):  # fill offsets 2, 3; the next list lands on offset 0
        drv.add([(BUF, 16)])
    raises(lambda: drv.add([(BUF, 16)]), "PACKED-DEV-7", "device")


@pytest.mark.verifies("PACKED-DEV-4", "PACKED-DEV-D7")
@pytest.mark.parametrize("indirect", [False, True])
def test_device_writes_what_it_may_only_read(indirect):
    mem, a, drv, dev = pair(check_device_writes=True)
    buf_id = drv.add([(BUF, 16)], [(BUF + 0x100, 16)], indirect=indirect)
    drv.publish()
    chain = dev.pop()
    if indirect:
        table = mem.unpack(PDESC_FMT, a.desc)[0]
        mem.write(table, b"\xff")
    else:
        mem.write(chain.readable[0].addr, b"\xff")
    dev.add_used(buf_id, 0)
    expect_harvest(drv, "PACKED-DEV-D7" if indirect else "PACKED-DEV-4")


@pytest.mark.verifies("PACKED-DEV-D9")
def test_device_writes_the_driver_area():
    mem, a, drv, dev, buf_id, chain = used_one(check_device_writes=True)
    drv.set_used_notifications(False)
    mem.write_u16(a.avail + 2, 0)
    expect_harvest(drv, "PACKED-DEV-D9")


@pytest.mark.verifies("PACKED-DEV-D8")
@pytest.mark.parametrize("event_idx, flags", [(False, 3), (True, 3), (False, 2), (True, 1 | 0x10)])
def test_bad_device_event_suppression(event_idx, flags):
    mem, a, drv, dev = pair(event_idx=event_idx)
    EventSuppress(flags & 3, 0, 1, flags >> 2).write(mem, a.used)
    drv.add([(BUF, 16)])
    raises(drv.publish, "PACKED-DEV-D8", "device")


# -- our own side asking for what the spec forbids ----------------------------------------------------------
@pytest.mark.parametrize("call, req", [
    (lambda d: d.add([(BUF, 16)] * (QS + 1)), "PACKED-DRV-7"),
    (lambda d: d.add([(BUF, 16)] * (QS + 1), indirect=True), "PACKED-DRV-14"),
    (lambda d: d.add([(MEM - 8, 16)]), "PACKED-DRV-D4"),
    (lambda d: d.add([(BUF, 0xFFFFFFFF)] * 2), "PACKED-DRV-D4"),
])
def test_local_driver_refusals(call, req):
    mem, a, drv, dev = pair()
    with pytest.raises(LocalSpecViolation) as exc:
        call(drv)
    assert exc.value.req_id == req
    _, _, plain, _ = pair(indirect=False)
    with pytest.raises(LocalSpecViolation, match="PACKED-DRV-12"):
        plain.add([(BUF, 16)], indirect=True)
    with pytest.raises(LayoutError):
        pair()[2].add()


def test_local_device_refusals():
    mem, a, drv, dev, buf_id, chain = used_one()
    with pytest.raises(LocalSpecViolation, match="PACKED-DEV-D3"):
        dev.add_used(buf_id, 17)
    mem, a, drv, dev, buf_id, chain = used_one()
    with pytest.raises(LocalSpecViolation, match="PACKED-DEV-D4"):
        dev.add_used(buf_id + 1, 0)


def test_avail_flags_used_by_the_reference_driver():
    # PACKED-DRV-D2 from the driver's side: every descriptor of a list carries the lap's pattern.
    mem, a, drv, dev = pair(qs=3, start_idx=2)
    drv.add([(BUF, 16)] * 2)  # offsets 2 (lap 1) and 0 (lap 2)
    drv.publish()
    assert mem.unpack(PDESC_FMT, a.desc + 32)[3] & (A | U) == avail_flags(1)
    assert mem.unpack(PDESC_FMT, a.desc)[3] & (A | U) == avail_flags(0)
