"""Virtqueue-level conformance: one split virtqueue implementation under test against our other side.

* :class:`DeviceQueueConformance` drives a device-side queue (the shape of
  :class:`refmodel.virtio.split.device.SplitQueueDevice`: ``pop``, ``add_used``, ``notify_needed``,
  ``set_avail_notifications``) with the reference driver-side queue, which scrubs the used ring and
  snapshots what the device must not write.
* :class:`DriverQueueConformance` drives a driver-side queue (the shape of
  :class:`refmodel.virtio.split.driver.SplitQueueDriver`: ``add``, ``publish``, ``harvest``,
  ``set_used_notifications``) with the strict reference device-side queue.

Both start the ring indices anywhere, near the u16 wrap included, and draw the queue size, EVENT_IDX
and indirect descriptors. A factory takes ``(mem, addrs, queue_size, *, event_idx, indirect_desc,
start_idx)``; the driver-side one also gets ``indirect_arena``.
"""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule

from refmodel.virtio.constants import VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY
from refmodel.virtio.features import Feature
from refmodel.virtio.split.layout import AVAIL_IDX, USED_IDX, avail_event_offset, used_event_offset
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import QueueAddresses, u16, virtq_need_event
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import IndirectArena, QueueFull, SplitQueueDriver

from conformance.harness import Guarded, ImplementationError
from conformance.machines.base import ConformanceMachine, note

RING = 0x1000
DATA = 0x20000  # 256-byte payload slot per token
OUT = 0x40000  # 256-byte writable slot per token
ARENA = (0x60000, 0x10000)
MEM = 0x80000
SIZES = st.sampled_from([1, 2, 4, 8, 16, 256])
STARTS = st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0xFFFF - 20, 0xFFFF))


def _tolerant(fn: Any) -> Any:
    """A rule that ends the example quietly on a violation the run already knows (see ``tolerate``)."""

    @functools.wraps(fn)
    def wrapper(self: ConformanceMachine, *args: Any, **kwargs: Any) -> None:
        if self.ended:
            return
        with self.tolerate():
            fn(self, *args, **kwargs)

    return wrapper


def _chain_payload(draw: Any, n_read: int) -> tuple[bytes, list[int]]:
    payload = draw(st.binary(min_size=max(n_read, 1), max_size=96), label="payload")
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(payload) - 1)), min_size=n_read - 1,
                               max_size=n_read - 1), label="cuts")) if n_read > 1 else []
    return payload, cuts


def _event_verdict(got: bool, event: int, new: int, decided_at: int, signalled_at: int) -> tuple[bool, bool]:
    """(owed, ok) for a notification decision under EVENT_IDX. The spec does not say whether a batch runs
    from the last decision or the last notification: a notification is owed if the event lies in the
    batch since the last decision, and allowed if it lies in the one since the last notification."""
    owed = virtq_need_event(event, new, decided_at)
    return owed, got == owed or got and (owed or virtq_need_event(event, new, signalled_at))


class _QueueMachine(ConformanceMachine):
    """What both virtqueue-level machines share: the ring in a small guest memory, and chain buffers."""

    scope = "SPLIT-"

    def _ring(self, qs: int, event_idx: bool, indirect: bool, start: int) -> None:
        self.mem = GuestMemory(MEM)
        self.addrs = QueueAddresses.packed_at(RING, qs)
        self.qs, self.event_idx, self.indirect = qs, event_idx, indirect
        self.next_token = 0
        self.booted = True
        self.R.features |= (Feature.VIRTIO_F_EVENT_IDX.mask if event_idx else 0) | (
            Feature.VIRTIO_F_INDIRECT_DESC.mask if indirect else 0)
        note(f"queue size {qs}, event_idx={event_idx}, indirect={indirect}, indices start at {start}")

    def _buffers(self, data: st.DataObject, n_read: int, n_write: int) -> tuple[bytes, list, list]:
        """The next token's payload, written to memory, cut into ``n_read`` readable buffers, and
        ``n_write`` writable buffers of 48 bytes."""
        tok = self.next_token
        payload, cuts = _chain_payload(data.draw, n_read) if n_read else (b"", [])
        base = DATA + 256 * (tok % 64)
        self.mem.write(base, payload)
        bounds = [0, *cuts, len(payload)]
        readable = [(base + s, e - s) for s, e in zip(bounds, bounds[1:])] if n_read else []
        writable = [(OUT + 256 * (tok % 64) + 48 * i, 48) for i in range(n_write)]
        return payload, readable, writable


