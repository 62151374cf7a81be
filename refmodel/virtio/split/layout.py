"""Byte-exact split-virtqueue layouts (§2.7) as ctypes structures, with sizes from named constants.

Never use ``sizeof`` of a whole-ring structure as the spec size: trailing padding makes
``VirtqUsed`` with a trailing ``avail_event`` 2 bytes too long. The ``*_size`` helpers follow the
table in §2.7 instead, and the tests pin both.
"""

from __future__ import annotations

import ctypes
import struct

from refmodel.virtio.constants import VIRTQ_MAX_SIZE
from refmodel.errors import LayoutError


class VirtqDesc(ctypes.LittleEndianStructure):
    """§2.7.5 ``struct virtq_desc``."""

    __slots__ = ()
    _fields_ = [("addr", ctypes.c_uint64), ("len", ctypes.c_uint32),
                ("flags", ctypes.c_uint16), ("next", ctypes.c_uint16)]


class VirtqUsedElem(ctypes.LittleEndianStructure):
    """§2.7.8 ``struct virtq_used_elem`` ("le32 is used here for ids for padding reasons")."""

    __slots__ = ()
    _fields_ = [("id", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class VirtqAvailHeader(ctypes.LittleEndianStructure):
    """The fixed head of §2.7.6 ``struct virtq_avail``; ``ring[]`` and ``used_event`` follow."""

    __slots__ = ()
    _fields_ = [("flags", ctypes.c_uint16), ("idx", ctypes.c_uint16)]


class VirtqUsedHeader(ctypes.LittleEndianStructure):
    """The fixed head of §2.7.8 ``struct virtq_used``; ``ring[]`` and ``avail_event`` follow."""

    __slots__ = ()
    _fields_ = [("flags", ctypes.c_uint16), ("idx", ctypes.c_uint16)]


def virtq_avail_type(queue_size: int) -> type[ctypes.LittleEndianStructure]:
    """The whole available ring for ``queue_size`` (with ``used_event``), for inspection."""
    check_queue_size(queue_size)
    return type(f"VirtqAvail{queue_size}", (ctypes.LittleEndianStructure,), {
        "__slots__": (),
        "_fields_": [("flags", ctypes.c_uint16), ("idx", ctypes.c_uint16),
                     ("ring", ctypes.c_uint16 * queue_size), ("used_event", ctypes.c_uint16)]})


def virtq_used_type(queue_size: int) -> type[ctypes.LittleEndianStructure]:
    """The whole used ring for ``queue_size`` (with ``avail_event``); ``sizeof`` includes padding."""
    check_queue_size(queue_size)
    return type(f"VirtqUsed{queue_size}", (ctypes.LittleEndianStructure,), {
        "__slots__": (),
        "_fields_": [("flags", ctypes.c_uint16), ("idx", ctypes.c_uint16),
                     ("ring", VirtqUsedElem * queue_size), ("avail_event", ctypes.c_uint16)]})


# §2.7 table: alignment and size of each part.
DESC_TABLE_ALIGN = 16
AVAIL_RING_ALIGN = 2
USED_RING_ALIGN = 4
VIRTQ_DESC_SIZE = ctypes.sizeof(VirtqDesc)  # 16
VIRTQ_USED_ELEM_SIZE = ctypes.sizeof(VirtqUsedElem)  # 8
RING_HEADER_SIZE = ctypes.sizeof(VirtqAvailHeader)  # flags + idx = 4
RING_EVENT_SIZE = 2  # used_event / avail_event
AVAIL_ELEM_SIZE = 2

# struct formats used on the hot path, pinned to the ctypes layouts by tests.
DESC_FMT = struct.Struct("<QIHH")
USED_ELEM_FMT = struct.Struct("<II")


def check_queue_size(queue_size: int) -> None:
    """§2.7: a power of 2, at most 32768."""
    if not (isinstance(queue_size, int) and 1 <= queue_size <= VIRTQ_MAX_SIZE
            and queue_size & (queue_size - 1) == 0):
        raise LayoutError(f"queue size {queue_size!r} is not a power of 2 in 1..{VIRTQ_MAX_SIZE} (§2.7)")


def desc_table_size(queue_size: int) -> int:
    return VIRTQ_DESC_SIZE * queue_size


def avail_ring_size(queue_size: int) -> int:
    return RING_HEADER_SIZE + AVAIL_ELEM_SIZE * queue_size + RING_EVENT_SIZE


def used_ring_size(queue_size: int) -> int:
    return RING_HEADER_SIZE + VIRTQ_USED_ELEM_SIZE * queue_size + RING_EVENT_SIZE


# Field offsets inside the rings.
AVAIL_FLAGS = 0
AVAIL_IDX = 2
USED_FLAGS = 0
USED_IDX = 2


def avail_ring_entry(i: int) -> int:
    return RING_HEADER_SIZE + AVAIL_ELEM_SIZE * i


def used_event_offset(queue_size: int) -> int:
    return RING_HEADER_SIZE + AVAIL_ELEM_SIZE * queue_size


def used_ring_entry(i: int) -> int:
    return RING_HEADER_SIZE + VIRTQ_USED_ELEM_SIZE * i


def avail_event_offset(queue_size: int) -> int:
    return RING_HEADER_SIZE + VIRTQ_USED_ELEM_SIZE * queue_size
