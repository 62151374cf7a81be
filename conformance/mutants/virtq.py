"""Deliberately wrong split virtqueues, one broken rule each: the virtqueue-level machines must name it.

Each overrides public methods or the documented override points (``write_used_element``,
``walk_untrusted``), and reads state through public properties (``last_kick_idx``).
"""

from __future__ import annotations

from refmodel.virtio.constants import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_WRITE
from refmodel.virtio.split.layout import DESC_FMT, VIRTQ_DESC_SIZE, avail_event_offset, used_ring_entry
from refmodel.virtio.virtq import Chain, virtq_need_event
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver


class UsedIdxBeforeElement(SplitQueueDevice):
    """Publishes the used idx, then writes the used element."""

    breaks = "SPLIT-DEV-14"

    def write_used_element(self, idx: int, head: int, length: int) -> None:
        slot = self.addrs.used + used_ring_entry(idx % self.queue_size)
        self.late = (slot, head, length)  # a driver reading after add_used sees the idx without the element


class NotifiesPastUsedEvent(SplitQueueDevice):
    """With EVENT_IDX, notifies after every used buffer, used_event or not."""

    breaks = "SPLIT-DEV-13"

    def notify_needed(self) -> bool:
        need = super().notify_needed()
        return True if self.event_idx else need


class IgnoresNoInterrupt(SplitQueueDevice):
    """Without EVENT_IDX, never notifies (as if VIRTQ_AVAIL_F_NO_INTERRUPT were always set)."""

    breaks = "SPLIT-DEV-10"

    def notify_needed(self) -> bool:
        need = super().notify_needed()
        return need if self.event_idx else False


class HonoursWriteOnIndirect(SplitQueueDevice):
    """Takes the WRITE flag of a descriptor naming an indirect table as "every buffer is writable"."""

    breaks = "SPLIT-DEV-6"

    def walk_untrusted(self, head: int) -> Chain:
        chain = super().walk_untrusted(head)
        _, _, flags, _ = self.mem.unpack(DESC_FMT, self.addrs.desc + VIRTQ_DESC_SIZE * head)
        if flags & VIRTQ_DESC_F_INDIRECT and flags & VIRTQ_DESC_F_WRITE:
            return Chain(head, (), chain.readable + chain.writable, chain.indirect)
        return chain


class FirstDescriptorOnly(SplitQueueDevice):
    """Assumes a buffer is one descriptor: reads only the first readable descriptor of a direct chain."""

    breaks = "SPLIT-DEV-1"

    def walk_untrusted(self, head: int) -> Chain:
        chain = super().walk_untrusted(head)
        if chain.indirect or len(chain.readable) < 2:
            return chain
        return Chain(head, chain.readable[:1], chain.writable, chain.indirect)


class KicksAlways(SplitQueueDriver):
    """Notifies on every publish, whatever the device asked for."""

    breaks = ("SPLIT-DRV-24", "SPLIT-DRV-20")

    def publish(self) -> bool:
        super().publish()
        return True


class FollowsAvailEventWithoutEventIdx(SplitQueueDriver):
    """Without EVENT_IDX, still decides by avail_event (which then means nothing)."""

    breaks = ("SPLIT-DRV-21", "SPLIT-DRV-20")

    def notify_needed(self) -> bool:
        if self.event_idx:
            return super().notify_needed()
        old, new = self.last_kick_idx, self.avail_idx
        event = self.mem.read_u16(self.addrs.used + avail_event_offset(self.queue_size))
        need = old != new and virtq_need_event(event, new, old)
        if need:
            self.kicked()
        return need


DEVICE_QUEUE_MUTANTS = (UsedIdxBeforeElement, NotifiesPastUsedEvent, IgnoresNoInterrupt, HonoursWriteOnIndirect,
                        FirstDescriptorOnly)
DRIVER_QUEUE_MUTANTS = (KicksAlways, FollowsAvailEventWithoutEventIdx)
