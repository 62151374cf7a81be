"""The driver side of a split virtqueue (§2.7.13, §2.7.14): the model plays the driver.

The used ring is written by the device, so everything read from it is untrusted: a bad value raises
:class:`PeerSpecViolation` naming the device requirement it breaks. A caller asking for something the
spec forbids the driver gets :class:`LocalSpecViolation`. Either latches the queue in ERROR.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from refmodel.virtio.constants import (VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE, VIRTQ_MAX_CHAIN_BYTES, VIRTQ_USED_F_NO_NOTIFY)
from refmodel.errors import LayoutError, LocalSpecViolation, PeerSpecViolation, Sticky, VirtioModelError, guarded
from refmodel.virtio.split.layout import (AVAIL_IDX, DESC_FMT, USED_ELEM_FMT, USED_FLAGS, USED_IDX, VIRTQ_DESC_SIZE,
                     avail_event_offset, avail_ring_size, check_queue_size, desc_table_size,
                     used_event_offset, used_ring_entry, used_ring_size)
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import QueueAddresses, UsedBuffer, u16, virtq_need_event

#: Written over a harvested used element when ``scrub_used`` is on: a device that later publishes a
#: used idx without writing the element first shows up as this id (SPLIT-DEV-14).
SCRUB_ID = 0xFFFFFFFF


class QueueFull(VirtioModelError):
    """Not enough free descriptors for the chain; harvest used buffers first."""


class IndirectArena:
    """A bump allocator for indirect tables in a region of guest memory the driver owns."""

    def __init__(self, base: int, size: int) -> None:
        self.base, self.size = base, size
        self._free: list[tuple[int, int]] = [(base, size)]

    def alloc(self, nbytes: int) -> int:
        nbytes = (nbytes + 15) // 16 * 16
        for i, (addr, size) in enumerate(self._free):
            if size >= nbytes:
                self._free[i] = (addr + nbytes, size - nbytes)
                return addr
        raise QueueFull(f"no room for a {nbytes}-byte indirect table")

    def free(self, addr: int, nbytes: int) -> None:
        nbytes = (nbytes + 15) // 16 * 16
        self._free.append((addr, nbytes))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for a, s in self._free:
            if merged and merged[-1][0] + merged[-1][1] == a:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((a, s))
        self._free = merged


@attrs.define
class _InFlight:
    token: object
    descs: list[int]
    writable_len: int
    indirect: tuple[int, int] | None  # (table addr, bytes)
    snapshot: list[tuple[int, bytes, str]] | None = None  # (addr, bytes, req) the device must leave alone


class SplitQueueDriver(Sticky):
    """Our driver's view of one split virtqueue in guest memory."""

    def __init__(self, mem: GuestMemory, addrs: QueueAddresses, queue_size: int, *,
                 event_idx: bool = False, indirect_desc: bool = False, start_idx: int = 0,
                 indirect_arena: IndirectArena | None = None, scrub_used: bool = False,
                 check_device_writes: bool = False) -> None:
        check_queue_size(queue_size)
        if why := addrs.misalignment():
            raise LocalSpecViolation("SPLIT-DRV-1", why)
        if why := addrs.outside(mem, queue_size):
            raise LocalSpecViolation("SPLIT-DRV-D5", why)
        self.mem, self.addrs, self.queue_size = mem, addrs, queue_size
        self.event_idx, self.indirect_desc, self.scrub_used = event_idx, indirect_desc, scrub_used
        # Snapshot descriptors and readable buffers at add, compare at harvest (SPLIT-DEV-5, SPLIT-DEV-3).
        self.check_device_writes = check_device_writes
        self.indirect_arena = indirect_arena
        start_idx = u16(start_idx)
        # Driver allocates and zeroes the rings; used flags start at 0 (SPLIT-DRV-18).
        mem.fill(addrs.desc, desc_table_size(queue_size), 0)
        mem.fill(addrs.avail, avail_ring_size(queue_size), 0)
        mem.fill(addrs.used, used_ring_size(queue_size), 0)
        mem.write_u16(addrs.avail + AVAIL_IDX, start_idx)
        mem.write_u16(addrs.used + USED_IDX, start_idx)
        if scrub_used:
            for i in range(queue_size):
                mem.pack(USED_ELEM_FMT, addrs.used + used_ring_entry(i), SCRUB_ID, 0)
        self.avail_idx = start_idx  # published value
        self._pending = 0  # heads placed in the ring but not yet published
        self.last_used_idx = start_idx
        self._free = list(range(queue_size - 1, -1, -1))
        self._in_flight: dict[int, _InFlight] = {}
        self._last_kick_idx = start_idx

    # -- state ------------------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def last_kick_idx(self) -> int:
        """The avail idx at the last notification (:meth:`notify_needed` deciding to, or :meth:`kicked`)."""
        return self._last_kick_idx

    # -- supplying buffers (§2.7.13) ---------------------------------------------------------------
    def _check_buffer(self, addr: int, length: int) -> None:
        if not (0 <= length < 1 << 32):
            raise LayoutError(f"buffer len {length!r} does not fit the 32-bit len field")
        if not (0 <= addr < 1 << 64) or not self.mem.contains(addr, length):
            raise LocalSpecViolation("SPLIT-DRV-D1", f"buffer [{addr:#x}, +{length}) is not in guest memory")

    @guarded
    def add(self, readable: Sequence[tuple[int, int]] = (), writable: Sequence[tuple[int, int]] = (), *,
            token: object = None, indirect: bool = False, table_write_flag: bool = False) -> int:
        """Place a chain (readable buffers, then writable ones: SPLIT-DRV-2) and queue its head.

        The head is not visible to the device until :meth:`publish`. Returns the head index.
        ``table_write_flag`` also sets WRITE on the descriptor naming an indirect table, which the
        spec allows and the device must ignore (SPLIT-DEV-6).
        """
        bufs = [(a, n, 0) for a, n in readable] + [(a, n, VIRTQ_DESC_F_WRITE) for a, n in writable]
        if not bufs:
            raise LayoutError("a descriptor chain needs at least one buffer")
        for a, n, _ in bufs:
            self._check_buffer(a, n)
        total = sum(n for _, n, _ in bufs)
        if total > VIRTQ_MAX_CHAIN_BYTES:
            raise LocalSpecViolation("SPLIT-DRV-4", f"chain of {total} bytes")
        if len(bufs) > self.queue_size:
            raise LocalSpecViolation("SPLIT-DRV-8", f"{len(bufs)} descriptors, queue size {self.queue_size}")
        if len(self._in_flight) >= self.queue_size:
            raise QueueFull("every slot of the available ring is in use")
        mem = self.mem
        if indirect:
            if not self.indirect_desc:
                raise LocalSpecViolation("SPLIT-DRV-6", "indirect chain without VIRTIO_F_INDIRECT_DESC")
            if self.indirect_arena is None:
                raise LayoutError("indirect chains need an IndirectArena for their tables")
            if not self._free:
                raise QueueFull("no free descriptor")
            nbytes = VIRTQ_DESC_SIZE * len(bufs)
            table = self.indirect_arena.alloc(nbytes)
            for i, (a, n, f) in enumerate(bufs):
                nxt = i + 1 if i + 1 < len(bufs) else 0
                mem.pack(DESC_FMT, table + VIRTQ_DESC_SIZE * i, a, n,
                         f | (VIRTQ_DESC_F_NEXT if i + 1 < len(bufs) else 0), nxt)
            head = self._free.pop()
            mem.pack(DESC_FMT, self.addrs.desc + VIRTQ_DESC_SIZE * head, table, nbytes,
                     VIRTQ_DESC_F_INDIRECT | (VIRTQ_DESC_F_WRITE if table_write_flag else 0), 0)
            descs, ind = [head], (table, nbytes)
        else:
            if len(bufs) > len(self._free):
                raise QueueFull(f"{len(bufs)} descriptors needed, {len(self._free)} free")
            descs = [self._free.pop() for _ in bufs]
            for i, (a, n, f) in enumerate(bufs):
                last = i + 1 == len(bufs)
                mem.pack(DESC_FMT, self.addrs.desc + VIRTQ_DESC_SIZE * descs[i], a, n,
                         f | (0 if last else VIRTQ_DESC_F_NEXT), 0 if last else descs[i + 1])
            head, ind = descs[0], None
        slot = u16(self.avail_idx + self._pending) % self.queue_size
        mem.write_u16(self.addrs.avail + 4 + 2 * slot, head)
        self._pending += 1
        inf = _InFlight(token, descs, sum(n for _, n, f in bufs if f), ind)
        if self.check_device_writes:
            tables = [(self.addrs.desc + VIRTQ_DESC_SIZE * d, VIRTQ_DESC_SIZE) for d in descs]
            if ind is not None:
                tables.append(ind)
            inf.snapshot = [(a, mem.read(a, n), "SPLIT-DEV-5") for a, n in tables]
            inf.snapshot += [(a, mem.read(a, n), "SPLIT-DEV-3") for a, n, f in bufs if not f]
        self._in_flight[head] = inf
        return head

    def _read_used_flags_untrusted(self) -> int:
        flags = self.mem.read_u16(self.addrs.used + USED_FLAGS)
        if self.event_idx:
            if flags != 0:
                raise PeerSpecViolation("SPLIT-DEV-19", f"used flags {flags:#x} with VIRTIO_F_EVENT_IDX")
        elif flags not in (0, VIRTQ_USED_F_NO_NOTIFY):
            raise PeerSpecViolation("SPLIT-DEV-17", f"used flags {flags:#x}")
        return flags

    @guarded
    def publish(self) -> bool:
        """Expose the pending heads by updating avail idx (§2.7.13.3); return whether to notify.

        The decision follows SPLIT-DRV-21 (flags) or SPLIT-DRV-23 (``avail_event``), computed over
        everything published since the last notification.
        """
        if self._pending:
            self.avail_idx = u16(self.avail_idx + self._pending)
            self._pending = 0
            self.mem.write_u16(self.addrs.avail + AVAIL_IDX, self.avail_idx)
        return self.notify_needed()

    @guarded
    def notify_needed(self) -> bool:
        """Whether the driver must notify now for what it published since its last notification."""
        old, new = self._last_kick_idx, self.avail_idx
        if old == new:
            return False
        flags = self._read_used_flags_untrusted()
        if self.event_idx:
            event = self.mem.read_u16(self.addrs.used + avail_event_offset(self.queue_size))
            need = virtq_need_event(event, new, old)
        else:
            need = not flags & VIRTQ_USED_F_NO_NOTIFY
        if need:
            self._last_kick_idx = new
        return need

    def kicked(self) -> None:
        """Record that the driver notified the device (resets the notification window)."""
        self._last_kick_idx = self.avail_idx

    def used_mark(self) -> int:
        """The used idx as the device last published it (read, not harvested; see refmodel.virtio.rings)."""
        return self.mem.read_u16(self.addrs.used + USED_IDX)

    # -- used buffers (§2.7.14) ----------------------------------------------------------------------
    @guarded
    def harvest(self) -> list[UsedBuffer]:
        """Collect every chain the device has returned since the last call, in used-ring order."""
        mem, qs = self.mem, self.queue_size
        used_idx = mem.read_u16(self.addrs.used + USED_IDX)
        delta = u16(used_idx - self.last_used_idx)
        if delta > len(self._in_flight):
            raise PeerSpecViolation("SPLIT-DEV-D3", f"used idx moved by {delta} ({self.last_used_idx} -> {used_idx}) "
                                    f"with {len(self._in_flight)} buffers in flight (used ring at "
                                    f"{self.addrs.used:#x})")
        out = []
        for _ in range(delta):
            slot_addr = self.addrs.used + used_ring_entry(self.last_used_idx % qs)
            head, length = mem.unpack(USED_ELEM_FMT, slot_addr, 4)
            if self.scrub_used and head == SCRUB_ID:
                raise PeerSpecViolation("SPLIT-DEV-14", f"used idx {used_idx} published before the used "
                                        f"element at slot {self.last_used_idx % qs} was written")
            inf = self._in_flight.pop(head, None)
            if inf is None:
                raise PeerSpecViolation("SPLIT-DEV-D1", f"used element id {head} is not an in-flight head")
            if length > inf.writable_len:
                raise PeerSpecViolation("SPLIT-DEV-D2", f"used len {length} for head {head}, "
                                        f"only {inf.writable_len} writable bytes")
            for addr, data, req in inf.snapshot or ():
                if mem.read(addr, len(data)) != data:
                    what = "descriptor table entry" if req == "SPLIT-DEV-5" else "device-readable buffer"
                    raise PeerSpecViolation(req, f"the device wrote the {what} at {addr:#x} of head {head}")
            if self.scrub_used:
                mem.pack(USED_ELEM_FMT, slot_addr, SCRUB_ID, 0)
            self._free.extend(reversed(inf.descs))
            if inf.indirect is not None and self.indirect_arena is not None:
                self.indirect_arena.free(*inf.indirect)
            self.last_used_idx = u16(self.last_used_idx + 1)
            out.append(UsedBuffer(head, length, inf.token))
        return out

    # -- used buffer notification suppression (§2.7.7) --------------------------------------------------
    @guarded
    def set_used_notifications(self, enabled: bool) -> None:
        """Ask for (or advise against) used buffer notifications (SPLIT-DRV-12/14/15)."""
        if self.event_idx:
            # flags stay 0 (SPLIT-DRV-14); used_event says "notify on the next used buffer" or, when
            # disabled, points half the index space away.
            event = self.last_used_idx if enabled else u16(self.last_used_idx - 0x8000)
            self.mem.write_u16(self.addrs.avail + used_event_offset(self.queue_size), event)
        else:
            self.mem.write_u16(self.addrs.avail, 0 if enabled else VIRTQ_AVAIL_F_NO_INTERRUPT)
