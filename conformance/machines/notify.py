"""Whether a notification is due (§2.7.7, §2.7.10): the one place the machines judge it.

The receiving side asks for, or advises against, notifications in the ring the other side reads: the
driver in the available ring (``flags``, or ``used_event`` with VIRTIO_F_EVENT_IDX) for used buffer
notifications, the device in the used ring (``flags``, or ``avail_event``) for available buffer ones.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from refmodel.virtio.constants import VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.packed.events import EventSuppress
from refmodel.virtio.split.layout import AVAIL_FLAGS, USED_FLAGS, avail_event_offset, used_event_offset
from refmodel.virtio.virtq import QueueAddresses, virtq_need_event


class Kind(enum.Enum):
    """Which notification: the requirement IDs are (owed, not owed) with EVENT_IDX, then without it, then
    the one that says the event field means nothing without EVENT_IDX."""

    USED_BUFFER = ("SPLIT-DEV-12", "SPLIT-DEV-13", "SPLIT-DEV-10", "SPLIT-DEV-9", "SPLIT-DEV-8")
    AVAILABLE_BUFFER = ("SPLIT-DRV-23", "SPLIT-DRV-24", "SPLIT-DRV-21", "SPLIT-DRV-20", "SPLIT-DRV-19")

    def req(self, event_idx: bool, owed: bool) -> str:
        """The requirement a decision with a notification ``owed`` (or not) falls under."""
        return self.value[(0 if event_idx else 2) + (0 if owed else 1)]

    def ignored_req(self, event_idx: bool) -> str | None:
        """Without EVENT_IDX, the requirement that the event field means nothing (None with it)."""
        return None if event_idx else self.value[4]


@attrs.frozen
class Suppression:
    """What the receiving side wrote: the event index with EVENT_IDX, else the ring's flags."""

    kind: Kind
    event_idx: bool
    value: int

    @classmethod
    def read(cls, kind: Kind, mem: GuestMemory, addrs: QueueAddresses, queue_size: int,
             event_idx: bool) -> Suppression:
        """Read only the field that counts (an asynchronous device's memory is slow to read)."""
        if kind is Kind.USED_BUFFER:
            off = addrs.avail + (used_event_offset(queue_size) if event_idx else AVAIL_FLAGS)
        else:
            off = addrs.used + (avail_event_offset(queue_size) if event_idx else USED_FLAGS)
        return cls(kind, event_idx, mem.read_u16(off))

    def due(self, new: int, old: int) -> bool:
        """Whether moving the ring index from ``old`` to ``new`` calls for a notification."""
        if self.event_idx:
            return virtq_need_event(self.value, new, old)
        flag = VIRTQ_AVAIL_F_NO_INTERRUPT if self.kind is Kind.USED_BUFFER else VIRTQ_USED_F_NO_NOTIFY
        return not self.value & flag

    def allowed(self, got: bool, new: int, decided_at: int, notified_at: int) -> tuple[bool, bool]:
        """(owed, ok) for a decision ``got``. The spec does not say whether a batch runs from the last
        decision or the last notification: a notification is owed if it is due for the batch since the
        last decision, and allowed if it is due for the one since the last notification."""
        owed = self.due(new, decided_at)
        return owed, got == owed or got and (owed or self.due(new, notified_at))

    def req(self, owed: bool) -> str:
        return self.kind.req(self.event_idx, owed)

    @property
    def ignored_req(self) -> str | None:
        return self.kind.ignored_req(self.event_idx)

    def __str__(self) -> str:
        if self.kind is Kind.USED_BUFFER:
            return f"used_event {self.value}" if self.event_idx else f"avail flags {self.value}"
        return f"avail_event {self.value}" if self.event_idx else f"used flags {self.value}"


#: The packed ring's (owed, not owed) requirements: one pair, with or without EVENT_IDX (§2.8.10).
PACKED_REQS = {Kind.USED_BUFFER: ("PACKED-DEV-D10", "PACKED-DEV-D11"),
               Kind.AVAILABLE_BUFFER: ("PACKED-DRV-D10", "PACKED-DRV-D11")}


@attrs.frozen
class PackedSuppression:
    """:class:`Suppression` for a packed ring: the receiving side's event suppression structure, over
    descriptor positions (the queues' ``used_mark``/``avail_mark``)."""

    kind: Kind
    event: EventSuppress
    queue_size: int
    ignored_req = None  # DESC without EVENT_IDX is invalid (PACKED-*-D8), not ignored

    @classmethod
    def read(cls, kind: Kind, mem: GuestMemory, addrs: QueueAddresses, queue_size: int) -> PackedSuppression:
        area = addrs.avail if kind is Kind.USED_BUFFER else addrs.used
        return cls(kind, EventSuppress.read(mem, area), queue_size)

    def due(self, new: int, old: int) -> bool:
        return self.event.due(old, new, self.queue_size)

    def allowed(self, got: bool, new: int, decided_at: int, notified_at: int) -> tuple[bool, bool]:
        owed = self.due(new, decided_at)
        return owed, got == owed or got and (owed or self.due(new, notified_at))

    def req(self, owed: bool) -> str:
        return PACKED_REQS[self.kind][0 if owed else 1]

    def __str__(self) -> str:
        return f"{'driver' if self.kind is Kind.USED_BUFFER else 'device'} event suppression {self.event}"


def is_packed(vq: object) -> bool:
    """Whether a queue object (either side) is a packed ring's."""
    return isinstance(vq, (PackedQueueDriver, PackedQueueDevice))


def suppression_of(kind: Kind, mem: GuestMemory, vq: Any) -> Suppression | PackedSuppression:
    """What the receiving side of queue ``vq`` (a driver- or device-side queue object) asks for now."""
    if is_packed(vq):
        return PackedSuppression.read(kind, mem, vq.addrs, vq.queue_size)
    return Suppression.read(kind, mem, vq.addrs, vq.queue_size, vq.event_idx)


def owed_req(kind: Kind, vq: Any, owed: bool) -> str:
    """The requirement a decision with a notification ``owed`` (or not) falls under, on ``vq``'s ring."""
    return PACKED_REQS[kind][0 if owed else 1] if is_packed(vq) else kind.req(vq.event_idx, owed)
