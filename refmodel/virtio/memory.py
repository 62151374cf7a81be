"""Guest memory: the one place that touches the bytes, with bounds and alignment checks.

Everything else reads and writes through :class:`GuestMemory`. It is the only caller of ctypes'
``from_buffer``; views are short-lived (a live view pins an ``mmap``). Scalars go through precompiled
``struct.Struct`` objects, which the layout tests pin to the ctypes layouts.

Addresses are guest-physical: ``base`` is the address of the first byte.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from typing import Any, TypeVar

from refmodel.errors import MemoryAccessError

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

C = TypeVar("C", bound=ctypes.Structure)


def _memfd(size: int) -> int:
    """A memfd of ``size`` bytes, or -1 where the system has none."""
    try:
        fd = os.memfd_create("guest-memory", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        return -1
    os.ftruncate(fd, size)
    return fd


class GuestMemory:
    """A flat guest-physical range ``[base, base + size)`` over a writable buffer.

    ``buffer`` may be a ``bytearray`` or an ``mmap`` shared with another process (vhost-user). Without
    one, the memory is a shared mapping of a memfd, whose descriptor (:meth:`fileno`) another process can
    map: a C implementation runs in a child process that way, so that its crash is not the suite's.
    """

    __slots__ = ("_buf", "base", "size", "_view", "_fd")

    def __init__(self, size: int | None = None, *, base: int = 0, buffer: Any = None) -> None:
        if buffer is None:
            if size is None or size <= 0:
                raise ValueError("GuestMemory needs a positive size or a buffer")
            fd = _memfd(size)
            buffer = mmap.mmap(fd, size) if fd >= 0 else bytearray(size)  # zero-filled either way
        else:
            fd = -1
        view = memoryview(buffer)
        if view.readonly:
            raise ValueError("guest memory must be writable")
        if size is not None and size != view.nbytes:
            raise ValueError(f"size {size} does not match buffer of {view.nbytes} bytes")
        if base < 0:
            raise ValueError("base must be non-negative")
        self._fd = fd
        self._buf = buffer
        self._view = view.cast("B")
        self.base = base
        self.size = view.nbytes

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            os.close(fd)

    def fileno(self) -> int:
        """A descriptor another process can map to share these bytes, or -1 (a caller's buffer)."""
        return self._fd

    def host_pointer(self) -> int:
        """The host address of byte ``base`` (for C implementations under test, via ctypes)."""
        import ctypes

        return ctypes.addressof((ctypes.c_char * self.size).from_buffer(self._buf))

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, addr: int, length: int) -> bool:
        """Whether ``[addr, addr + length)`` lies inside guest memory."""
        return length >= 0 and self.base <= addr and addr + length <= self.base + self.size

    def _offset(self, addr: int, length: int, align: int = 1) -> int:
        off = addr - self.base
        if length < 0:
            raise MemoryAccessError(addr, length, "negative length")
        if off < 0 or off + length > self.size:
            raise MemoryAccessError(addr, length, f"outside guest memory [{self.base:#x}, {self.end:#x})")
        if align > 1 and addr % align:
            raise MemoryAccessError(addr, length, f"not {align}-byte aligned")
        return off

    # bytes
    def read(self, addr: int, length: int) -> bytes:
        off = self._offset(addr, length)
        return bytes(self._view[off:off + length])

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        off = self._offset(addr, n)
        self._view[off:off + n] = data

    def fill(self, addr: int, length: int, byte: int) -> None:
        off = self._offset(addr, length)
        self._view[off:off + length] = bytes([byte]) * length

    # scalars and records, little-endian
    def unpack(self, fmt: struct.Struct, addr: int, align: int = 1) -> tuple[Any, ...]:
        return fmt.unpack_from(self._buf, self._offset(addr, fmt.size, align))

    def pack(self, fmt: struct.Struct, addr: int, *values: Any, align: int = 1) -> None:
        fmt.pack_into(self._buf, self._offset(addr, fmt.size, align), *values)

    def read_u16(self, addr: int) -> int:
        return U16.unpack_from(self._buf, self._offset(addr, 2, 2))[0]

    def write_u16(self, addr: int, value: int) -> None:
        U16.pack_into(self._buf, self._offset(addr, 2, 2), value & 0xFFFF)

    def read_u32(self, addr: int) -> int:
        return U32.unpack_from(self._buf, self._offset(addr, 4, 4))[0]

    def write_u32(self, addr: int, value: int) -> None:
        U32.pack_into(self._buf, self._offset(addr, 4, 4), value & 0xFFFFFFFF)

    def read_u64(self, addr: int) -> int:
        return U64.unpack_from(self._buf, self._offset(addr, 8, 8))[0]

    def write_u64(self, addr: int, value: int) -> None:
        U64.pack_into(self._buf, self._offset(addr, 8, 8), value & 0xFFFFFFFFFFFFFFFF)

    # ctypes
    def view(self, cls: type[C], addr: int) -> C:
        """A live ctypes view of ``cls`` at ``addr``; keep it short-lived."""
        off = self._offset(addr, ctypes.sizeof(cls), ctypes.alignment(cls))
        return cls.from_buffer(self._buf, off)

    def snapshot(self, cls: type[C], addr: int) -> C:
        """A detached copy of ``cls`` at ``addr`` (for untrusted input: it cannot change under us)."""
        off = self._offset(addr, ctypes.sizeof(cls), ctypes.alignment(cls))
        return cls.from_buffer_copy(self._buf, off)
