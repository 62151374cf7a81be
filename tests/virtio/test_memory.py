import mmap

import pytest

from refmodel.errors import MemoryAccessError
from refmodel.virtio.split.layout import VirtqDesc
from refmodel.virtio.memory import GuestMemory


def test_bounds_and_base():
    m = GuestMemory(4096, base=0x10000)
    m.write(0x10000, b"ab")
    assert m.read(0x10000, 2) == b"ab"
    for addr, n in [(0xFFFF, 1), (0x10FFF, 2), (0x20000, 1), (0x10000, -1)]:
        with pytest.raises(MemoryAccessError):
            m.read(addr, n)


def test_alignment_checked_for_scalars_and_views():
    m = GuestMemory(64)
    with pytest.raises(MemoryAccessError, match="aligned"):
        m.read_u16(1)
    with pytest.raises(MemoryAccessError, match="aligned"):
        m.view(VirtqDesc, 4)
    m.write_u64(8, 0x0102030405060708)
    assert m.read(8, 8) == bytes.fromhex("0807060504030201")


def test_snapshot_is_detached_view_is_live():
    m = GuestMemory(64)
    v = m.view(VirtqDesc, 16)
    s = m.snapshot(VirtqDesc, 16)
    m.write_u32(24, 99)
    assert v.len == 99 and s.len == 0
    del v


def test_mmap_backing():
    mm = mmap.mmap(-1, 4096)
    m = GuestMemory(buffer=mm)
    m.write_u32(0, 0xDEADBEEF)
    assert mm[:4] == bytes.fromhex("efbeadde")


def test_readonly_buffer_rejected():
    with pytest.raises(ValueError, match="writable"):
        GuestMemory(buffer=b"abc")