class DeviceQueueConformance(_QueueMachine):
    """A device-side split virtqueue under test, fed by the reference driver-side queue."""

    @initialize(qs=SIZES, event_idx=st.booleans(), indirect=st.booleans(), start=STARTS)
    def setup(self, qs: int, event_idx: bool, indirect: bool, start: int) -> None:
        self._ring(qs, event_idx, indirect, start)
        self.drv = SplitQueueDriver(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                    start_idx=start, indirect_arena=IndirectArena(*ARENA), scrub_used=True,
                                    check_device_writes=True)
        raw = type(self).factory(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                 start_idx=start)
        self.dut: Any = Guarded(raw, "device queue", self.timeout)
        self.expect: dict[int, tuple[int, bytes, int, str]] = {}  # head -> (token, readable bytes, writable, how)
        self.published: list[int] = []  # heads published, in avail ring order, not yet popped
        self.popped: dict[int, Any] = {}  # head -> chain, in the device's hands
        self.used_order: list[tuple[int, int]] = []  # (token, len) in add_used order, not yet harvested
        self.decided_at = u16(start)  # used idx at the device's last notification decision
        self.signalled_at = u16(start)  # ... and at its last notification
        self.pending_heads: list[int] = []  # added, not yet published

    # -- the reference driver -------------------------------------------------------------------------
    @rule(n_read=st.integers(0, 3), n_write=st.integers(0, 3), indirect=st.booleans(), write_flag=st.booleans(),
          data=st.data())
    @_tolerant
    def add(self, n_read: int, n_write: int, indirect: bool, write_flag: bool, data: st.DataObject) -> None:
        indirect = indirect and self.indirect
        if n_read + n_write == 0 or n_read + n_write > self.qs or len(self.expect) >= 64:
            return
        tok = self.next_token
        payload, readable, writable = self._buffers(data, n_read, n_write)
        try:
            head = self.drv.add(readable, writable, token=tok, indirect=indirect,
                                table_write_flag=indirect and write_flag)
        except QueueFull:
            note("queue full")
            return
        how = "indirect" if indirect else "split over descriptors" if n_read > 1 else "direct"
        if indirect and write_flag:
            how = "indirect, WRITE set on the table's descriptor"  # SPLIT-DEV-6: it means nothing
        self.expect[head] = (tok, payload, 48 * n_write, how)
        self.pending_heads.append(head)
        self.next_token += 1
        note(f"driver adds token {tok} as head {head}: {len(readable)} readable ({len(payload)} bytes), "
             f"{n_write} writable, {how}")

    @rule()
    @_tolerant
    def publish(self) -> None:
        notify = self.drv.publish()  # reads used flags / avail_event the device set (SPLIT-DEV-17/19)
        self.R.saw("SPLIT-DEV-17" if not self.event_idx else "SPLIT-DEV-19")
        self.published += self.pending_heads
        self.pending_heads = []
        if notify:
            self.drv.kicked()
        note(f"driver publishes; {len(self.published)} waiting; notify={notify}")

    @rule(enabled=st.booleans())
    @_tolerant
    def driver_suppress(self, enabled: bool) -> None:
        self.drv.set_used_notifications(enabled)
        note(f"driver {'asks for' if enabled else 'advises against'} used buffer notifications")

    # -- the device under test -------------------------------------------------------------------------
    @rule()
    @_tolerant
    def device_pop(self) -> None:
        chain = self.dut.pop()
        if not self.published:
            if chain is not None:
                raise ImplementationError("device queue.pop", f"returned head {chain.head} with nothing available")
            self.R.saw("SPLIT-DEV-21")  # nothing new: a spurious notification changes nothing
            note("device pops: nothing available")
            return
        head = self.published.pop(0)
        if chain is None:
            raise ImplementationError("device queue.pop", f"returned nothing with head {head} available")
        if chain.head != head:
            raise ImplementationError("device queue.pop", f"returned head {chain.head}, the ring names {head}")
        tok, payload, wlen, how = self.expect[head]
        got = chain.read_all(self.mem)
        req = "SPLIT-DEV-6" if "WRITE" in how else "SPLIT-DEV-7" if how == "indirect" else "SPLIT-DEV-1"
        self.R.check(req, got == payload and chain.writable_len == wlen,
                     f"head {head} ({how}): the device read {len(got)} readable bytes "
                     f"{'(different)' if got != payload else ''} and {chain.writable_len} writable bytes; "
                     f"the driver supplied {len(payload)} and {wlen}")
        self.popped[head] = chain
        note(f"device pops head {head} (token {tok}, {how})")

    @precondition(lambda self: self.popped)
    @rule(data=st.data())
    @_tolerant
    def device_use(self, data: st.DataObject) -> None:
        head = data.draw(st.sampled_from(sorted(self.popped)), label="head")
        chain = self.popped.pop(head)
        length = data.draw(st.integers(0, chain.writable_len), label="len")
        chain.write_all(self.mem, bytes([head & 0xFF]) * length)
        self.dut.add_used(head, length)
        tok = self.expect.pop(head)[0]
        self.used_order.append((tok, length))
        self._check_notify()
        note(f"device uses head {head} with len {length}")

    def _check_notify(self) -> None:
        """SPLIT-DEV-8..13 for everything used since the last decision (see ``_event_verdict``)."""
        got = bool(self.dut.notify_needed())
        new = self.mem.read_u16(self.addrs.used + USED_IDX)
        flags = self.mem.read_u16(self.addrs.avail)
        if self.event_idx:
            event = self.mem.read_u16(self.addrs.avail + used_event_offset(self.qs))
            owed, ok = _event_verdict(got, event, new, self.decided_at, self.signalled_at)
            self.R.check("SPLIT-DEV-12" if owed else "SPLIT-DEV-13", ok,
                         f"used idx {self.decided_at}->{new}, used_event {event}: the device "
                         f"{'did not notify' if owed else 'notified'}")
        else:
            owed = not flags & VIRTQ_AVAIL_F_NO_INTERRUPT
            self.R.check("SPLIT-DEV-10" if owed else "SPLIT-DEV-9", got == owed,
                         f"avail flags {flags}: the device {'did not notify' if owed else 'notified'}")
            self.R.saw("SPLIT-DEV-8")
        self.decided_at = new
        if got:
            self.signalled_at = new

    @precondition(lambda self: self.published or self.pending_heads)
    @rule(data=st.data())
    @_tolerant
    def round_trip(self, data: st.DataObject) -> None:
        """Publish, let the device pop everything and use what it holds, then harvest."""
        self.publish()
        while self.published and not self.ended:
            self.device_pop()
        while self.popped and not self.ended:
            self.device_use(data)
        self.harvest()

    @rule(enabled=st.booleans())
    @_tolerant
    def device_suppress(self, enabled: bool) -> None:
        self.dut.set_avail_notifications(enabled)
        note(f"device {'asks for' if enabled else 'advises against'} available buffer notifications")

    @rule()
    @_tolerant
    def harvest(self) -> None:
        got = self.drv.harvest()  # SPLIT-DEV-D1/D2/D3/14/3/5 are checked here
        for req in ("SPLIT-DEV-D1", "SPLIT-DEV-D2", "SPLIT-DEV-D3", "SPLIT-DEV-14", "SPLIT-DEV-3", "SPLIT-DEV-5"):
            self.R.saw(req)
        want, self.used_order = self.used_order[:len(got)], self.used_order[len(got):]
        seen = [(u.token, u.len) for u in got]
        if seen != want:
            raise ImplementationError("device queue", f"used ring holds {seen}, the device used {want}")
        note(f"driver harvests {len(got)} used buffer(s)")


