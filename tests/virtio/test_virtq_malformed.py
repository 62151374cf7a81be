"""Every class of malformed ring input becomes a PeerSpecViolation naming the broken requirement.

Each case builds a valid chain with the reference driver, corrupts guest memory the way a broken
driver (or device) would, and checks the other side's verdict. Nothing else may escape.
"""

import pytest
from hypothesis import given, strategies as st

from refmodel.virtio.constants import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE
from refmodel.errors import BrokenSide, LocalSpecViolation, PeerSpecViolation
from refmodel.virtio.split.layout import DESC_FMT, USED_ELEM_FMT, used_ring_entry
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import QueueAddresses
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import IndirectArena, SplitQueueDriver

QS = 4
MEM = 1 << 16
BUF = 0x8000
TABLE = 0xA000


def pair(indirect=True, event_idx=False, scrub=False, qs=QS, check_writes=False):
    mem = GuestMemory(MEM)
    a = QueueAddresses.packed_at(0x100, qs)
    drv = SplitQueueDriver(mem, a, qs, indirect_desc=indirect, event_idx=event_idx, scrub_used=scrub,
                           indirect_arena=IndirectArena(0xC000, 0x1000), check_device_writes=check_writes)
    dev = SplitQueueDevice(mem, a, qs, indirect_desc=indirect, event_idx=event_idx)
    return mem, a, drv, dev


def desc(mem, a, i, addr, length, flags, nxt=0, table=None):
    mem.pack(DESC_FMT, (a.desc if table is None else table) + 16 * i, addr, length, flags, nxt)


def expect(dev, req_id):
    with pytest.raises(PeerSpecViolation) as exc:
        dev.pop()
    assert exc.value.req_id == req_id, str(exc.value)
    assert exc.value.role == "driver"
    with pytest.raises(BrokenSide):  # the device stays in ERROR
        dev.pop()


def published(n_read=1, n_write=0, **kw):
    mem, a, drv, dev = pair(**kw)
    head = drv.add([(BUF + 16 * i, 16) for i in range(n_read)], [(BUF + 0x100 + 16 * i, 16) for i in range(n_write)])
    drv.publish()
    return mem, a, drv, dev, head


@pytest.mark.verifies("SPLIT-DRV-4")
def test_descriptor_loop():
    mem, a, drv, dev, head = published(n_read=2)
    second = (head + 1) % QS
    desc(mem, a, head, BUF, 16, VIRTQ_DESC_F_NEXT, second)
    desc(mem, a, second, BUF, 16, VIRTQ_DESC_F_NEXT, head)
    expect(dev, "SPLIT-DRV-4")


@pytest.mark.verifies("SPLIT-DRV-4")
def test_self_loop_in_indirect_table():
    mem, a, drv, dev, head = published()
    desc(mem, a, head, TABLE, 32, VIRTQ_DESC_F_INDIRECT)
    desc(mem, a, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1, table=TABLE)
    desc(mem, a, 1, BUF, 16, VIRTQ_DESC_F_NEXT, 0, table=TABLE)
    expect(dev, "SPLIT-DRV-4")


@pytest.mark.verifies("SPLIT-DRV-8")
def test_indirect_table_longer_than_queue_size():
    mem, a, drv, dev, head = published()
    desc(mem, a, head, TABLE, 16 * (QS + 1), VIRTQ_DESC_F_INDIRECT)
    expect(dev, "SPLIT-DRV-8")


@pytest.mark.verifies("SPLIT-DRV-D1")
@pytest.mark.parametrize("addr, length", [(MEM, 1), (MEM - 8, 16), (2**64 - 8, 16), (0xFFFFFFFFFFFFF000, 0x2000)])
def test_buffer_outside_guest_memory_or_wrapping(addr, length):
    mem, a, drv, dev, head = published()
    desc(mem, a, head, addr, length, 0)
    expect(dev, "SPLIT-DRV-D1")


