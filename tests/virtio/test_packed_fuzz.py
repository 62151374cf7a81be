"""Arbitrary ring bytes never crash either side of a packed ring: the device's pop gives only chains, None
or PeerSpecViolation; the driver's harvest gives only used buffers or PeerSpecViolation. After a
violation the side answers BrokenSide, and nothing else."""

import struct

from hypothesis import event, given, strategies as st

from refmodel.errors import BrokenSide, PeerSpecViolation
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import IndirectArena, PackedQueueDriver, QueueFull
from refmodel.virtio.packed.layout import (VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
                                           VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE, avail_flags, place, wrap_of)
from refmodel.virtio.virtq import Chain, UsedBuffer

MEM = 0x10000
RING = 0x100
TABLES = 0x8000  # indirect tables and buffers live from here
BITS = (VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED)

flags_st = st.one_of(st.integers(0, 0xFFFF),
                     st.lists(st.sampled_from(BITS), max_size=4).map(lambda bs: sum(set(bs))))
addr_st = st.one_of(st.integers(TABLES, MEM - 1), st.sampled_from([0, MEM, MEM - 8, 2**64 - 16]),
                    st.integers(0, 2**64 - 1))
len_st = st.one_of(st.integers(0, 64), st.sampled_from([16, 32, 48, 0xFFFFFFFF]), st.integers(0, 2**32 - 1))
pack = lambda t: struct.pack("<QIHH", *t)  # noqa: E731
plausible = st.tuples(st.integers(TABLES, MEM - 64), st.integers(0, 48), st.integers(0, 15),
                      st.sampled_from([0, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
                                       VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE]))
table_ref = st.tuples(st.just(TABLES), st.sampled_from([16, 32, 48, 64]), st.integers(0, 15),
                      st.just(VIRTQ_DESC_F_INDIRECT))
# Mostly plausible descriptors, so deep paths run; then anything at all.
desc_st = st.one_of(plausible.map(pack), plausible.map(pack), plausible.map(pack), table_ref.map(pack),
                    st.tuples(addr_st, len_st, st.integers(0, 0xFFFF), flags_st).map(pack),
                    st.binary(min_size=16, max_size=16))


def fix_up(data, raw, qs, next_pos):
    """Mostly-valid rings find the deep paths: give the next few slots the device will poll the
    AVAIL/USED pattern of their lap (PACKED-DRV-D2), keeping every other bit as drawn."""
    out = bytearray(raw)
    for pos in range(next_pos, next_pos + data.draw(st.integers(0, qs), label="made available")):
        at = 16 * (pos % qs) + 14
        flags = struct.unpack_from("<H", out, at)[0] & ~(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED)
        struct.pack_into("<H", out, at, flags | avail_flags(wrap_of(pos, qs)))
    return bytes(out)


@given(data=st.data(), qs=st.integers(1, 9), event_idx=st.booleans(), indirect=st.booleans(),
       start=st.integers(0, 40), rounds=st.integers(1, 6))
def test_device_pop_on_arbitrary_ring(data, qs, event_idx, indirect, start, rounds):
    mem = GuestMemory(MEM)
    a = place(RING, qs)
    dev = PackedQueueDevice(mem, a, qs, event_idx=event_idx, indirect_desc=indirect, start_idx=start,
                            check_driver_writes=data.draw(st.booleans(), label="check"))
    try:
        for _ in range(rounds):
            descs = b"".join(data.draw(st.lists(desc_st, min_size=qs, max_size=qs), label="ring"))
            mem.write(a.desc, fix_up(data, descs, qs, dev.next_avail))
            mem.write(a.avail, data.draw(st.binary(min_size=4, max_size=4), label="driver area"))
            if data.draw(st.booleans(), label="touch device area"):
                mem.write(a.used, data.draw(st.binary(min_size=4, max_size=4), label="device area"))
            mem.write(TABLES, b"".join(data.draw(st.lists(desc_st, max_size=12), label="tables")))
            n = dev.available()
            assert isinstance(n, int) and 0 <= n <= qs
            for _ in range(n + 1):
                c = dev.pop()
                if c is None:
                    break
                assert isinstance(c, Chain) and dev.is_in_flight(c.head)
                event("popped a chain")
            for head in data.draw(st.permutations(sorted(dev._in_flight)), label="use order"):
                length = data.draw(st.integers(0, dev.in_flight_chain(head).writable_len), label="len")
                dev.add_used(head, length)
                assert isinstance(dev.notify_needed(), bool)
            dev.set_avail_notifications(data.draw(st.booleans(), label="enable"))
    except PeerSpecViolation as e:
        event(e.req_id)
        assert e.role == "driver" and e.req_id.startswith("PACKED-DRV-"), str(e)
        try:
            dev.pop()
        except BrokenSide:
            return
        raise AssertionError("the device left ERROR")


@given(data=st.data(), qs=st.integers(1, 9), event_idx=st.booleans(), start=st.integers(0, 40),
       rounds=st.integers(1, 6))
def test_driver_harvest_on_arbitrary_device_writes(data, qs, event_idx, start, rounds):
    mem = GuestMemory(MEM)
    a = place(RING, qs)
    drv = PackedQueueDriver(mem, a, qs, event_idx=event_idx, indirect_desc=True, start_idx=start,
                            indirect_arena=IndirectArena(0xC000, 0x2000), scrub_used=data.draw(st.booleans()),
                            check_device_writes=data.draw(st.booleans()))
    try:
        for _ in range(rounds):
            for i in range(data.draw(st.integers(0, qs), label="adds")):
                indirect = data.draw(st.booleans(), label="indirect")
                n_write = data.draw(st.integers(0, min(2, qs - 1)), label="writable")  # lists fit the ring
                try:
                    drv.add([(TABLES + 64 * i, 16)], [(TABLES + 0x1000 + 64 * i, 16)] * n_write, token=i,
                            indirect=indirect)
                except QueueFull:
                    break
            assert isinstance(drv.publish(), bool)
            # The "device": overwrite some slots and the device area with anything.
            for off in data.draw(st.lists(st.integers(0, qs - 1), max_size=qs), label="slots"):
                mem.write(a.desc + 16 * off, data.draw(desc_st, label="desc"))
            if data.draw(st.booleans(), label="touch device area"):
                mem.write(a.used, data.draw(st.binary(min_size=4, max_size=4), label="device area"))
            got = drv.harvest()
            assert all(isinstance(u, UsedBuffer) for u in got)
            if got:
                event("harvested a used buffer")
            assert isinstance(drv.notify_needed(), bool)
            drv.set_used_notifications(data.draw(st.booleans(), label="enable"))
    except PeerSpecViolation as e:
        event(e.req_id)
        assert e.role == "device" and e.req_id.startswith("PACKED-DEV-"), str(e)
        try:
            drv.harvest()
        except BrokenSide:
            return
        raise AssertionError("the driver left ERROR")
