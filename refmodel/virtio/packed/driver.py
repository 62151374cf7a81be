"""The driver side of a packed virtqueue (§2.8.21, §2.8.22): the model plays the driver.

The device writes used descriptors into the same ring and the device area, so everything read from them
is untrusted: a bad value raises :class:`PeerSpecViolation` naming the device requirement it breaks. A
caller asking for something the spec forbids the driver gets :class:`LocalSpecViolation`. Either latches
the queue in ERROR.

The public API is the split driver's (:class:`refmodel.virtio.split.driver.SplitQueueDriver`), so
:class:`conformance.interface.DriverQueueUnderTest` fits both; ``add`` returns the Buffer ID, which is
what ``UsedBuffer.head`` and ``Chain.head`` carry for a packed ring.

Positions are free-running descriptor counts (see :mod:`refmodel.virtio.packed.layout`): ``_next_avail``
where the next descriptor goes, ``_published`` the end of what the device may see, ``_used`` where the
device writes its next used descriptor. Between ``_used`` and ``_published`` lie the descriptors in flight.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from refmodel.errors import LayoutError, LocalSpecViolation, PeerSpecViolation, Sticky, guarded
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.device import MAX_BUFFER_BYTES
from refmodel.virtio.packed.notifications import DriverNotifications
from refmodel.virtio.packed.layout import (DESC_FLAGS, EVENT_SUPPRESS_SIZE, PDESC_BODY_FMT, PDESC_FMT,
                                           PVIRTQ_DESC_SIZE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_INDIRECT,
                                           VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_USED, VIRTQ_DESC_F_WRITE,
                                           avail_flags, check_queue_size, desc_ring_size, misalignment,
                                           outside, used_flags, wrap_of)
from refmodel.virtio.split.driver import IndirectArena, QueueFull
from refmodel.virtio.virtq import QueueAddresses, UsedBuffer

__all__ = ["IndirectArena", "PackedQueueDriver", "QueueFull", "SCRUB_ID"]

#: With ``scrub_used``, the Buffer ID in every descriptor but a list's last (§2.8.6 puts the real one
#: there). A used descriptor showing it had its flags written before its id (PACKED-DEV-7).
SCRUB_ID = 0xFFFF


@attrs.define
class _InFlight:
    token: object
    ndesc: int  # ring descriptors the list takes (1 for an indirect one)
    writable: tuple[tuple[int, int], ...]  # (addr, len) of the device-writable elements, in order
    indirect: tuple[int, int] | None  # (table addr, bytes)
    snapshot: list[tuple[int, bytes, str]] | None = None  # (addr, bytes, req) the device must leave alone

    @property
    def writable_len(self) -> int:
        return sum(n for _, n in self.writable)


class PackedQueueDriver(DriverNotifications, Sticky):
    """Our driver's view of one packed virtqueue in guest memory.

    ``check_device_writes`` snapshots readable buffers and indirect tables at add and compares them at
    harvest (PACKED-DEV-4, PACKED-DEV-D7), compares the driver area (PACKED-DEV-D9), and compares each
    harvested used descriptor before the driver reuses its slot (PACKED-DEV-7).
    ``used_len_needs_write=False`` reads a used len without VIRTQ_DESC_F_WRITE too (AMB-PACKED-USED-WRITE).
    """

    def __init__(self, mem: GuestMemory, addrs: QueueAddresses, queue_size: int, *,
                 event_idx: bool = False, indirect_desc: bool = False, start_idx: int = 0,
                 indirect_arena: IndirectArena | None = None, scrub_used: bool = False,
                 check_device_writes: bool = False, used_len_needs_write: bool = True) -> None:
        check_queue_size(queue_size)
        if why := misalignment(addrs):
            raise LocalSpecViolation("PACKED-DRV-1", why)
        if why := outside(addrs, mem, queue_size):
            raise LocalSpecViolation("PACKED-DRV-D1", why)
        if not (isinstance(start_idx, int) and start_idx >= 0):
            raise ValueError(f"start_idx={start_idx!r} is not a descriptor count >= 0")
        self.mem, self.addrs, self.queue_size = mem, addrs, queue_size
        self.event_idx, self.indirect_desc, self.scrub_used = event_idx, indirect_desc, scrub_used
        self.check_device_writes, self.used_len_needs_write = check_device_writes, used_len_needs_write
        self.indirect_arena = indirect_arena
        # Allocate and zero the queue memory (PACKED-DRV-D12); driver area ENABLE.
        mem.fill(addrs.desc, desc_ring_size(queue_size), 0)
        mem.fill(addrs.avail, EVENT_SUPPRESS_SIZE, 0)
        mem.fill(addrs.used, EVENT_SUPPRESS_SIZE, 0)
        self._prefill(start_idx)
        self._next_avail = self._published = self._used = self._last_kick = start_idx
        self._free_ids = list(range(queue_size - 1, -1, -1))  # AMB-PACKED-BUFFER-ID
        self._num_free = queue_size
        self._in_flight: dict[int, _InFlight] = {}
        self._pending: list[int] = []  # IDs added but not yet published, in ring order
        self._deferred: tuple[int, int] | None = None  # (flags addr, flags) of the batch's first descriptor
        self._driver_event = mem.read(addrs.avail, EVENT_SUPPRESS_SIZE)
        self._harvested: dict[int, bytes] = {}  # offset -> used descriptor as harvested (check_device_writes)

    def _prefill(self, start: int) -> None:
        """Make the ring look as if ``start`` descriptors went round, each used where it was made available.

        Offsets already passed in the current lap hold this lap's used flags, the rest the previous lap's
        (zero before the first wrap): then neither side sees a stale descriptor as available or used.
        """
        qs = self.queue_size
        if not start:
            return
        here, lap_wrap = start % qs, wrap_of(start, qs)
        for off in range(qs):
            flags = used_flags(lap_wrap if off < here else lap_wrap ^ 1)
            if flags:
                self.mem.write_u16(self.addrs.desc + PVIRTQ_DESC_SIZE * off + DESC_FLAGS, flags)

    # -- state ------------------------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Free descriptors in the ring."""
        return self._num_free

    @property
    def in_flight(self) -> int:
        """Buffers added (published or not) and not yet harvested."""
        return len(self._in_flight)

    @property
    def last_kick_idx(self) -> int:
        """The published position at the last notification (:meth:`notify_needed` or :meth:`kicked`)."""
        return self._last_kick

    @property
    def next_avail(self) -> int:
        """The position of the next descriptor not yet made available (pending ones count as not)."""
        return self._published

    @property
    def next_used(self) -> int:
        """Where the driver expects the next used descriptor."""
        return self._used

    def _slot(self, pos: int) -> int:
        return self.addrs.desc + PVIRTQ_DESC_SIZE * (pos % self.queue_size)

    # -- supplying buffers (§2.8.21) --------------------------------------------------------------------
    def _check_buffer(self, addr: int, length: int) -> None:
        if not (isinstance(length, int) and 0 <= length < 1 << 32):
            raise LayoutError(f"buffer len {length!r} does not fit the 32-bit len field")
        if not (isinstance(addr, int) and 0 <= addr < 1 << 64) or not self.mem.contains(addr, length):
            raise LocalSpecViolation("PACKED-DRV-D4", f"buffer [{addr:#x}, +{length}) is not in guest memory")

    @guarded
    def add(self, readable: Sequence[tuple[int, int]] = (), writable: Sequence[tuple[int, int]] = (), *,
            token: object = None, indirect: bool = False, table_write_flag: bool = False) -> int:
        """Write a list (readable elements, then writable: PACKED-DRV-8) into the ring; return its Buffer ID.

        Nothing is visible to the device until :meth:`publish`: the first descriptor of the batch keeps
        its old flags until then (AMB-PACKED-BATCH). ``table_write_flag`` also sets WRITE on the
        descriptor naming an indirect table, which the device must ignore (PACKED-DEV-D6).
        """
        bufs = [(a, n, 0) for a, n in readable] + [(a, n, VIRTQ_DESC_F_WRITE) for a, n in writable]
        if not bufs:
            raise LayoutError("a buffer needs at least one element (§2.8)")
        for a, n, _ in bufs:
            self._check_buffer(a, n)
        total = sum(n for _, n, _ in bufs)
        if total > MAX_BUFFER_BYTES:
            raise LocalSpecViolation("PACKED-DRV-D13", f"buffer of {total} bytes")
        qs, arena = self.queue_size, self.indirect_arena
        if indirect:
            if not self.indirect_desc:
                raise LocalSpecViolation("PACKED-DRV-12", "indirect list without VIRTIO_F_INDIRECT_DESC")
            if len(bufs) > qs:
                raise LocalSpecViolation("PACKED-DRV-14", f"indirect table of {len(bufs)}, queue size {qs}")
            if arena is None:
                raise LayoutError("indirect lists need an IndirectArena for their tables")
            ndesc = 1
        else:
            if len(bufs) > qs:
                raise LocalSpecViolation("PACKED-DRV-7", f"{len(bufs)} descriptors, queue size {qs}")
            ndesc = len(bufs)
        # PACKED-DRV-10: room for the whole list before any of it is written.
        if ndesc > self._num_free or not self._free_ids:
            raise QueueFull(f"{ndesc} descriptors needed, {self._num_free} free")
        mem = self.mem
        ind: tuple[int, int] | None = None
        if indirect and arena is not None:
            nbytes = PVIRTQ_DESC_SIZE * len(bufs)
            table = arena.alloc(nbytes)
            for i, (a, n, f) in enumerate(bufs):  # only WRITE inside (PACKED-DRV-13); ID reserved: 0
                mem.pack(PDESC_FMT, table + PVIRTQ_DESC_SIZE * i, a, n, 0, f)
            ind = (table, nbytes)
            ring = [(table, nbytes, VIRTQ_DESC_F_INDIRECT | (VIRTQ_DESC_F_WRITE if table_write_flag else 0))]
        else:
            ring = [(a, n, f | (VIRTQ_DESC_F_NEXT if i + 1 < len(bufs) else 0))
                    for i, (a, n, f) in enumerate(bufs)]
        buf_id = self._free_ids.pop()
        start = self._next_avail
        if self.check_device_writes:
            self._check_harvested(start, ndesc)
        for i, (a, n, f) in enumerate(ring):
            pos = start + i
            last = i + 1 == len(ring)
            flags = f | avail_flags(wrap_of(pos, qs))  # PACKED-DRV-D2, every descriptor of the list
            desc_id = buf_id if last or not self.scrub_used else SCRUB_ID
            if i == 0 and not self._pending:
                # The batch's first descriptor: everything but the flags now, the flags at publish.
                mem.pack(PDESC_BODY_FMT, self._slot(pos), a, n, desc_id)
                self._deferred = (self._slot(pos) + DESC_FLAGS, flags)
            else:
                mem.pack(PDESC_FMT, self._slot(pos), a, n, desc_id, flags)
        self._next_avail += ndesc
        self._num_free -= ndesc
        self._pending.append(buf_id)
        wbufs = tuple((a, n) for a, n, f in bufs if f)
        inf = _InFlight(token, ndesc, wbufs, ind)
        if self.check_device_writes:
            inf.snapshot = [(a, mem.read(a, n), "PACKED-DEV-4") for a, n, f in bufs if not f]
            if ind is not None:
                inf.snapshot.append((ind[0], mem.read(*ind), "PACKED-DEV-D7"))
        self._in_flight[buf_id] = inf
        return buf_id

    def _check_harvested(self, start: int, ndesc: int) -> None:
        """PACKED-DEV-7: a used descriptor is as harvested until the driver writes over it."""
        for pos in range(start, start + ndesc):
            off = pos % self.queue_size
            was = self._harvested.pop(off, None)
            if was is not None and self.mem.read(self._slot(pos), PVIRTQ_DESC_SIZE) != was:
                raise PeerSpecViolation("PACKED-DEV-7", f"the device changed the used descriptor at offset "
                                        f"{off} after marking it used")

    @guarded
    def publish(self) -> bool:
        """Expose the pending lists: write the batch's first flags (§2.8.21.1). Returns whether to notify."""
        if self._deferred is not None:
            self.mem.write_u16(*self._deferred)
            self._deferred = None
        self._published = self._next_avail
        self._pending.clear()
        return self.notify_needed()

    def used_mark(self) -> int:
        """The position after the descriptors the device has marked used, read without harvesting them
        (see refmodel.virtio.rings). Stops at anything harvest would reject, which harvest then names."""
        return self._peek_used()[0]

    def used_ids(self) -> list[int]:
        """The Buffer IDs of the used descriptors not yet harvested, in ring order (read, not judged)."""
        return [buf_id for buf_id, _, _ in self._peek_used()[1]]

    def used_descs(self) -> list[tuple[int, int, int]]:
        """(Buffer ID, len, flags) of the used descriptors not yet harvested, in ring order (read, not
        judged: harvest names what is wrong with them)."""
        return self._peek_used()[1]

    def writable_of(self, buf_id: int) -> tuple[tuple[int, int], ...] | None:
        """The device-writable elements (addr, len) of the buffer in flight as ``buf_id``, in the order the
        driver made them available (in the ring or in an indirect table); None if it is not in flight."""
        inf = self._in_flight.get(buf_id)
        return None if inf is None else inf.writable

    def _peek_used(self) -> tuple[int, list[tuple[int, int, int]]]:
        pos, qs, out, ids = self._used, self.queue_size, [], set()
        while pos < self._published:
            _, length, buf_id, flags = self.mem.unpack(PDESC_FMT, self._slot(pos), 16)
            wrap = wrap_of(pos, qs)
            inf = self._in_flight.get(buf_id)
            if bool(flags & VIRTQ_DESC_F_USED) != wrap or bool(flags & VIRTQ_DESC_F_AVAIL) != wrap or inf is None \
                    or buf_id in ids:
                break
            ids.add(buf_id)
            out.append((buf_id, length, flags))
            pos += inf.ndesc
        return pos, out

    # -- used buffers (§2.8.22) -------------------------------------------------------------------------
    @guarded
    def harvest(self) -> list[UsedBuffer]:
        """Collect every buffer the device has returned since the last call, in ring order."""
        mem, qs = self.mem, self.queue_size
        if self.check_device_writes and mem.read(self.addrs.avail, EVENT_SUPPRESS_SIZE) != self._driver_event:
            raise PeerSpecViolation("PACKED-DEV-D9", "the device wrote the Driver Event Suppression "
                                    "structure")
        out = []
        while self._used < self._published:  # something published is in flight
            slot = self._slot(self._used)
            _, length, buf_id, flags = mem.unpack(PDESC_FMT, slot, 16)
            wrap = wrap_of(self._used, qs)
            avail, used = bool(flags & VIRTQ_DESC_F_AVAIL), bool(flags & VIRTQ_DESC_F_USED)
            if used != wrap:
                if avail == wrap:  # still as the driver made it available
                    break
                raise PeerSpecViolation("PACKED-DEV-D2", f"descriptor at offset {self._used % qs}, in "
                                        f"flight, has flags {flags:#x}: neither available nor used in the "
                                        f"lap with wrap counter {wrap}")
            if avail != used:
                raise PeerSpecViolation("PACKED-DEV-D2", f"used descriptor at offset {self._used % qs} has "
                                        f"USED {int(used)} but AVAIL {int(avail)}")
            inf = self._take_untrusted(buf_id, self._used % qs)
            if not flags & VIRTQ_DESC_F_WRITE and self.used_len_needs_write:
                length = 0  # PACKED-DRV-D3: reserved, ignored
            elif length > inf.writable_len:
                raise PeerSpecViolation("PACKED-DEV-D3", f"used len {length} for Buffer ID {buf_id}, only "
                                        f"{inf.writable_len} writable bytes")
            # PACKED-DRV-D6: NEXT in a used descriptor is ignored.
            for addr, data, req in inf.snapshot or ():
                if mem.read(addr, len(data)) != data:
                    what = "indirect table" if req == "PACKED-DEV-D7" else "device-readable buffer"
                    raise PeerSpecViolation(req, f"the device wrote the {what} at {addr:#x} of Buffer ID "
                                            f"{buf_id}")
            if self.check_device_writes:
                self._harvested[self._used % qs] = mem.read(slot, PVIRTQ_DESC_SIZE)
            del self._in_flight[buf_id]
            self._free_ids.append(buf_id)
            self._num_free += inf.ndesc
            if inf.indirect is not None and self.indirect_arena is not None:
                self.indirect_arena.free(*inf.indirect)
            self._used += inf.ndesc  # skip the rest of the list (§2.8.6)
            out.append(UsedBuffer(buf_id, length, inf.token))
        return out

    def _take_untrusted(self, buf_id: int, off: int) -> _InFlight:
        """The in-flight buffer a used descriptor names, or the requirement the name breaks."""
        if self.scrub_used and buf_id == SCRUB_ID:
            raise PeerSpecViolation("PACKED-DEV-7", f"used descriptor at offset {off} was marked used before "
                                    "its Buffer ID was written")
        inf = self._in_flight.get(buf_id)
        if inf is None:
            raise PeerSpecViolation("PACKED-DEV-D4", f"used descriptor at offset {off} names Buffer ID "
                                    f"{buf_id}, not in flight")
        if buf_id in self._pending:
            if buf_id == self._pending[0]:
                raise PeerSpecViolation("PACKED-DEV-6", f"Buffer ID {buf_id} used before the driver made its "
                                        "first descriptor available")
            raise PeerSpecViolation("PACKED-DEV-1", f"Buffer ID {buf_id} used, but it sits behind a "
                                    "descriptor not yet available: the device left ring order")
        return inf

    # -- used buffer notification suppression (§2.8.10) -------------------------------------------------