@pytest.mark.verifies("SPLIT-DRV-D1")
def test_indirect_table_outside_memory():
    mem, a, drv, dev, head = published()
    desc(mem, a, head, MEM - 16, 32, VIRTQ_DESC_F_INDIRECT)
    expect(dev, "SPLIT-DRV-D1")


@pytest.mark.verifies("SPLIT-DRV-4")
def test_chain_longer_than_4gib():
    # Over 4 GiB of real buffers is too much memory for a test: the device sees a memory whose
    # bounds check accepts anything above 0x8000, backed by a small buffer.
    big = GuestMemory(1 << 16)
    a = QueueAddresses.packed_at(0x100, QS)

    class Huge(GuestMemory):
        def contains(self, addr, length):
            return addr >= 0x8000 and length >= 0 or super().contains(addr, length)

    huge = Huge(buffer=big._buf)
    dev = SplitQueueDevice(huge, a, QS)
    desc(big, a, 0, 0x8000, 0xFFFFFFFF, VIRTQ_DESC_F_NEXT, 1)
    desc(big, a, 1, 0x8000, 0x10, 0)
    big.write_u16(a.avail + 4, 0)
    big.write_u16(a.avail + 2, 1)
    expect(dev, "SPLIT-DRV-4")


@pytest.mark.verifies("SPLIT-DRV-7")
def test_nested_indirect():
    mem, a, drv, dev, head = published()
    desc(mem, a, head, TABLE, 16, VIRTQ_DESC_F_INDIRECT)
    desc(mem, a, 0, TABLE + 0x100, 16, VIRTQ_DESC_F_INDIRECT, table=TABLE)
    expect(dev, "SPLIT-DRV-7")


@pytest.mark.verifies("SPLIT-DRV-D4")
@pytest.mark.parametrize("length", [0, 8, 17, 40])
def test_indirect_table_bad_length(length):
    mem, a, drv, dev, head = published()
    desc(mem, a, head, TABLE, length, VIRTQ_DESC_F_INDIRECT)
    expect(dev, "SPLIT-DRV-D4")


@pytest.mark.verifies("SPLIT-DRV-9")
def test_indirect_with_next():
    mem, a, drv, dev, head = published()
    desc(mem, a, head, TABLE, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1)
    expect(dev, "SPLIT-DRV-9")


@pytest.mark.verifies("SPLIT-DRV-6")
def test_indirect_without_feature():
    mem, a, drv, dev, head = published(indirect=False)
    desc(mem, a, head, TABLE, 16, VIRTQ_DESC_F_INDIRECT)
    expect(dev, "SPLIT-DRV-6")


@pytest.mark.verifies("SPLIT-DRV-2")
def test_writable_before_readable():
    mem, a, drv, dev, head = published(n_read=1, n_write=1)
    second = (head + 1) % QS
    desc(mem, a, head, BUF, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, second)
    desc(mem, a, second, BUF + 16, 16, 0)
    expect(dev, "SPLIT-DRV-2")


@pytest.mark.verifies("SPLIT-DRV-2", "SPLIT-DEV-7")
def test_writable_before_readable_across_indirect_boundary():
    mem, a, drv, dev, head = published(n_read=1, n_write=1)
    second = (head + 1) % QS
    desc(mem, a, head, BUF, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, second)
    desc(mem, a, second, TABLE, 16, VIRTQ_DESC_F_INDIRECT)
    desc(mem, a, 0, BUF + 16, 16, 0, table=TABLE)
    expect(dev, "SPLIT-DRV-2")


@pytest.mark.verifies("SPLIT-DRV-D3", "SPLIT-DRV-11")
@pytest.mark.parametrize("idx, req", [(QS + 1, "SPLIT-DRV-D3"), (0x7FFF, "SPLIT-DRV-D3"),
                                      (0x8000, "SPLIT-DRV-11"), (0xFFFF, "SPLIT-DRV-11")])
def test_avail_idx_overrun_or_decrement(idx, req):
    mem, a, drv, dev, head = published()
    mem.write_u16(a.avail + 2, idx)
    expect(dev, req)


