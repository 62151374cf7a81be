"""The device side of a packed virtqueue (§2.8): the model plays the device.

Everything read from the descriptor ring, indirect tables and the driver area was written by the driver
and is untrusted. :meth:`PackedQueueDevice.pop` turns every malformed input into a
:class:`PeerSpecViolation` naming the driver requirement it breaks; no other exception escapes. The
checks, in the order a list walk meets them:

=============================================  ==================================================
list reaches Queue Size descriptors            PACKED-DRV-7 (a loop round the ring included)
list runs into descriptors still in flight     PACKED-DRV-10
AVAIL == USED == wrap counter (looks used)     PACKED-DRV-D2
a later descriptor of a list not available     PACKED-DRV-11
INDIRECT not negotiated                        PACKED-DRV-12
INDIRECT with NEXT, or after a NEXT            PACKED-DRV-15
indirect len 0 or not 16*n                     PACKED-DRV-D7
indirect table longer than Queue Size          PACKED-DRV-14
a flag but WRITE inside an indirect table      PACKED-DRV-13 (nested INDIRECT, NEXT)
element outside guest memory                   PACKED-DRV-D4
readable after writable                        PACKED-DRV-8
more than 2^32 bytes                           PACKED-DRV-D13
Buffer ID still in flight                      PACKED-DRV-D5
=============================================  ==================================================

The device polls one position, ``_avail`` (§2.8.2), and writes used descriptors at ``_used``; the
descriptors in between are the ones in flight. Buffer IDs are read from a list's last descriptor
(§2.8.6); inside an indirect table they are ignored (PACKED-DEV-D5).
"""

from __future__ import annotations

from refmodel.errors import LocalSpecViolation, PeerSpecViolation, Sticky, guarded
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.notifications import DeviceNotifications
from refmodel.virtio.packed.layout import (DESC_FLAGS, EVENT_SUPPRESS_SIZE, PDESC_BODY_FMT, PDESC_FMT,
                                           PVIRTQ_DESC_SIZE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT,
                                           VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE,
                                           check_queue_size, misalignment, outside, used_flags, wrap_of)
from refmodel.virtio.virtq import Buffer, Chain, QueueAddresses

#: PACKED-DRV-D13 (AMB-PACKED-CHAIN-BYTES): the split ring's bound on a buffer's total length.
MAX_BUFFER_BYTES = 1 << 32


