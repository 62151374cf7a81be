"""Notification suppression for packed virtqueues (§2.8.10, §2.8.14) and notification data (§2.9).

Each side writes one ``struct pvirtq_event_suppress`` that the other only reads: the driver's (driver
area) governs used buffer notifications, the device's (device area) available buffer notifications.
Flags ENABLE and DISABLE need no feature; DESC names one descriptor position (offset, wrap counter) and
needs VIRTIO_F_EVENT_IDX. Whether an event is due over a window of positions is :func:`need_event`.
"""

from __future__ import annotations

import attrs

from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.layout import (EVENT_FMT, EVENT_OFF_MASK, RING_EVENT_FLAGS_DESC,
                                           RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE,
                                           RING_EVENT_FLAGS_RESERVED, pack_off_wrap, unpack_off_wrap, wrap_of)

_FLAG_NAMES = {RING_EVENT_FLAGS_ENABLE: "ENABLE", RING_EVENT_FLAGS_DISABLE: "DISABLE",
               RING_EVENT_FLAGS_DESC: "DESC", RING_EVENT_FLAGS_RESERVED: "reserved 0x3"}


def need_event(off: int, wrap: int, old: int, new: int, queue_size: int) -> bool:
    """Whether position (``off``, ``wrap``) is among ``old .. new - 1`` (AMB-PACKED-EVENT-WINDOW).

    The pair recurs every ``2 * queue_size`` positions, so a window that long holds it for sure.
    """
    if new <= old or off >= queue_size:
        return False
    if new - old >= 2 * queue_size:
        return True
    first = old + (off - old) % queue_size  # the first position >= old at offset ``off``
    if wrap_of(first, queue_size) != wrap:
        first += queue_size
    return first < new


@attrs.frozen
class EventSuppress:
    """One ``struct pvirtq_event_suppress`` as read from guest memory (unchecked: see :meth:`problem`)."""

    flags: int  # desc_event_flags, 2 bits
    off: int  # desc_event_off, 15 bits
    wrap: int  # desc_event_wrap, 1 bit
    reserved: int = 0  # the upper 14 bits of the flags word

    @classmethod
    def read(cls, mem: GuestMemory, addr: int) -> EventSuppress:
        desc, flags = mem.unpack(EVENT_FMT, addr, 4)
        off, wrap = unpack_off_wrap(desc)
        return cls(flags & 3, off, wrap, flags >> 2)

    def write(self, mem: GuestMemory, addr: int) -> None:
        flags = self.flags | self.reserved << 2
        mem.pack(EVENT_FMT, addr, pack_off_wrap(self.off, self.wrap), flags, align=4)

    @classmethod
    def enable(cls) -> EventSuppress:
        return cls(RING_EVENT_FLAGS_ENABLE, 0, 0)

    @classmethod
    def disable(cls) -> EventSuppress:
        return cls(RING_EVENT_FLAGS_DISABLE, 0, 0)

    @classmethod
    def at(cls, pos: int, queue_size: int) -> EventSuppress:
        """A DESC event for position ``pos``: notify once that descriptor is made available or used."""
        return cls(RING_EVENT_FLAGS_DESC, pos % queue_size, wrap_of(pos, queue_size))

    def problem(self, event_idx: bool, queue_size: int) -> str | None:
        """Why these values break PACKED-DRV-D8 / PACKED-DEV-D8, or None."""
        if self.reserved:
            return f"reserved flag bits {self.reserved << 2:#x} set"
        if self.flags == RING_EVENT_FLAGS_RESERVED:
            return "flags 0x3 (reserved)"
        if self.flags == RING_EVENT_FLAGS_DESC:
            if not event_idx:
                return "flags RING_EVENT_FLAGS_DESC without VIRTIO_F_EVENT_IDX"
            if self.off >= queue_size:
                return f"event offset {self.off} outside a ring of {queue_size}"
        return None

    def due(self, old: int, new: int, queue_size: int) -> bool:
        """Whether moving from position ``old`` to ``new`` calls for a notification (valid values only)."""
        if new <= old or self.flags == RING_EVENT_FLAGS_DISABLE:
            return False
        if self.flags == RING_EVENT_FLAGS_DESC:
            return need_event(self.off, self.wrap, old, new, queue_size)
        return True  # ENABLE; desc is meaningful only with DESC (§2.8.14)

    def __str__(self) -> str:
        name = _FLAG_NAMES[self.flags]
        extra = f" at offset {self.off} wrap {self.wrap}" if self.flags == RING_EVENT_FLAGS_DESC else ""
        bits = f" (reserved bits {self.reserved:#x})" if self.reserved else ""
        return f"RING_EVENT_FLAGS_{name}{extra}{bits}"


# §2.9 with VIRTIO_F_NOTIFICATION_DATA: le32 { vqn : 16; next_off : 15; next_wrap : 1; }
def pack_notification(vqn: int, off: int, wrap: int) -> int:
    return (vqn & 0xFFFF) | pack_off_wrap(off, wrap) << 16


def unpack_notification(data: int) -> tuple[int, int, int]:
    """(vqn, next_off, next_wrap)."""
    off, wrap = unpack_off_wrap(data >> 16 & 0xFFFF)
    return data & 0xFFFF, off & EVENT_OFF_MASK, wrap
