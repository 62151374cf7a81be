"""The device side of a split virtqueue (§2.7): the model plays the device.

Everything read from the descriptor table and the available ring was written by the driver and is
untrusted. :meth:`SplitQueueDevice.pop` turns every malformed input into a
:class:`PeerSpecViolation` naming the driver requirement it breaks; no other exception escapes
(no ``IndexError``, no ``struct.error``). The checks, in the order a chain walk meets them:

============================  =========================================================
avail idx moved backwards     SPLIT-DRV-11 (>= 2^15 ahead is read as a decrement)
avail idx > Queue Size ahead  SPLIT-DRV-D3
head or next >= table size    SPLIT-DRV-D2
head still in flight          SPLIT-DRV-D6
INDIRECT not negotiated       SPLIT-DRV-6
INDIRECT inside a table       SPLIT-DRV-7
INDIRECT together with NEXT   SPLIT-DRV-9
table len 0 or not 16*n       SPLIT-DRV-D4
table longer than Queue Size  SPLIT-DRV-8
buffer outside guest memory   SPLIT-DRV-D1
readable after writable       SPLIT-DRV-2
more than 2^32 bytes          SPLIT-DRV-4
loop (> table size descs)     SPLIT-DRV-4 (a loop makes the chain unbounded)
============================  =========================================================
"""

from __future__ import annotations

from refmodel.virtio.constants import (VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE, VIRTQ_MAX_CHAIN_BYTES, VIRTQ_USED_F_NO_NOTIFY)
from refmodel.errors import LocalSpecViolation, PeerSpecViolation, Sticky, guarded
from refmodel.virtio.split.layout import (AVAIL_FLAGS, AVAIL_IDX, DESC_FMT, USED_ELEM_FMT, USED_IDX, VIRTQ_DESC_SIZE,
                     avail_event_offset, avail_ring_entry, check_queue_size, used_event_offset,
                     used_ring_entry)
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import Buffer, Chain, QueueAddresses, u16, virtq_need_event


