"""Pin every size and offset of the split-ring structures and the balloon config (§2.7, §5.5.4)."""

import ctypes
import struct

import pytest

from refmodel.virtio.split import layout as L
from refmodel.balloon.config import CONFIG_SIZE, VirtioBalloonConfig
from refmodel.errors import LayoutError


@pytest.mark.parametrize("cls, size, align, offsets, fmt", [
    (L.VirtqDesc, 16, 8, {"addr": 0, "len": 8, "flags": 12, "next": 14}, "<QIHH"),
    (L.VirtqUsedElem, 8, 4, {"id": 0, "len": 4}, "<II"),
    (L.VirtqAvailHeader, 4, 2, {"flags": 0, "idx": 2}, "<HH"),
    (L.VirtqUsedHeader, 4, 2, {"flags": 0, "idx": 2}, "<HH"),
    (VirtioBalloonConfig, 16, 4, {"num_pages": 0, "actual": 4, "free_page_hint_cmd_id": 8, "poison_val": 12},
     "<IIII"),
])
def test_struct_layout(cls, size, align, offsets, fmt):
    assert ctypes.sizeof(cls) == size == struct.calcsize(fmt)
    assert ctypes.alignment(cls) == align
    assert {name: getattr(cls, name).offset for name in offsets} == offsets
    assert cls.__slots__ == ()


def test_hot_path_formats_match_ctypes():
    d = L.VirtqDesc(addr=0x1122334455667788, len=0x1000, flags=3, next=1)
    assert bytes(d) == L.DESC_FMT.pack(0x1122334455667788, 0x1000, 3, 1)
    assert bytes(d).hex() == "8877665544332211" "00100000" "0300" "0100"
    e = L.VirtqUsedElem(id=7, len=0x20)
    assert bytes(e) == L.USED_ELEM_FMT.pack(7, 0x20)


def test_config_size():
    assert CONFIG_SIZE == 16


@pytest.mark.parametrize("qs", [1 << n for n in range(16)])
def test_ring_sizes_follow_spec_table(qs):
    # §2.7: Descriptor Table 16*QS (align 16); Available Ring 6+2*QS (align 2); Used Ring 6+8*QS (align 4)
    assert L.desc_table_size(qs) == 16 * qs
    assert L.avail_ring_size(qs) == 6 + 2 * qs
    assert L.used_ring_size(qs) == 6 + 8 * qs
    assert (L.DESC_TABLE_ALIGN, L.AVAIL_RING_ALIGN, L.USED_RING_ALIGN) == (16, 2, 4)
    assert L.used_event_offset(qs) == 4 + 2 * qs
    assert L.avail_event_offset(qs) == 4 + 8 * qs


@pytest.mark.parametrize("qs", [1, 2, 4, 256, 32768])
def test_whole_ring_ctypes_agree_except_trailing_padding(qs):
    avail, used = L.virtq_avail_type(qs), L.virtq_used_type(qs)
    assert ctypes.sizeof(avail) == L.avail_ring_size(qs)
    assert avail.used_event.offset == L.used_event_offset(qs)
    assert used.avail_event.offset == L.avail_event_offset(qs)
    # The padding trap: sizeof rounds up to 4-byte alignment; the spec size does not.
    assert ctypes.sizeof(used) == (L.used_ring_size(qs) + 3) // 4 * 4


@pytest.mark.parametrize("bad", [0, 3, 6, 65536, 32768 * 2, -1, 1.0])
def test_queue_size_must_be_power_of_two_up_to_32768(bad):
    with pytest.raises(LayoutError, match="power of 2"):
        L.check_queue_size(bad)


def test_ctypes_would_truncate_so_memory_masks_explicitly():
    d = L.VirtqDesc()
    d.flags = 0x10001  # ctypes silently wraps: the reason fields are range-checked before packing
    assert d.flags == 1
    with pytest.raises(AttributeError):
        d.flag = 1  # __slots__ = () blocks typos
