"""A device-side split virtqueue under test (:class:`conformance.interface.DeviceQueueUnderTest`), fed by
the reference driver-side queue, which scrubs the used ring and snapshots what the device must not write."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize

from refmodel.virtio.split.driver import IndirectArena, QueueFull, SplitQueueDriver
from refmodel.virtio.split.layout import USED_IDX
from refmodel.virtio.virtq import u16

from conformance.harness import Guarded, ImplementationError
from conformance.interface import DeviceQueueUnderTest, check_implementation
from conformance.machines.base import note, step
from conformance.machines.notify import Kind, Suppression
from conformance.machines.virtq.base import (ARENA, CUTS, PAYLOADS, SIZES, STARTS, USE, USES, QueueMachine,
                                             use_of)


class DeviceQueueConformance(QueueMachine):
    """A device-side split virtqueue under test, fed by the reference driver-side queue."""

    @initialize(qs=SIZES, event_idx=st.booleans(), indirect=st.booleans(), start=STARTS)
    def setup(self, qs: int, event_idx: bool, indirect: bool, start: int) -> None:
        self._ring(qs, event_idx, indirect, start)
        self.drv = SplitQueueDriver(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                    start_idx=start, indirect_arena=IndirectArena(*ARENA), scrub_used=True,
                                    check_device_writes=True)
        raw = type(self).factory(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                 start_idx=start)
        self.caps = check_implementation(raw, DeviceQueueUnderTest, "device queue")
        self.dut: Any = Guarded(raw, "device queue", self.timeout)
        self.expect: dict[int, tuple[int, bytes, int, str]] = {}  # head -> (token, readable bytes, writable, how)
        self.published: list[int] = []  # heads published, in avail ring order, not yet popped
        self.popped: dict[int, Any] = {}  # head -> chain, in the device's hands
        self.used_order: list[tuple[int, int]] = []  # (token, len) in add_used order, not yet harvested
        self.decided_at = u16(start)  # used idx at the device's last notification decision
        self.signalled_at = u16(start)  # ... and at its last notification
        self.pending_heads: list[int] = []  # added, not yet published

    # -- the reference driver -------------------------------------------------------------------------
    @step(n_read=st.integers(0, 3), n_write=st.integers(0, 3), indirect=st.booleans(), write_flag=st.booleans(),
          payload=PAYLOADS, cuts=CUTS)
    def add(self, n_read: int, n_write: int, indirect: bool, write_flag: bool, payload: bytes,
            cuts: list[int]) -> None:
        indirect = indirect and self.indirect
        if n_read + n_write == 0 or n_read + n_write > self.qs or len(self.expect) >= 64:
            note("driver adds nothing (no buffers, more than the queue holds, or 64 in flight)")
            return
        tok = self.next_token
        payload, readable, writable = self._buffers(payload, cuts, n_read, n_write)
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

    @step()
    def publish(self) -> None:
        notify = self.drv.publish()  # reads used flags / avail_event the device set (SPLIT-DEV-17/19)
        self.R.saw("SPLIT-DEV-17" if not self.event_idx else "SPLIT-DEV-19")
        self.published += self.pending_heads
        self.pending_heads = []
        if notify:
            self.drv.kicked()
        note(f"driver publishes; {len(self.published)} waiting; notify={notify}")

    @step(enabled=st.booleans())
    def driver_suppress(self, enabled: bool) -> None:
        self.drv.set_used_notifications(enabled)
        note(f"driver {'asks for' if enabled else 'advises against'} used buffer notifications")

    # -- the device under test -------------------------------------------------------------------------
    @step()
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

    @step(when=lambda self: self.popped, use=USE)
    def device_use(self, use: tuple[int, int]) -> None:
        heads = sorted(self.popped)
        head = heads[use[0] % len(heads)]
        chain = self.popped.pop(head)
        length = use[1] % (chain.writable_len + 1)
        chain.write_all(self.mem, bytes([head & 0xFF]) * length)
        self.dut.add_used(head, length)
        tok = self.expect.pop(head)[0]
        self.used_order.append((tok, length))
        self._check_notify()
        note(f"device uses head {head} with len {length}")

    def _check_notify(self) -> None:
        """SPLIT-DEV-8..13 for everything used since the last decision (see :meth:`Suppression.allowed`)."""
        got = bool(self.dut.notify_needed())
        new = self.mem.read_u16(self.addrs.used + USED_IDX)
        wish = Suppression.read(Kind.USED_BUFFER, self.mem, self.addrs, self.qs, self.event_idx)
        owed, ok = wish.allowed(got, new, self.decided_at, self.signalled_at)
        self.R.check(wish.req(owed), ok, f"used idx {self.decided_at}->{new}, {wish}: the device "
                     f"{'did not notify' if owed else 'notified'}")
        if wish.ignored_req:
            self.R.saw(wish.ignored_req)
        self.decided_at = new
        if got:
            self.signalled_at = new

    @step(when=lambda self: self.published or self.pending_heads, uses=USES)
    def round_trip(self, uses: list[tuple[int, int]]) -> None:
        """Publish, let the device pop everything and use what it holds, then harvest."""
        self.publish()
        while self.published and not self.ended:
            self.device_pop()
        used = 0
        while self.popped and not self.ended:
            self.device_use(use_of(uses, used))
            used += 1
        self.harvest()

    @step(ask=st.booleans(), n_read=st.integers(1, 3), n_write=st.integers(0, 3), indirect=st.booleans(),
          write_flag=st.booleans(), payload=PAYLOADS, cuts=CUTS, uses=USES)
    def exchange(self, ask: bool, n_read: int, n_write: int, indirect: bool, write_flag: bool, payload: bytes,
                 cuts: list[int], uses: list[tuple[int, int]]) -> None:
        """The driver asks for (or advises against) used buffer notifications, adds a buffer, and both
        sides run a round trip: a read of the buffer and a notification decision in every example this
        rule is in, whichever other rules Hypothesis's swarm leaves out of it (an example of device_pop
        alone reaches nothing)."""
        self.driver_suppress(ask)
        self.add(n_read, n_write, indirect, write_flag, payload, cuts)
        self.round_trip(uses)

    @step(enabled=st.booleans())
    def device_suppress(self, enabled: bool) -> None:
        self.dut.set_avail_notifications(enabled)
        note(f"device {'asks for' if enabled else 'advises against'} available buffer notifications")

    @step()
    def harvest(self) -> None:
        got = self.drv.harvest()  # SPLIT-DEV-D1/D2/D3/14/3/5 are checked here
        for req in ("SPLIT-DEV-D1", "SPLIT-DEV-D2", "SPLIT-DEV-D3", "SPLIT-DEV-14", "SPLIT-DEV-3", "SPLIT-DEV-5"):
            self.R.saw(req)
        want, self.used_order = self.used_order[:len(got)], self.used_order[len(got):]
        seen = [(u.token, u.len) for u in got]
        if seen != want:
            raise ImplementationError("device queue", f"used ring holds {seen}, the device used {want}")
        note(f"driver harvests {len(got)} used buffer(s)")
