"""Byte-exact packed-virtqueue layouts (§2.8.13, §2.8.14) and the ring position arithmetic (§2.8.1).

Positions are free-running counts of descriptors, ``a >= 0``: descriptor ``a`` sits at ring offset
``a % Queue Size`` in lap ``a // Queue Size``. Both ring wrap counters start at 1 and flip after the ring's
last descriptor, so the wrap counter for position ``a`` is 1 on even laps and 0 on odd ones
(:func:`wrap_of`). A ``start_idx`` of ``a`` means "``a`` descriptors went round before".

The three parts reuse :class:`refmodel.virtio.virtq.QueueAddresses`: ``desc`` is the descriptor ring,
``avail`` the driver area (Driver Event Suppression), ``used`` the device area (Device Event Suppression).
"""

from __future__ import annotations

import ctypes
import struct

from refmodel.errors import LayoutError
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import QueueAddresses


class PvirtqDesc(ctypes.LittleEndianStructure):
    """§2.8.13 ``struct pvirtq_desc``."""

    __slots__ = ()
    _fields_ = [("addr", ctypes.c_uint64), ("len", ctypes.c_uint32),
                ("id", ctypes.c_uint16), ("flags", ctypes.c_uint16)]


class PvirtqEventSuppress(ctypes.LittleEndianStructure):
    """§2.8.14 ``struct pvirtq_event_suppress``: two le16 words of bit-fields, low bits first."""

    __slots__ = ()
    _fields_ = [("desc_event_off", ctypes.c_uint16, 15), ("desc_event_wrap", ctypes.c_uint16, 1),
                ("desc_event_flags", ctypes.c_uint16, 2), ("reserved", ctypes.c_uint16, 14)]


# §2.8.1 (AVAIL, USED) and §2.8.3, §2.8.6, §2.8.7 (same values as the split ring's).
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_DESC_F_AVAIL = 1 << 7
VIRTQ_DESC_F_USED = 1 << 15

# §2.8.10 Descriptor Ring Change Event Flags; 0x3 is reserved.
RING_EVENT_FLAGS_ENABLE = 0x0
RING_EVENT_FLAGS_DISABLE = 0x1
RING_EVENT_FLAGS_DESC = 0x2
RING_EVENT_FLAGS_RESERVED = 0x3

# §2.8: "Packed virtqueues support up to 2^15 entries each."
PACKED_MAX_SIZE = 1 << 15
# The 15-bit offset and 1-bit wrap of desc_event (§2.8.14) and of next_off/next_wrap (§2.9).
EVENT_OFF_MASK = 0x7FFF
EVENT_WRAP_SHIFT = 15

# §2.8.10.1 table: alignment and size of each part.
DESC_RING_ALIGN = 16
EVENT_SUPPRESS_ALIGN = 4
PVIRTQ_DESC_SIZE = ctypes.sizeof(PvirtqDesc)  # 16
EVENT_SUPPRESS_SIZE = ctypes.sizeof(PvirtqEventSuppress)  # 4
DESC_FLAGS = 14  # offset of flags in a descriptor: written on its own, last (§2.8.21.1)
EVENT_FLAGS = 2  # offset of flags in an event suppression structure

# struct formats used on the hot path, pinned to the ctypes layouts by tests.
PDESC_FMT = struct.Struct("<QIHH")
PDESC_BODY_FMT = struct.Struct("<QIH")  # addr, len, id: a descriptor without its flags
EVENT_FMT = struct.Struct("<HH")  # desc (off | wrap << 15), flags


def check_queue_size(queue_size: int) -> None:
    """§2.8: 1..32768; unlike the split ring, not necessarily a power of 2 (§2.8.10.1, PACKED-DEV-D1)."""
    if not (isinstance(queue_size, int) and not isinstance(queue_size, bool)
            and 1 <= queue_size <= PACKED_MAX_SIZE):
        raise LayoutError(f"queue size {queue_size!r} is not in 1..{PACKED_MAX_SIZE} (§2.8)")


def desc_ring_size(queue_size: int) -> int:
    return PVIRTQ_DESC_SIZE * queue_size


def wrap_of(pos: int, queue_size: int) -> int:
    """The ring wrap counter for position ``pos``: 1 on the first lap, flipped on each later one."""
    return 1 ^ (pos // queue_size & 1)


def avail_flags(wrap: int) -> int:
    """AVAIL and USED for a descriptor made available with Driver Ring Wrap Counter ``wrap`` (§2.8.1)."""
    return VIRTQ_DESC_F_AVAIL if wrap else VIRTQ_DESC_F_USED


def used_flags(wrap: int) -> int:
    """AVAIL and USED for a descriptor used with Device Ring Wrap Counter ``wrap`` (§2.8.1)."""
    return VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED if wrap else 0


def pack_off_wrap(off: int, wrap: int) -> int:
    """The le16 of ``desc_event_off``/``desc_event_wrap`` (§2.8.14), or ``next_off``/``next_wrap`` (§2.9)."""
    return (off & EVENT_OFF_MASK) | (wrap & 1) << EVENT_WRAP_SHIFT


def unpack_off_wrap(word: int) -> tuple[int, int]:
    return word & EVENT_OFF_MASK, word >> EVENT_WRAP_SHIFT & 1


def misalignment(addrs: QueueAddresses) -> str | None:
    """Why the parts break the §2.8.10.1 alignment (PACKED-DRV-1), or None."""
    for name, addr, align in (("descriptor ring", addrs.desc, DESC_RING_ALIGN),
                              ("driver area", addrs.avail, EVENT_SUPPRESS_ALIGN),
                              ("device area", addrs.used, EVENT_SUPPRESS_ALIGN)):
        if addr % align:
            return f"{name} at {addr:#x} is not {align}-byte aligned"
    return None


def outside(addrs: QueueAddresses, mem: GuestMemory, queue_size: int) -> str | None:
    """Why a part does not fit in guest memory (PACKED-DRV-D1), or None."""
    for name, addr, size in (("descriptor ring", addrs.desc, desc_ring_size(queue_size)),
                             ("driver area", addrs.avail, EVENT_SUPPRESS_SIZE),
                             ("device area", addrs.used, EVENT_SUPPRESS_SIZE)):
        if not mem.contains(addr, size):
            return f"{name} [{addr:#x}, +{size}) is outside guest memory"
    return None


def place(base: int, queue_size: int) -> QueueAddresses:
    """The descriptor ring from ``base`` rounded up to 16, then the driver area, then the device area."""
    check_queue_size(queue_size)
    desc = (base + DESC_RING_ALIGN - 1) // DESC_RING_ALIGN * DESC_RING_ALIGN
    driver = desc + desc_ring_size(queue_size)  # a multiple of 16, so 4-aligned
    return QueueAddresses(desc, driver, driver + EVENT_SUPPRESS_SIZE)


def end(addrs: QueueAddresses, queue_size: int) -> int:
    """The first byte after all three parts."""
    return max(addrs.desc + desc_ring_size(queue_size), addrs.avail + EVENT_SUPPRESS_SIZE,
               addrs.used + EVENT_SUPPRESS_SIZE)
