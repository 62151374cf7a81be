"""Deliberately wrong packed virtqueues, one broken rule each: the packed virtqueue machines must name it.

Each overrides public methods or the documented override points (``write_used_descriptor``,
``walk_untrusted``) and reads state through public properties, as :mod:`conformance.mutants.virtq` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.packed.events import EventSuppress
from refmodel.virtio.packed.layout import (DESC_FLAGS, PDESC_FMT, PVIRTQ_DESC_SIZE, RING_EVENT_FLAGS_DESC,
                                           VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE, desc_ring_size, wrap_of)
from refmodel.virtio.virtq import Chain, QueueAddresses


# -- device side ------------------------------------------------------------------------------------------
class ForgetsAvailInUsed(PackedQueueDevice):
    """Marks a descriptor used by setting VIRTQ_DESC_F_USED alone, as if USED were the bit that counts."""

    breaks = "PACKED-DEV-D2"

    def write_used_descriptor(self, pos: int, buf_id: int, length: int) -> None:
        super().write_used_descriptor(pos, buf_id, length)
        slot = self.addrs.desc + PVIRTQ_DESC_SIZE * (pos % self.queue_size)
        wrote = VIRTQ_DESC_F_USED if wrap_of(pos, self.queue_size) else 0
        self.mem.write_u16(slot + DESC_FLAGS, wrote | (VIRTQ_DESC_F_WRITE if length else 0))


class CountsReadableInUsedLen(PackedQueueDevice):
    """Reports as used len the size of the whole buffer, device-readable bytes included, whenever it wrote
    something into a buffer that has readable bytes."""

    breaks = "PACKED-DEV-D3"
    whole = 0

    def add_used(self, head: int, length: int) -> None:
        chain = self.in_flight_chain(head) if self.is_in_flight(head) else None
        whole = chain is not None and chain.readable_len
        self.whole = chain.readable_len + chain.writable_len if chain is not None and whole else 0
        super().add_used(head, length)

    def write_used_descriptor(self, pos: int, buf_id: int, length: int) -> None:
        super().write_used_descriptor(pos, buf_id, (self.whole or length) if length else 0)


class IdFromFirstDescriptor(PackedQueueDevice):
    """Takes a list's Buffer ID from its first descriptor, where the split ring keeps its head."""

    breaks = "PACKED-DEV-D4"

    def walk_untrusted(self, pos: int) -> tuple[Chain, int] | None:
        got = super().walk_untrusted(pos)
        if got is None:
            return None
        chain, ndesc = got
        first = self.addrs.desc + PVIRTQ_DESC_SIZE * (pos % self.queue_size)
        _, _, first_id, _ = self.mem.unpack(PDESC_FMT, first)
        return Chain(first_id, chain.readable, chain.writable, chain.indirect), ndesc


class ScribblesReadable(PackedQueueDevice):
    """Writes a status byte into the first device-readable element instead of a writable one."""

    breaks = "PACKED-DEV-4"

    def add_used(self, head: int, length: int) -> None:
        if self.is_in_flight(head) and (readable := self.in_flight_chain(head).readable) and readable[0].len:
            addr = readable[0].addr
            self.mem.write(addr, bytes([self.mem.read(addr, 1)[0] ^ 0xFF]))
        super().add_used(head, length)


class ConsumesIndirectTable(PackedQueueDevice):
    """Clears the flags of an indirect table's first descriptor as it takes the table, as if it owned it."""

    breaks = "PACKED-DEV-D7"

    def walk_untrusted(self, pos: int) -> tuple[Chain, int] | None:
        got = super().walk_untrusted(pos)
        if got is not None and got[0].indirect and pos == self.next_avail:
            slot = self.addrs.desc + PVIRTQ_DESC_SIZE * (pos % self.queue_size)
            table, _, _, _ = self.mem.unpack(PDESC_FMT, slot)
            self.mem.write(table + 8, b"\xff")  # the first entry's len: garbage the driver reads back
        return got


class WritesDriverArea(PackedQueueDevice):
    """Writes its Device Event Suppression structure into the driver area (the two areas swapped)."""

    breaks = "PACKED-DEV-D9"

    def set_avail_notifications(self, enabled: bool) -> None:
        if not enabled:
            EventSuppress.disable().write(self.mem, self.addrs.avail)
        else:
            super().set_avail_notifications(enabled)


class NotifiesWhenDisabled(PackedQueueDevice):
    """Sends a used buffer notification for every used buffer, whatever the driver asked for."""

    breaks = "PACKED-DEV-D11"

    def notify_needed(self) -> bool:
        moved = self.last_signalled != self.next_used
        super().notify_needed()
        return moved


