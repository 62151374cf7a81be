"""Types shared by both sides of a split virtqueue (§2.7), and the index arithmetic.

Indices (``idx``, ``used_event``, ``avail_event``) are free-running u16 counters that wrap at 2^16
(§2.7.13.3); all arithmetic on them goes through :func:`u16`.
"""

from __future__ import annotations

import attrs

from refmodel.virtio.split.layout import (AVAIL_RING_ALIGN, DESC_TABLE_ALIGN, USED_RING_ALIGN, avail_ring_size,
                     desc_table_size, used_ring_size)
from refmodel.virtio.memory import GuestMemory

U16_MASK = 0xFFFF
_U64 = 1 << 64
_U32 = 1 << 32


def u16(x: int) -> int:
    return x & U16_MASK


def virtq_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """Appendix A ``vring_need_event``: has ``event_idx`` been crossed going from old to new idx?"""
    return u16(new_idx - event_idx - 1) < u16(new_idx - old_idx)


def _u64(_: object, a: attrs.Attribute, v: int) -> None:
    if not (isinstance(v, int) and 0 <= v < _U64):
        raise ValueError(f"{a.name}={v!r} is not a 64-bit guest address")


def _u32(_: object, a: attrs.Attribute, v: int) -> None:
    if not (isinstance(v, int) and 0 <= v < _U32):
        raise ValueError(f"{a.name}={v!r} does not fit the 32-bit len field")


@attrs.frozen
class QueueAddresses:
    """Guest-physical addresses of the three parts (``queue_desc``, ``queue_driver``, ``queue_device``)."""

    desc: int = attrs.field(validator=_u64)
    avail: int = attrs.field(validator=_u64)
    used: int = attrs.field(validator=_u64)

    def misalignment(self) -> str | None:
        """Why the parts break §2.7.1 alignment, or None."""
        for name, addr, align in (("descriptor table", self.desc, DESC_TABLE_ALIGN),
                                  ("available ring", self.avail, AVAIL_RING_ALIGN),
                                  ("used ring", self.used, USED_RING_ALIGN)):
            if addr % align:
                return f"{name} at {addr:#x} is not {align}-byte aligned"
        return None

    def outside(self, mem: GuestMemory, queue_size: int) -> str | None:
        """Why a part does not fit in guest memory, or None."""
        for name, addr, size in (("descriptor table", self.desc, desc_table_size(queue_size)),
                                 ("available ring", self.avail, avail_ring_size(queue_size)),
                                 ("used ring", self.used, used_ring_size(queue_size))):
            if not mem.contains(addr, size):
                return f"{name} [{addr:#x}, +{size}) is outside guest memory"
        return None

    @classmethod
    def packed_at(cls, base: int, queue_size: int) -> QueueAddresses:
        """Place the three parts back to back from ``base`` (16-aligned), each at its alignment."""
        desc = (base + DESC_TABLE_ALIGN - 1) // DESC_TABLE_ALIGN * DESC_TABLE_ALIGN
        avail = desc + desc_table_size(queue_size)
        used = avail + avail_ring_size(queue_size)
        used = (used + USED_RING_ALIGN - 1) // USED_RING_ALIGN * USED_RING_ALIGN
        return cls(desc, avail, used)

    def end(self, queue_size: int) -> int:
        return max(self.desc + desc_table_size(queue_size), self.avail + avail_ring_size(queue_size),
                   self.used + used_ring_size(queue_size))


@attrs.frozen
class Buffer:
    """One element of a chain: ``len`` bytes at guest-physical ``addr``."""

    addr: int = attrs.field(validator=_u64)
    len: int = attrs.field(validator=_u32)


@attrs.frozen
class Chain:
    """A descriptor chain as the device sees it: readable buffers first, then writable ones."""

    head: int
    readable: tuple[Buffer, ...]
    writable: tuple[Buffer, ...]
    indirect: bool = False

    @property
    def readable_len(self) -> int:
        return sum(b.len for b in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(b.len for b in self.writable)

    def read_all(self, mem: GuestMemory) -> bytes:
        """The concatenated device-readable bytes."""
        return b"".join(mem.read(b.addr, b.len) for b in self.readable)

    def write_all(self, mem: GuestMemory, data: bytes) -> int:
        """Scatter ``data`` over the writable buffers, in order; returns the bytes written."""
        pos = 0
        for b in self.writable:
            if pos >= len(data):
                break
            n = min(b.len, len(data) - pos)
            mem.write(b.addr, data[pos:pos + n])
            pos += n
        return pos


@attrs.frozen
class UsedBuffer:
    """A chain the device returned: its head, used length, and the token given to ``add``."""

    head: int
    len: int
    token: object = None