class SplitQueueDevice(Sticky):
    """Our device's view of one split virtqueue the driver placed in guest memory."""

    def __init__(self, mem: GuestMemory, addrs: QueueAddresses, queue_size: int, *,
                 event_idx: bool = False, indirect_desc: bool = False, start_idx: int = 0) -> None:
        check_queue_size(queue_size)
        # The driver chose the addresses: a bad placement is the peer's.
        if why := addrs.misalignment():
            raise PeerSpecViolation("SPLIT-DRV-1", why)
        if why := addrs.outside(mem, queue_size):
            raise PeerSpecViolation("SPLIT-DRV-D5", why)
        self.mem, self.addrs, self.queue_size = mem, addrs, queue_size
        self.event_idx, self.indirect_desc = event_idx, indirect_desc
        self.last_avail_idx = u16(start_idx)
        self.used_idx = u16(start_idx)
        self._last_signalled = self.used_idx
        self._in_flight: dict[int, Chain] = {}

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def last_signalled(self) -> int:
        """The used idx at the last notification decision (:meth:`notify_needed`, :meth:`signalled`)."""
        return self._last_signalled

    def in_flight_chain(self, head: int) -> Chain:
        return self._in_flight[head]

    def is_in_flight(self, head: int) -> bool:
        return head in self._in_flight

    # -- available ring --------------------------------------------------------------------------------
    @guarded
    def available(self) -> int:
        """How many chains the driver has made available that we have not popped."""
        return self._available_untrusted()

    def _available_untrusted(self) -> int:
        avail_idx = self.mem.read_u16(self.addrs.avail + AVAIL_IDX)
        delta = u16(avail_idx - self.last_avail_idx)
        if delta >= 0x8000:  # more than half the index space ahead: read as a step backwards
            raise PeerSpecViolation("SPLIT-DRV-11", f"avail idx went from {self.last_avail_idx} back to {avail_idx}")
        if delta + len(self._in_flight) > self.queue_size:
            raise PeerSpecViolation("SPLIT-DRV-D3", f"avail idx {avail_idx} is {delta} ahead of the device's "
                                    f"{self.last_avail_idx} with {len(self._in_flight)} chains in flight "
                                    f"(queue size {self.queue_size})")
        return delta

    def avail_mark(self) -> int:
        """The avail idx as the driver last published it (read, unchecked; see refmodel.virtio.rings)."""
        return self.mem.read_u16(self.addrs.avail + AVAIL_IDX)

    @guarded
    def pop(self) -> Chain | None:
        """Take the next available chain, or None if there is none."""
        if not self._available_untrusted():
            return None
        head = self.mem.read_u16(self.addrs.avail + avail_ring_entry(self.last_avail_idx % self.queue_size))
        if head >= self.queue_size:
            raise PeerSpecViolation("SPLIT-DRV-D2", f"available ring names head {head}, "
                                    f"queue size {self.queue_size}")
        if head in self._in_flight:
            raise PeerSpecViolation("SPLIT-DRV-D6", f"head {head} made available while still in flight")
        chain = self.walk_untrusted(head)
        self.last_avail_idx = u16(self.last_avail_idx + 1)
        self._in_flight[head] = chain
        return chain

    def walk_untrusted(self, head: int) -> Chain:
        """The chain at ``head`` (checked by :meth:`pop`) as buffers, or the violation it holds.

        Override point: a device that reads chains its own way (call this, then reinterpret).
        """
        mem, qs = self.mem, self.queue_size
        table, table_size, idx = self.addrs.desc, qs, head
        in_indirect = False
        readable: list[Buffer] = []
        writable: list[Buffer] = []
        total = 0
        seen = 0
        while True:
            if seen >= table_size:
                raise PeerSpecViolation("SPLIT-DRV-4", f"chain from head {head} visits more than {table_size} "
                                        f"descriptors of {'an indirect table' if in_indirect else 'the table'}: "
                                        "a loop")
            seen += 1
            addr, length, flags, nxt = mem.unpack(DESC_FMT, table + VIRTQ_DESC_SIZE * idx)
            if flags & VIRTQ_DESC_F_INDIRECT:
                if not self.indirect_desc:
                    raise PeerSpecViolation("SPLIT-DRV-6", f"descriptor {idx} sets INDIRECT")
                if in_indirect:
                    raise PeerSpecViolation("SPLIT-DRV-7", f"indirect table entry {idx} sets INDIRECT")
                if flags & VIRTQ_DESC_F_NEXT:
                    raise PeerSpecViolation("SPLIT-DRV-9", f"descriptor {idx} sets INDIRECT and NEXT")
                if length == 0 or length % VIRTQ_DESC_SIZE:
                    raise PeerSpecViolation("SPLIT-DRV-D4", f"indirect table len {length}")
                if length // VIRTQ_DESC_SIZE > qs:
                    raise PeerSpecViolation("SPLIT-DRV-8", f"indirect table of {length // VIRTQ_DESC_SIZE} "
                                            f"descriptors, queue size {qs}")
                if not mem.contains(addr, length):
                    raise PeerSpecViolation("SPLIT-DRV-D1", f"indirect table [{addr:#x}, +{length}) "
                                            "is not in guest memory")
                # SPLIT-DEV-6: the WRITE flag of this descriptor is ignored.
                table, table_size, idx, seen, in_indirect = addr, length // VIRTQ_DESC_SIZE, 0, 0, True
                continue
            if not mem.contains(addr, length):
                raise PeerSpecViolation("SPLIT-DRV-D1", f"descriptor {idx}: buffer [{addr:#x}, +{length}) "
                                        "is not in guest memory")
            if flags & VIRTQ_DESC_F_WRITE:
                writable.append(Buffer(addr, length))
            elif writable:
                raise PeerSpecViolation("SPLIT-DRV-2", f"descriptor {idx} is device-readable after a "
                                        "device-writable one")
            else:
                readable.append(Buffer(addr, length))
            total += length
            if total > VIRTQ_MAX_CHAIN_BYTES:
                raise PeerSpecViolation("SPLIT-DRV-4", f"chain from head {head} exceeds 2^32 bytes")
            if not flags & VIRTQ_DESC_F_NEXT:
                return Chain(head, tuple(readable), tuple(writable), in_indirect)
            if nxt >= table_size:
                raise PeerSpecViolation("SPLIT-DRV-D2", f"descriptor {idx} has next={nxt}, "
                                        f"table size {table_size}")
            idx = nxt

    # -- used ring -------------------------------------------------------------------------------------
    @guarded
    def add_used(self, head: int, length: int) -> None:
        """Return a chain: write the used element, then advance used idx (SPLIT-DEV-14)."""
        chain = self._in_flight.get(head)
        if chain is None:
            raise LocalSpecViolation("SPLIT-DEV-D1", f"head {head} is not in flight")
        if not 0 <= length <= chain.writable_len:
            raise LocalSpecViolation("SPLIT-DEV-D2", f"used len {length}, {chain.writable_len} writable bytes")
        del self._in_flight[head]
        self.write_used_element(self.used_idx, head, length)
        self.used_idx = u16(self.used_idx + 1)
        self.mem.write_u16(self.addrs.used + USED_IDX, self.used_idx)

    def write_used_element(self, idx: int, head: int, length: int) -> None:
        """Write the used ring element for used idx ``idx``.

        Override point: :meth:`add_used` calls it after its checks and before it publishes the new used
        idx, so a device that writes the element late, or writes other values, overrides only this.
        """
        self.mem.pack(USED_ELEM_FMT, self.addrs.used + used_ring_entry(idx % self.queue_size), head, length)

    @guarded
    def notify_needed(self) -> bool:
        """Whether a used buffer notification is due for what was used since the last one (§2.7.7.2)."""
        old, new = self._last_signalled, self.used_idx
        if old == new:
            return False
        flags = self.mem.read_u16(self.addrs.avail + AVAIL_FLAGS)
        if self.event_idx:
            if flags & ~VIRTQ_AVAIL_F_NO_INTERRUPT:
                raise PeerSpecViolation("SPLIT-DRV-14", f"avail flags {flags:#x} with VIRTIO_F_EVENT_IDX")
            # SPLIT-DEV-11: the lower bit is ignored.
            event = self.mem.read_u16(self.addrs.avail + used_event_offset(self.queue_size))
            need = virtq_need_event(event, new, old)
        else:
            if flags not in (0, VIRTQ_AVAIL_F_NO_INTERRUPT):
                raise PeerSpecViolation("SPLIT-DRV-12", f"avail flags {flags:#x}")
            need = not flags  # SPLIT-DEV-10 (MUST) / SPLIT-DEV-9 (SHOULD NOT); used_event ignored
        # The window is "since the last decision", as QEMU's virtio_split_should_notify keeps it: an
        # entry judged once is not judged again against a used_event the driver writes later.
        self._last_signalled = new
        return need

    def signalled(self) -> None:
        """Record a used buffer notification sent for another reason."""
        self._last_signalled = self.used_idx

    @guarded
    def set_avail_notifications(self, enabled: bool) -> None:
        """Ask for (or advise against) available buffer notifications (SPLIT-DEV-17..20)."""
        if self.event_idx:
            event = self.last_avail_idx if enabled else u16(self.last_avail_idx - 0x8000)
            self.mem.write_u16(self.addrs.used + avail_event_offset(self.queue_size), event)
        else:
            self.mem.write_u16(self.addrs.used, 0 if enabled else VIRTQ_USED_F_NO_NOTIFY)