class PackedQueueDevice(DeviceNotifications, Sticky):
    """Our device's view of one packed virtqueue the driver placed in guest memory.

    ``check_driver_writes`` keeps a copy of every descriptor popped and compares it when the device
    writes over it (PACKED-DRV-2), and compares the device area with what the device wrote (PACKED-DRV-D9).
    """

    def __init__(self, mem: GuestMemory, addrs: QueueAddresses, queue_size: int, *,
                 event_idx: bool = False, indirect_desc: bool = False, start_idx: int = 0,
                 check_driver_writes: bool = False) -> None:
        check_queue_size(queue_size)
        # The driver chose the addresses: a bad placement is the peer's.
        if why := misalignment(addrs):
            raise PeerSpecViolation("PACKED-DRV-1", why)
        if why := outside(addrs, mem, queue_size):
            raise PeerSpecViolation("PACKED-DRV-D1", why)
        if not (isinstance(start_idx, int) and start_idx >= 0):
            raise ValueError(f"start_idx={start_idx!r} is not a descriptor count >= 0")
        self.mem, self.addrs, self.queue_size = mem, addrs, queue_size
        self.event_idx, self.indirect_desc = event_idx, indirect_desc
        self.check_driver_writes = check_driver_writes
        self._avail = start_idx  # the next position to poll for an available descriptor
        self._used = start_idx  # where the next used descriptor goes
        self._last_signalled = start_idx
        self._in_flight: dict[int, tuple[Chain, int]] = {}  # buffer ID -> (chain, descriptors it took)
        self._popped: dict[int, bytes] = {}  # position -> descriptor bytes at pop (check_driver_writes)
        self._device_event = mem.read(addrs.used, EVENT_SUPPRESS_SIZE)

    # -- state ------------------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def in_flight_chain(self, head: int) -> Chain:
        return self._in_flight[head][0]

    def is_in_flight(self, head: int) -> bool:
        return head in self._in_flight

    @property
    def next_avail(self) -> int:
        """The position polled next: offset ``% queue_size``, Driver Ring Wrap Counter :func:`wrap_of`."""
        return self._avail

    @property
    def next_used(self) -> int:
        """Where the next used descriptor goes; the Device Ring Wrap Counter is ``wrap_of(next_used)``."""
        return self._used

    @property
    def last_signalled(self) -> int:
        """The used position at the last notification decision (:meth:`notify_needed`, :meth:`signalled`)."""
        return self._last_signalled

    # -- available descriptors --------------------------------------------------------------------------
    @guarded
    def available(self) -> int:
        """How many lists the driver has made available that we have not popped (walks and checks them)."""
        pos, seen, n = self._avail, set(self._in_flight), 0
        while (got := self.walk_untrusted(pos)) is not None:
            chain, ndesc = got
            if chain.head in seen:
                raise PeerSpecViolation("PACKED-DRV-D5", f"Buffer ID {chain.head} made available twice")
            seen.add(chain.head)
            pos += ndesc
            n += 1
        return n

    def avail_mark(self) -> int:
        """The position after the lists the driver has made available now (see refmodel.virtio.rings). Reads
        without judging: the walk stops at the first list the device would reject, which pop then names."""
        pos = self._avail
        try:
            while (got := self.walk_untrusted(pos)) is not None:
                pos += got[1]
        except PeerSpecViolation:
            pass
        return pos

    @guarded
    def pop(self) -> Chain | None:
        """Take the next available list, or None if the next position is not available."""
        if self.check_driver_writes:
            self._check_device_area()
        got = self.walk_untrusted(self._avail)
        if got is None:
            return None
        chain, ndesc = got
        if chain.head in self._in_flight:
            raise PeerSpecViolation("PACKED-DRV-D5", f"Buffer ID {chain.head} made available while in flight")
        if self.check_driver_writes:
            for pos in range(self._avail, self._avail + ndesc):
                self._popped[pos] = self.mem.read(self._slot(pos), PVIRTQ_DESC_SIZE)
        self._avail += ndesc
        self._in_flight[chain.head] = (chain, ndesc)
        return chain

    def _slot(self, pos: int) -> int:
        return self.addrs.desc + PVIRTQ_DESC_SIZE * (pos % self.queue_size)

    def walk_untrusted(self, pos: int) -> tuple[Chain, int] | None:
        """The list whose first descriptor is at ``pos`` and how many ring descriptors it takes; None if
        that descriptor is not available. Checks everything but Buffer ID reuse (the caller knows).

        Override point: a device that reads lists its own way (call this, then reinterpret).
        """
        mem, qs = self.mem, self.queue_size
        limit = self._used + qs  # positions from here on still hold descriptors in flight
        readable: list[Buffer] = []
        writable: list[Buffer] = []
        total = ndesc = 0
        first = pos
        while True:
            if ndesc == qs:
                raise PeerSpecViolation("PACKED-DRV-7", f"the list from offset {first % qs} has NEXT on all "
                                        f"{qs} descriptors of the ring")
            addr, length, buf_id, flags = mem.unpack(PDESC_FMT, self._slot(pos), 16)
            wrap = wrap_of(pos, qs)
            avail, used = bool(flags & VIRTQ_DESC_F_AVAIL), bool(flags & VIRTQ_DESC_F_USED)
            if avail != wrap and not ndesc:  # not made available in this lap
                return None
            if pos >= limit:  # the slot still holds a descriptor in flight
                raise PeerSpecViolation("PACKED-DRV-10", f"the list from offset {first % qs} runs into "
                                        f"offset {pos % qs}, still in flight "
                                        f"({self._avail - self._used} descriptors in flight)")
            if avail != wrap:
                raise PeerSpecViolation("PACKED-DRV-11", f"the list from offset {first % qs} is available "
                                        f"but its descriptor {ndesc} (offset {pos % qs}) is not")
            if used == wrap:
                raise PeerSpecViolation("PACKED-DRV-D2", f"descriptor at offset {pos % qs} has AVAIL and "
                                        f"USED both {int(wrap)}, the Driver Ring Wrap Counter: it looks used")
            ndesc += 1
            pos += 1
            if flags & VIRTQ_DESC_F_INDIRECT:
                if not self.indirect_desc:
                    raise PeerSpecViolation("PACKED-DRV-12", f"descriptor at offset {(pos - 1) % qs} sets "
                                            "INDIRECT")
                if flags & VIRTQ_DESC_F_NEXT or ndesc > 1:
                    raise PeerSpecViolation("PACKED-DRV-15", f"descriptor at offset {(pos - 1) % qs} sets "
                                            "INDIRECT in a list linked by NEXT")
                # PACKED-DEV-D6: WRITE on this descriptor is ignored.
                self._walk_table_untrusted(addr, length, readable, writable)
                return Chain(buf_id, tuple(readable), tuple(writable), True), ndesc
            total = self._element_untrusted(addr, length, flags, readable, writable, total,
                                            f"descriptor at offset {(pos - 1) % qs}")
            if not flags & VIRTQ_DESC_F_NEXT:
                # §2.8.6: the Buffer ID is in the last descriptor; NEXT-ed ones may carry anything there.
                return Chain(buf_id, tuple(readable), tuple(writable), False), ndesc

    def _walk_table_untrusted(self, table: int, length: int, readable: list[Buffer],
                              writable: list[Buffer]) -> None:
        mem, qs = self.mem, self.queue_size
        if length == 0 or length % PVIRTQ_DESC_SIZE:
            raise PeerSpecViolation("PACKED-DRV-D7", f"indirect table len {length}")
        count = length // PVIRTQ_DESC_SIZE
        if count > qs:
            raise PeerSpecViolation("PACKED-DRV-14", f"indirect table of {count} descriptors, "
                                    f"queue size {qs}")
        if not mem.contains(table, length):
            raise PeerSpecViolation("PACKED-DRV-D4", f"indirect table [{table:#x}, +{length}) is not in "
                                    "guest memory")
        total = 0
        for i in range(count):
            # PACKED-DEV-D5: the Buffer ID here is ignored; every entry belongs to the list, in order.
            addr, elen, _, flags = mem.unpack(PDESC_FMT, table + PVIRTQ_DESC_SIZE * i)
            if flags & ~VIRTQ_DESC_F_WRITE:
                raise PeerSpecViolation("PACKED-DRV-13", f"indirect table entry {i} has flags {flags:#x}: "
                                        "only WRITE is allowed (AMB-PACKED-INDIRECT-RESERVED)")
            total = self._element_untrusted(addr, elen, flags, readable, writable, total,
                                            f"indirect table entry {i}")

    @staticmethod
    def _check_element(mem: GuestMemory, addr: int, length: int, where: str) -> None:
        if not mem.contains(addr, length):
            raise PeerSpecViolation("PACKED-DRV-D4", f"{where}: element [{addr:#x}, +{length}) is not in "
                                    "guest memory")

    def _element_untrusted(self, addr: int, length: int, flags: int, readable: list[Buffer],
                           writable: list[Buffer], total: int, where: str) -> int:
        """Append one element, in ring (or table) order: the chain keeps the driver's order (PACKED-DEV-8)."""
        self._check_element(self.mem, addr, length, where)
        if flags & VIRTQ_DESC_F_WRITE:
            writable.append(Buffer(addr, length))
        elif writable:
            raise PeerSpecViolation("PACKED-DRV-8", f"{where} is device-readable after a device-writable one")
        else:
            readable.append(Buffer(addr, length))
        total += length
        if total > MAX_BUFFER_BYTES:
            raise PeerSpecViolation("PACKED-DRV-D13", f"{where}: the buffer exceeds 2^32 bytes")
        return total

    def _check_device_area(self) -> None:
        if self.mem.read(self.addrs.used, EVENT_SUPPRESS_SIZE) != self._device_event:
            raise PeerSpecViolation("PACKED-DRV-D9", "the driver wrote the Device Event Suppression "
                                    "structure")

    # -- used descriptors -------------------------------------------------------------------------------
    @guarded
    def add_used(self, head: int, length: int) -> None:
        """Return buffer ``head`` with ``length`` bytes written: one used descriptor at the next used
        position, then skip the descriptors the list took (§2.8.6). Any in-flight buffer, in any order."""
        entry = self._in_flight.get(head)
        if entry is None:
            raise LocalSpecViolation("PACKED-DEV-D4", f"Buffer ID {head} is not in flight")
        chain, ndesc = entry
        if not 0 <= length <= chain.writable_len:
            raise LocalSpecViolation("PACKED-DEV-D3", f"used len {length}, {chain.writable_len} writable "
                                     "bytes")
        if self.check_driver_writes:
            self._check_driver_left_alone(ndesc)
        del self._in_flight[head]
        self.write_used_descriptor(self._used, head, length)
        self._used += ndesc

    def _check_driver_left_alone(self, ndesc: int) -> None:
        """PACKED-DRV-2: the descriptors the device is about to pass over are as it popped them."""
        for pos in range(self._used, self._used + ndesc):
            was = self._popped.pop(pos, None)
            if was is not None and self.mem.read(self._slot(pos), PVIRTQ_DESC_SIZE) != was:
                raise PeerSpecViolation("PACKED-DRV-2", f"the driver changed the descriptor at offset "
                                        f"{pos % self.queue_size} before the device marked it used")

    def write_used_descriptor(self, pos: int, buf_id: int, length: int) -> None:
        """Write the used descriptor for ``buf_id`` at position ``pos``: id and len, then flags last
        (PACKED-DEV-7). WRITE says data was written (§2.8.3, AMB-PACKED-USED-WRITE).

        Override point: :meth:`add_used` calls it after its checks, so a device that writes other values
        or in another order overrides only this.
        """
        slot = self._slot(pos)
        self.mem.pack(PDESC_BODY_FMT, slot, 0, length, buf_id)  # §2.8.4: addr is unused
        flags = used_flags(wrap_of(pos, self.queue_size)) | (VIRTQ_DESC_F_WRITE if length else 0)
        self.mem.write_u16(slot + DESC_FLAGS, flags)

    # -- notifications (§2.8.10) ------------------------------------------------------------------------

