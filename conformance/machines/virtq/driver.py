"""A driver-side split virtqueue under test (:class:`conformance.interface.DriverQueueUnderTest`), consumed
by the strict reference device-side queue, whose walk checks every SPLIT-DRV ring rule."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize

from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import IndirectArena, QueueFull
from refmodel.virtio.split.layout import AVAIL_FLAGS, AVAIL_IDX, avail_event_offset
from refmodel.virtio.virtq import u16

from conformance.harness import Guarded, ImplementationError
from conformance.interface import (Capability, DriverQueueUnderTest, NotifiesKicks, check_implementation)
from conformance.machines.base import note, step
from conformance.machines.notify import Kind, Suppression
from conformance.machines.virtq.base import (ARENA, CUTS, PAYLOADS, SIZES, STARTS, USE, USES, QueueMachine,
                                             use_of)

#: What the reference device-side queue's walk checks on every pop.
WALK_CHECKS = ("SPLIT-DRV-2", "SPLIT-DRV-4", "SPLIT-DRV-6", "SPLIT-DRV-7", "SPLIT-DRV-8", "SPLIT-DRV-9",
               "SPLIT-DRV-11", "SPLIT-DRV-D1", "SPLIT-DRV-D2", "SPLIT-DRV-D3", "SPLIT-DRV-D4", "SPLIT-DRV-D6")


def queue_capabilities(raw: Any) -> frozenset[Capability]:
    """The queue's declared capabilities; a callable ``kicked`` counts as declaring KICKED (the reference
    queue has one and declares nothing)."""
    caps = check_implementation(raw, DriverQueueUnderTest, "driver queue")
    if Capability.KICKED not in caps and isinstance(raw, NotifiesKicks) and callable(raw.kicked):
        caps |= {Capability.KICKED}
    return caps


def queue_full(e: ImplementationError) -> bool:
    """Whether the queue refused a chain with :class:`QueueFull`: the Guarded proxy raises an
    ImplementationError ``from None``, which keeps the original as ``__context__``."""
    return isinstance(e.__cause__, QueueFull) or isinstance(e.__context__, QueueFull)


class DriverQueueConformance(QueueMachine):
    """A driver-side split virtqueue under test, consumed by the strict reference device-side queue."""

    @initialize(qs=SIZES, event_idx=st.booleans(), indirect=st.booleans(), start=STARTS)
    def setup(self, qs: int, event_idx: bool, indirect: bool, start: int) -> None:
        self._ring(qs, event_idx, indirect, start)
        raw = type(self).factory(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                 start_idx=start, indirect_arena=IndirectArena(*ARENA))
        self.caps = queue_capabilities(raw)
        self.dut: Any = Guarded(raw, "driver queue", self.timeout)
        self.dev = SplitQueueDevice(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                    start_idx=start)
        self.kicked_at = u16(start)  # avail idx at the last notification
        self.decided_at = u16(start)  # ... and at the last decision
        self.payloads: dict[int, tuple[bytes, int]] = {}
        self.in_device: dict[int, tuple[int, Any]] = {}  # head -> (token, chain)
        self.used: list[tuple[int, int]] = []  # (token, len) used, not yet harvested
        self.tokens: dict[int, int] = {}  # head -> token, made available

    @step(n_read=st.integers(0, 3), n_write=st.integers(0, 3), indirect=st.booleans(), payload=PAYLOADS,
          cuts=CUTS)
    def add(self, n_read: int, n_write: int, indirect: bool, payload: bytes, cuts: list[int]) -> None:
        indirect = indirect and self.indirect
        if n_read + n_write == 0 or n_read + n_write > self.qs or len(self.tokens) >= 64:
            note("driver adds nothing (no buffers, more than the queue holds, or 64 in flight)")
            return
        tok = self.next_token
        payload, readable, writable = self._buffers(payload, cuts, n_read, n_write)
        try:
            head = self.dut.add(readable, writable, token=tok, indirect=indirect)
        except ImplementationError as e:
            if queue_full(e):
                note("queue full")
                return
            raise
        self.tokens[head] = tok
        self.payloads[tok] = (payload, 48 * n_write)
        self.next_token += 1
        note(f"driver adds token {tok}: {len(readable)} readable, {n_write} writable, indirect={indirect}")

    @step()
    def publish(self) -> None:
        """SPLIT-DRV-19..24, with the same two windows as the device side (last decision, last kick)."""
        got = bool(self.dut.publish())
        new = self.mem.read_u16(self.addrs.avail + AVAIL_IDX)
        if new != self.decided_at:
            wish = Suppression.read(Kind.AVAILABLE_BUFFER, self.mem, self.addrs, self.qs, self.event_idx)
            owed, ok = wish.allowed(got, new, self.decided_at, self.kicked_at)
            self.R.check(wish.req(owed), ok, f"avail idx {self.decided_at}->{new}, {wish}: the driver "
                         f"{'did not notify' if owed else 'notified'}")
            if wish.ignored_req:
                self.R.saw(wish.ignored_req)
            self.decided_at = new
        if got:
            self.kicked_at = new
            if Capability.KICKED in self.caps:
                self.dut.kicked()
        note(f"driver publishes avail idx {new}; notify={got}")

    @step(enabled=st.booleans(), scribble=st.integers(0, 0xFFFF))
    def device_suppress(self, enabled: bool, scribble: int) -> None:
        self.dev.set_avail_notifications(enabled)
        if not self.event_idx:  # SPLIT-DRV-19: avail_event means nothing without EVENT_IDX
            self.mem.write_u16(self.addrs.used + avail_event_offset(self.qs), scribble)
        note(f"device {'asks for' if enabled else 'advises against'} notifications"
             f"{'' if self.event_idx else f'; avail_event scribbled to {scribble}'}")

    @step()
    def device_pop(self) -> None:
        chain = self.dev.pop()  # every SPLIT-DRV ring rule is checked by the walk
        for req in WALK_CHECKS:
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

    @step(when=lambda self: self.in_device, use=USE)
    def device_use(self, use: tuple[int, int]) -> None:
        heads = sorted(self.in_device)
        head = heads[use[0] % len(heads)]
        tok, chain = self.in_device.pop(head)
        length = use[1] % (chain.writable_len + 1)
        self.dev.add_used(head, length)
        del self.tokens[head]
        self.used.append((tok, length))
        note(f"device uses head {head} with len {length}")

    @step()
    def harvest(self) -> None:
        got = self.dut.harvest()
        seen = [(u.token, u.len) for u in got]
        want, self.used = self.used[:len(seen)], self.used[len(seen):]
        if seen != want:
            raise ImplementationError("driver queue.harvest", f"returned {seen}, the device used {want}")
        self.R.saw("SPLIT-DRV-16")
        note(f"driver harvests {len(got)}")

    @step(when=lambda self: self.tokens, uses=USES)
    def round_trip(self, uses: list[tuple[int, int]]) -> None:
        """Publish, let the device pop and use everything, then harvest."""
        self.publish()
        while not self.ended and self.dev.available():
            self.device_pop()
        used = 0
        while self.in_device and not self.ended:
            self.device_use(use_of(uses, used))
            used += 1
        self.harvest()

    @step(enabled=st.booleans())
    def driver_suppress(self, enabled: bool) -> None:
        self.dut.set_used_notifications(enabled)
        flags = self.mem.read_u16(self.addrs.avail + AVAIL_FLAGS)
        if self.event_idx:
            self.R.check("SPLIT-DRV-14", flags == 0, f"avail flags {flags:#x} with VIRTIO_F_EVENT_IDX")
        else:
            self.R.check("SPLIT-DRV-12", flags in (0, 1), f"avail flags {flags:#x}")
        note(f"driver {'asks for' if enabled else 'advises against'} used buffer notifications")
