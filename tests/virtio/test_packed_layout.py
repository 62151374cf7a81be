"""Pin every size, offset and bit of the packed-ring structures (§2.8.13, §2.8.14), the flag rule of the
wrap counters (§2.8.1), the part table (§2.8.10.1) and the notification data word (§2.9)."""

import ctypes
import struct

import pytest
from hypothesis import given, strategies as st

from refmodel.errors import LayoutError
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed import layout as L
from refmodel.virtio.packed.events import EventSuppress, need_event, pack_notification, unpack_notification


@pytest.mark.parametrize("cls, size, align, fmt", [
    (L.PvirtqDesc, 16, 8, "<QIHH"),
    (L.PvirtqEventSuppress, 4, 2, "<HH"),
])
def test_struct_size_and_alignment(cls, size, align, fmt):
    assert ctypes.sizeof(cls) == size == struct.calcsize(fmt)
    assert ctypes.alignment(cls) == align
    assert cls.__slots__ == ()


def test_descriptor_offsets_and_hot_path_format():
    assert {n: getattr(L.PvirtqDesc, n).offset for n in ("addr", "len", "id", "flags")} == \
        {"addr": 0, "len": 8, "id": 12, "flags": 14}
    assert L.DESC_FLAGS == L.PvirtqDesc.flags.offset
    d = L.PvirtqDesc(addr=0x1122334455667788, len=0x1000, id=0x0102, flags=0x8083)
    assert bytes(d) == L.PDESC_FMT.pack(0x1122334455667788, 0x1000, 0x0102, 0x8083)
    assert bytes(d).hex() == "8877665544332211" "00100000" "0201" "8380"
    assert L.PDESC_BODY_FMT.size == L.DESC_FLAGS and bytes(d)[:14] == L.PDESC_BODY_FMT.pack(
        0x1122334455667788, 0x1000, 0x0102)


def test_event_suppress_bit_fields():
    # desc: off in bits 0..14, wrap in bit 15; flags: desc_event_flags in bits 0..1, reserved above.
    raw = struct.pack("<HH", 0x1234 | 1 << 15, 0x2 | 0x5 << 2)
    e = L.PvirtqEventSuppress.from_buffer_copy(raw)
    assert (e.desc_event_off, e.desc_event_wrap, e.desc_event_flags, e.reserved) == (0x1234, 1, 2, 5)
    E = L.PvirtqEventSuppress
    assert E.desc_event_off.offset == E.desc_event_wrap.offset == 0 and E.desc_event_flags.offset == 2
    assert L.EVENT_FLAGS == 2 and L.EVENT_FMT.format == "<HH"
    mem = GuestMemory(16)
    mem.write(4, raw)
    assert EventSuppress.read(mem, 4) == EventSuppress(2, 0x1234, 1, 5)
    EventSuppress(1, 7, 0).write(mem, 8)
    assert bytes(L.PvirtqEventSuppress.from_buffer_copy(mem.read(8, 4))) == struct.pack("<HH", 7, 1)


def test_flag_values():
    assert (L.VIRTQ_DESC_F_NEXT, L.VIRTQ_DESC_F_WRITE, L.VIRTQ_DESC_F_INDIRECT) == (1, 2, 4)
    assert (L.VIRTQ_DESC_F_AVAIL, L.VIRTQ_DESC_F_USED) == (0x80, 0x8000)
    assert (L.RING_EVENT_FLAGS_ENABLE, L.RING_EVENT_FLAGS_DISABLE, L.RING_EVENT_FLAGS_DESC,
            L.RING_EVENT_FLAGS_RESERVED) == (0, 1, 2, 3)


def test_wrap_counter_flag_rule():
    # §2.8.1: available = AVAIL matches the counter, USED its inverse; used = both match the counter.
    assert L.avail_flags(1) == 0x0080 and L.avail_flags(0) == 0x8000
    assert L.used_flags(1) == 0x8080 and L.used_flags(0) == 0
    for w in (0, 1):
        a, u = L.avail_flags(w), L.used_flags(w)
        assert bool(a & 0x80) != bool(a & 0x8000) and bool(u & 0x80) == bool(u & 0x8000)


@given(qs=st.integers(1, L.PACKED_MAX_SIZE), pos=st.integers(0, 10**7))
def test_wrap_counter_starts_at_1_and_flips_after_the_last_descriptor(qs, pos):
    assert L.wrap_of(0, qs) == 1
    assert L.wrap_of(pos + qs, qs) == 1 - L.wrap_of(pos, qs)
    nxt = pos + 1
    assert L.wrap_of(nxt, qs) == (L.wrap_of(pos, qs) ^ (nxt % qs == 0))


@pytest.mark.parametrize("qs", [1, 3, 5, 7, 100, 255, 257, 1000, 32767, 32768])
def test_any_queue_size_up_to_32768(qs):
    L.check_queue_size(qs)  # §2.8.10.1: no power of 2 needed
    a = L.place(0x1003, qs)
    assert (a.desc % 16, a.avail % 4, a.used % 4) == (0, 0, 0) and L.misalignment(a) is None
    assert a.desc == 0x1010 and a.avail == a.desc + 16 * qs and a.used == a.avail + 4
    assert L.desc_ring_size(qs) == 16 * qs and L.EVENT_SUPPRESS_SIZE == 4
    assert (L.DESC_RING_ALIGN, L.EVENT_SUPPRESS_ALIGN) == (16, 4)
    assert L.end(a, qs) == a.used + 4
    assert L.outside(a, GuestMemory(L.end(a, qs)), qs) is None
    assert "device area" in L.outside(a, GuestMemory(L.end(a, qs) - 1), qs)


@pytest.mark.parametrize("bad", [0, -1, 32769, 65536, 1.0, True, "8"])
def test_queue_size_out_of_range(bad):
    with pytest.raises(LayoutError, match=r"1\.\.32768"):
        L.check_queue_size(bad)


def test_notification_data_word():
    # §2.9: le32 { vqn : 16; next_off : 15; next_wrap : 1; }
    assert pack_notification(3, 0x1234, 1) == 3 | 0x1234 << 16 | 1 << 31
    assert unpack_notification(pack_notification(0xFFFF, 0x7FFF, 0)) == (0xFFFF, 0x7FFF, 0)
    assert L.pack_off_wrap(5, 1) == 0x8005 and L.unpack_off_wrap(0x8005) == (5, 1)


@given(qs=st.integers(1, 50), old=st.integers(0, 500), n=st.integers(0, 150), off=st.integers(0, 60),
       wrap=st.integers(0, 1))
def test_need_event_is_exact_crossing(qs, old, n, off, wrap):
    new = old + n
    brute = any(p % qs == off and L.wrap_of(p, qs) == wrap for p in range(old, new))
    assert need_event(off, wrap, old, new, qs) == brute