class IgnoresDescEvent(PackedQueueDevice):
    """Takes RING_EVENT_FLAGS_DESC as DISABLE: with VIRTIO_F_EVENT_IDX it never notifies."""

    breaks = "PACKED-DEV-D10"

    def notify_needed(self) -> bool:
        need = super().notify_needed()
        ev = EventSuppress.read(self.mem, self.addrs.avail)
        return False if ev.flags == RING_EVENT_FLAGS_DESC else need


# -- driver side ------------------------------------------------------------------------------------------
class KicksAlways(PackedQueueDriver):
    """Notifies on every publish, whatever the device asked for."""

    breaks = "PACKED-DRV-D11"

    def publish(self) -> bool:
        super().publish()
        return True


class NeverKicksOnDesc(PackedQueueDriver):
    """Takes the device's RING_EVENT_FLAGS_DESC as DISABLE: with VIRTIO_F_EVENT_IDX it never notifies."""

    breaks = "PACKED-DRV-D10"

    def notify_needed(self) -> bool:
        need = super().notify_needed()
        return False if EventSuppress.read(self.mem, self.addrs.used).flags == RING_EVENT_FLAGS_DESC else need


class LeavesRingStale(PackedQueueDriver):
    """Sets a fresh queue up in memory it does not zero: the descriptor ring keeps whatever was there."""

    breaks = "PACKED-DRV-D12"

    def __init__(self, mem: GuestMemory, addrs: QueueAddresses, queue_size: int, **kwargs: Any) -> None:
        stale = mem.read(addrs.desc, desc_ring_size(queue_size))
        super().__init__(mem, addrs, queue_size, **kwargs)
        if not kwargs.get("start_idx"):
            mem.write(addrs.desc, stale)


class DescWithoutEventIdx(PackedQueueDriver):
    """Asks for used buffer notifications with RING_EVENT_FLAGS_DESC, VIRTIO_F_EVENT_IDX or not."""

    breaks = "PACKED-DRV-D8"

    def set_used_notifications(self, enabled: bool) -> None:
        if enabled and not self.event_idx:
            EventSuppress.at(self.next_used, self.queue_size).write(self.mem, self.addrs.avail)
        else:
            super().set_used_notifications(enabled)


class WritesDeviceArea(PackedQueueDriver):
    """Writes its Driver Event Suppression structure into the device area (the two areas swapped)."""

    breaks = "PACKED-DRV-D9"

    def set_used_notifications(self, enabled: bool) -> None:
        if not enabled:
            EventSuppress.disable().write(self.mem, self.addrs.used)
        else:
            super().set_used_notifications(enabled)


class TrustsLenWithoutWrite(PackedQueueDriver):
    """Reads a used descriptor's len whether or not VIRTQ_DESC_F_WRITE says the device wrote anything."""

    breaks = "PACKED-DRV-D3"

    def __init__(self, mem: GuestMemory, addrs: QueueAddresses, queue_size: int, **kwargs: Any) -> None:
        super().__init__(mem, addrs, queue_size, used_len_needs_write=False, **kwargs)


class IndirectUnnegotiated(PackedQueueDriver):
    """Puts every list of two or more elements in an indirect table, VIRTIO_F_INDIRECT_DESC or not."""

    breaks = "PACKED-DRV-12"

    def __init__(self, mem: GuestMemory, addrs: QueueAddresses, queue_size: int, **kwargs: Any) -> None:
        super().__init__(mem, addrs, queue_size, **{**kwargs, "indirect_desc": True})

    def add(self, readable: Sequence[tuple[int, int]] = (), writable: Sequence[tuple[int, int]] = (), *,
            token: object = None, indirect: bool = False, table_write_flag: bool = False) -> int:
        return super().add(readable, writable, token=token, table_write_flag=table_write_flag,
                           indirect=indirect or len(readable) + len(writable) > 1)


DEVICE_QUEUE_MUTANTS = (ForgetsAvailInUsed, CountsReadableInUsedLen, IdFromFirstDescriptor, ScribblesReadable,
                        ConsumesIndirectTable, WritesDriverArea, NotifiesWhenDisabled, IgnoresDescEvent)
DRIVER_QUEUE_MUTANTS = (KicksAlways, NeverKicksOnDesc, LeavesRingStale, DescWithoutEventIdx, WritesDeviceArea,
                        TrustsLenWithoutWrite, IndirectUnnegotiated)