class DriverQueueConformance(_QueueMachine):
    """A driver-side split virtqueue under test, consumed by the strict reference device-side queue."""

    @initialize(qs=SIZES, event_idx=st.booleans(), indirect=st.booleans(), start=STARTS)
    def setup(self, qs: int, event_idx: bool, indirect: bool, start: int) -> None:
        self._ring(qs, event_idx, indirect, start)
        raw = type(self).factory(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                 start_idx=start, indirect_arena=IndirectArena(*ARENA))
        self.dut: Any = Guarded(raw, "driver queue", self.timeout)
        self.has_kicked = callable(getattr(raw, "kicked", None))  # optional: "I notified"
        self.dev = SplitQueueDevice(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                    start_idx=start)
        self.kicked_at = u16(start)  # avail idx at the last notification
        self.decided_at = u16(start)  # ... and at the last decision
        self.payloads: dict[int, tuple[bytes, int]] = {}
        self.in_device: dict[int, tuple[int, Any]] = {}  # head -> (token, chain)
        self.used: list[tuple[int, int]] = []  # (token, len) used, not yet harvested
        self.tokens: dict[int, int] = {}  # head -> token, made available

    @rule(n_read=st.integers(0, 3), n_write=st.integers(0, 3), indirect=st.booleans(), data=st.data())
    @_tolerant
    def add(self, n_read: int, n_write: int, indirect: bool, data: st.DataObject) -> None:
        indirect = indirect and self.indirect
        if n_read + n_write == 0 or n_read + n_write > self.qs or len(self.tokens) >= 64:
            return
        tok = self.next_token
        payload, readable, writable = self._buffers(data, n_read, n_write)
        try:
            head = self.dut.add(readable, writable, token=tok, indirect=indirect)
        except ImplementationError as e:
            if "QueueFull" in str(e):
                note("queue full")
                return
            raise
        self.tokens[head] = tok
        self.payloads[tok] = (payload, 48 * n_write)
        self.next_token += 1
        note(f"driver adds token {tok}: {len(readable)} readable, {n_write} writable, indirect={indirect}")

    @rule()
    @_tolerant
    def publish(self) -> None:
        """SPLIT-DRV-19..24, with the same two windows as the device side (last decision, last kick)."""
        got = bool(self.dut.publish())
        new = self.mem.read_u16(self.addrs.avail + AVAIL_IDX)
        flags = self.mem.read_u16(self.addrs.used)
        if new != self.decided_at:
            if self.event_idx:
                event = self.mem.read_u16(self.addrs.used + avail_event_offset(self.qs))
                owed, ok = _event_verdict(got, event, new, self.decided_at, self.kicked_at)
                self.R.check("SPLIT-DRV-23" if owed else "SPLIT-DRV-24", ok,
                             f"avail idx {self.decided_at}->{new}, avail_event {event}: the driver "
                             f"{'did not notify' if owed else 'notified'}")
            else:
                owed = not flags & VIRTQ_USED_F_NO_NOTIFY
                self.R.check("SPLIT-DRV-21" if owed else "SPLIT-DRV-20", got == owed,
                             f"used flags {flags}: the driver {'did not notify' if owed else 'notified'}")
                self.R.saw("SPLIT-DRV-19")
            self.decided_at = new
        if got:
            self.kicked_at = new
            if self.has_kicked:
                self.dut.kicked()
        note(f"driver publishes avail idx {new}; notify={got}")

    @rule(enabled=st.booleans(), scribble=st.integers(0, 0xFFFF))
    @_tolerant
    def device_suppress(self, enabled: bool, scribble: int) -> None:
        self.dev.set_avail_notifications(enabled)
        if not self.event_idx:  # SPLIT-DRV-19: avail_event means nothing without EVENT_IDX
            self.mem.write_u16(self.addrs.used + avail_event_offset(self.qs), scribble)
        note(f"device {'asks for' if enabled else 'advises against'} notifications"
             f"{'' if self.event_idx else f'; avail_event scribbled to {scribble}'}")

    @rule()
    @_tolerant
    def device_pop(self) -> None:
        chain = self.dev.pop()  # every SPLIT-DRV ring rule is checked by the walk
        for req in ("SPLIT-DRV-2", "SPLIT-DRV-4", "SPLIT-DRV-6", "SPLIT-DRV-7", "SPLIT-DRV-8", "SPLIT-DRV-9",
                    "SPLIT-DRV-11", "SPLIT-DRV-D1", "SPLIT-DRV-D2", "SPLIT-DRV-D3", "SPLIT-DRV-D4", "SPLIT-DRV-D6"):
            self.R.saw(req)
        if chain is None:
            note("device pops: nothing available")
            return
        tok = self.tokens.get(chain.head)
        if tok is None:
            raise ImplementationError("driver queue", f"head {chain.head} made available, never added")
        payload, wlen = self.payloads[tok]
        if chain.read_all(self.mem) != payload or chain.writable_len != wlen:
            raise ImplementationError("driver queue", f"head {chain.head} (token {tok}) does not carry the "
                                      "buffers the driver added")
        self.in_device[chain.head] = (tok, chain)
        note(f"device pops head {chain.head} (token {tok})")

    @precondition(lambda self: self.in_device)
    @rule(data=st.data())
    @_tolerant
    def device_use(self, data: st.DataObject) -> None:
        head = data.draw(st.sampled_from(sorted(self.in_device)), label="head")
        tok, chain = self.in_device.pop(head)
        length = data.draw(st.integers(0, chain.writable_len), label="len")
        self.dev.add_used(head, length)
        del self.tokens[head]
        self.used.append((tok, length))
        note(f"device uses head {head} with len {length}")

    @rule()
    @_tolerant
    def harvest(self) -> None:
        got = self.dut.harvest()
        seen = [(u.token, u.len) for u in got]
        want, self.used = self.used[:len(seen)], self.used[len(seen):]
        if seen != want:
            raise ImplementationError("driver queue.harvest", f"returned {seen}, the device used {want}")
        self.R.saw("SPLIT-DRV-16")
        note(f"driver harvests {len(got)}")

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    @_tolerant
    def round_trip(self, data: st.DataObject) -> None:
        """Publish, let the device pop and use everything, then harvest."""
        self.publish()
        while not self.ended and self.dev.available():
            self.device_pop()
        while self.in_device and not self.ended:
            self.device_use(data)
        self.harvest()

    @rule(enabled=st.booleans())
    @_tolerant
    def driver_suppress(self, enabled: bool) -> None:
        self.dut.set_used_notifications(enabled)
        flags = self.mem.read_u16(self.addrs.avail)
        if self.event_idx:
            self.R.check("SPLIT-DRV-14", flags == 0, f"avail flags {flags:#x} with VIRTIO_F_EVENT_IDX")
        else:
            self.R.check("SPLIT-DRV-12", flags in (0, 1), f"avail flags {flags:#x}")
        note(f"driver {'asks for' if enabled else 'advises against'} used buffer notifications")