@pytest.mark.verifies("SPLIT-DRV-D2")
def test_head_out_of_range():
    mem, a, drv, dev, head = published()
    mem.write_u16(a.avail + 4, QS)
    expect(dev, "SPLIT-DRV-D2")


@pytest.mark.verifies("SPLIT-DRV-D2")
def test_next_out_of_range():
    mem, a, drv, dev, head = published()
    desc(mem, a, head, BUF, 16, VIRTQ_DESC_F_NEXT, 0xFFFF)
    expect(dev, "SPLIT-DRV-D2")


@pytest.mark.verifies("SPLIT-DRV-D6")
def test_in_flight_head_made_available_again():
    mem, a, drv, dev, head = published()
    assert dev.pop().head == head
    mem.write_u16(a.avail + 4 + 2, head)
    mem.write_u16(a.avail + 2, 2)
    expect(dev, "SPLIT-DRV-D6")


@pytest.mark.verifies("SPLIT-DEV-6", "SPLIT-DEV-7")
def test_indirect_write_flag_ignored_and_chained_prefix_accepted():
    mem, a, drv, dev, head = published(n_read=2)
    second = (head + 1) % QS
    desc(mem, a, head, BUF, 4, VIRTQ_DESC_F_NEXT, second)
    desc(mem, a, second, TABLE, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE)
    desc(mem, a, 0, BUF + 4, 4, VIRTQ_DESC_F_NEXT, 1, table=TABLE)
    desc(mem, a, 1, BUF + 0x100, 8, VIRTQ_DESC_F_WRITE, table=TABLE)
    chain = dev.pop()
    assert [b.len for b in chain.readable] == [4, 4] and [b.len for b in chain.writable] == [8]


@pytest.mark.verifies("SPLIT-DRV-1", "SPLIT-DRV-D5")
def test_ring_placement_checked_on_both_sides():
    mem = GuestMemory(MEM)
    bad = QueueAddresses(0x108, 0x1000, 0x2000)
    with pytest.raises(LocalSpecViolation, match="SPLIT-DRV-1"):
        SplitQueueDriver(mem, bad, QS)
    with pytest.raises(PeerSpecViolation, match="SPLIT-DRV-1"):
        SplitQueueDevice(mem, bad, QS)
    with pytest.raises(PeerSpecViolation, match="SPLIT-DRV-D5"):
        SplitQueueDevice(mem, QueueAddresses(0x100, MEM - 2, 0x2000), QS)


# --- the driver side reading a broken device's used ring ------------------------------------------------

def used_one(scrub=False):
    mem, a, drv, dev = pair(scrub=scrub)
    drv.add([(BUF, 16)], [(BUF + 0x100, 16)], token="t")
    drv.publish()
    chain = dev.pop()
    return mem, a, drv, dev, chain


def expect_device(drv, req_id):
    with pytest.raises(PeerSpecViolation) as exc:
        drv.harvest()
    assert exc.value.req_id == req_id and exc.value.role == "device", str(exc.value)


@pytest.mark.verifies("SPLIT-DEV-D1")
def test_used_id_not_in_flight():
    mem, a, drv, dev, chain = used_one()
    mem.pack(USED_ELEM_FMT, a.used + used_ring_entry(0), chain.head + 1, 0)
    mem.write_u16(a.used + 2, 1)
    expect_device(drv, "SPLIT-DEV-D1")


@pytest.mark.verifies("SPLIT-DEV-D2")
def test_used_len_beyond_writable():
    mem, a, drv, dev, chain = used_one()
    mem.pack(USED_ELEM_FMT, a.used + used_ring_entry(0), chain.head, 17)
    mem.write_u16(a.used + 2, 1)
    expect_device(drv, "SPLIT-DEV-D2")


@pytest.mark.verifies("SPLIT-DEV-D3")
def test_used_idx_jumps():
    mem, a, drv, dev, chain = used_one()
    mem.write_u16(a.used + 2, 3)
    expect_device(drv, "SPLIT-DEV-D3")


@pytest.mark.verifies("SPLIT-DEV-14")
def test_used_idx_published_before_element():
    mem, a, drv, dev, chain = used_one(scrub=True)
    mem.write_u16(a.used + 2, 1)  # idx first, element never written
    expect_device(drv, "SPLIT-DEV-14")


@pytest.mark.verifies("SPLIT-DEV-17", "SPLIT-DEV-19")
@pytest.mark.parametrize("event_idx, flags, req", [(False, 2, "SPLIT-DEV-17"), (True, 1, "SPLIT-DEV-19")])
def test_used_flags_checked_when_deciding_to_notify(event_idx, flags, req):
    mem, a, drv, dev = pair(event_idx=event_idx)
    mem.write_u16(a.used, flags)
    drv.add([(BUF, 16)])
    with pytest.raises(PeerSpecViolation, match=req):
        drv.publish()


# --- no other exception, whatever the driver wrote -------------------------------------------------------

@given(table=st.binary(min_size=16 * QS, max_size=16 * QS), ring=st.binary(min_size=2 * QS, max_size=2 * QS),
       idx=st.integers(0, 0xFFFF), indirect=st.booleans(), pops=st.integers(1, 6))
def test_garbage_rings_give_chains_or_peer_violations(table, ring, idx, indirect, pops):
    mem = GuestMemory(MEM)
    a = QueueAddresses.packed_at(0x100, QS)
    dev = SplitQueueDevice(mem, a, QS, indirect_desc=indirect)
    mem.write(a.desc, table)
    mem.write(a.avail + 4, ring)
    mem.write_u16(a.avail + 2, idx)
    for _ in range(pops):
        try:
            chain = dev.pop()
        except PeerSpecViolation as e:
            assert e.role == "driver"
            return
        if chain is None:
            return
        assert all(mem.contains(b.addr, b.len) for b in chain.readable + chain.writable)
        assert chain.readable_len + chain.writable_len <= 1 << 32


@given(elems=st.binary(min_size=8 * QS, max_size=8 * QS), idx=st.integers(0, 0xFFFF), flags=st.integers(0, 0xFFFF))
def test_garbage_used_ring_gives_buffers_or_peer_violations(elems, idx, flags):
    mem, a, drv, dev = pair()
    for i in range(2):
        drv.add([(BUF + 16 * i, 16)], [(BUF + 0x100 + 16 * i, 16)], token=i)
    mem.write(a.used + 4, elems)
    mem.write_u16(a.used + 2, idx)
    mem.write_u16(a.used, flags)
    try:
        got = drv.harvest()
        drv.publish()
    except PeerSpecViolation as e:
        assert e.role == "device"
        return
    assert len({u.head for u in got}) == len(got)


@pytest.mark.verifies("SPLIT-DEV-5", "SPLIT-DEV-3")
@pytest.mark.parametrize("target, req", [("desc", "SPLIT-DEV-5"), ("readable", "SPLIT-DEV-3")])
def test_device_writes_it_must_not_make(target, req):
    mem, a, drv, dev = pair(check_writes=True)
    mem.write(BUF, b"payload!")
    drv.add([(BUF, 8)], [(BUF + 0x100, 8)])
    drv.publish()
    chain = dev.pop()
    if target == "desc":
        mem.write_u32(a.desc + 16 * chain.head + 8, 9)  # a device rewriting len
    else:
        mem.write(BUF, b"PAYLOAD!")  # a device writing a device-readable buffer
    dev.add_used(chain.head, 0)
    expect_device(drv, req)


def test_untouched_chain_passes_the_write_check():
    mem, a, drv, dev = pair(check_writes=True)
    drv.add([(BUF, 8)], [(BUF + 0x100, 8)], token=1)
    drv.publish()
    chain = dev.pop()
    chain.write_all(mem, b"12345678")
    dev.add_used(chain.head, 8)
    assert [u.token for u in drv.harvest()] == [1]
