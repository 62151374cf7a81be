"""A driver-side packed virtqueue under test (:class:`conformance.interface.DriverQueueUnderTest`), consumed
by the strict reference device-side packed queue, whose list walk checks every PACKED-DRV ring rule.

The reference device may write a len without VIRTQ_DESC_F_WRITE and set VIRTQ_DESC_F_NEXT in used
descriptors (drawn per example): the driver must ignore both (PACKED-DRV-D3, PACKED-DRV-D6).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize

from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import IndirectArena
from refmodel.virtio.packed.events import EventSuppress
from refmodel.virtio.packed.layout import (DESC_FLAGS, PDESC_BODY_FMT, PVIRTQ_DESC_SIZE, VIRTQ_DESC_F_NEXT,
                                           VIRTQ_DESC_F_WRITE, desc_ring_size, used_flags, wrap_of)

from conformance.harness import Guarded, ImplementationError
from conformance.interface import Capability
from conformance.machines.base import note, step
from conformance.machines.virtq.base import ARENA, CUTS, PAYLOADS, USE, USES, use_of
from conformance.machines.virtq.driver import queue_capabilities, queue_full
from conformance.machines.virtq.packed_base import (BACK, BURST, LAPS, PACKED_SIZES, Burst,
                                                    PackedQueueMachine, allowed)

#: What the reference device's list walk checks on every pop (the indirect ones need INDIRECT_DESC).
WALK_CHECKS = ("PACKED-DRV-7", "PACKED-DRV-10", "PACKED-DRV-11", "PACKED-DRV-D2", "PACKED-DRV-12",
               "PACKED-DRV-8", "PACKED-DRV-D4", "PACKED-DRV-D13", "PACKED-DRV-D5", "PACKED-DRV-D9",
               "PACKED-DRV-13", "PACKED-DRV-14", "PACKED-DRV-15", "PACKED-DRV-D7")


class QuirkyDevice(PackedQueueDevice):
    """The reference device, optionally writing what a driver must ignore in a used descriptor: the
    buffer's writable size as len when it wrote nothing (no WRITE), and NEXT."""

    quirks = False
    _junk_len = 0

    def add_used(self, head: int, length: int) -> None:
        if self.quirks and self.is_in_flight(head):
            self._junk_len = self.in_flight_chain(head).writable_len
        super().add_used(head, length)

    def write_used_descriptor(self, pos: int, buf_id: int, length: int) -> None:
        if not self.quirks:
            return super().write_used_descriptor(pos, buf_id, length)
        slot = self.addrs.desc + PVIRTQ_DESC_SIZE * (pos % self.queue_size)
        # Without WRITE, len is reserved (§2.8.4): the writable size, which a driver reading it would trust.
        self.mem.pack(PDESC_BODY_FMT, slot, 0, length or self._junk_len, buf_id)
        flags = used_flags(wrap_of(pos, self.queue_size)) | VIRTQ_DESC_F_NEXT
        self.mem.write_u16(slot + DESC_FLAGS, flags | (VIRTQ_DESC_F_WRITE if length else 0))
        return None


class PackedDriverQueueConformance(PackedQueueMachine):
    """A driver-side packed virtqueue under test, consumed by the strict reference device-side queue."""

    @initialize(qs=PACKED_SIZES, event_idx=st.booleans(), indirect=st.booleans(), laps=LAPS, back=BACK,
                quirks=st.booleans())
    def setup(self, qs: int, event_idx: bool, indirect: bool, laps: int, back: int, quirks: bool) -> None:
        start = self._packed_ring(qs, event_idx, indirect, laps, back)
        raw = type(self).factory(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                 start_idx=start, indirect_arena=IndirectArena(*ARENA))
        self.caps = queue_capabilities(raw)
        self.dut: Any = Guarded(raw, "driver queue", self.timeout)
        if not start:  # a ring that went round before holds its last lap's flags (refmodel.virtio.packed)
            ring = self.mem.read(self.addrs.desc, desc_ring_size(qs))
            with self.tolerate("setup"):  # notes the failure: an initializer is not a step
                self.R.check("PACKED-DRV-D12", not any(ring), f"the descriptor ring holds "
                             f"{sum(map(bool, ring))} non-zero bytes after the driver set the queue up")
        self.dev = QuirkyDevice(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                start_idx=start, check_driver_writes=True)
        self.dev.quirks = self.quirks = quirks
        if quirks:
            note("the device writes len without WRITE, and NEXT, in used descriptors (both to be ignored)")
        self.kicked_at = self.decided_at = start  # published position at the last notification / decision
        self.payloads: dict[int, tuple[bytes, int]] = {}
        self.in_device: dict[int, tuple[int, Any]] = {}  # Buffer ID -> (token, chain)
        self.used: list[tuple[int, int, int]] = []  # (token, len, writable bytes) used, not yet harvested
        self.tokens: dict[int, int] = {}  # Buffer ID -> token, added
        self.snapshot: dict[int, bytes] = {}  # position -> descriptor, made available, not yet popped

    def _published_pos(self) -> int:
        """The position after the last list made available: the reference device walks (and checks) them."""
        pos = self.dev.next_avail
        while (got := self.dev.walk_untrusted(pos)) is not None:
            pos += got[1]
        return pos

    def _slot(self, pos: int) -> int:
        return self.addrs.desc + PVIRTQ_DESC_SIZE * (pos % self.qs)

    def _check_available_untouched(self, when: str) -> None:
        """PACKED-DRV-3: a descriptor made available is as it was until the device takes it."""
        for pos, was in self.snapshot.items():
            self.R.check("PACKED-DRV-3", self.mem.read(self._slot(pos), PVIRTQ_DESC_SIZE) == was,
                         f"{when}, the driver changed the descriptor at offset {pos % self.qs}, made "
                         "available and not yet taken by the device")

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
            buf_id = self.dut.add(readable, writable, token=tok, indirect=indirect)
        except ImplementationError as e:
            if queue_full(e):
                note("queue full")
                return
            raise
        self._check_available_untouched(f"adding token {tok}")
        self.tokens[buf_id] = tok
        self.payloads[tok] = (payload, 48 * n_write)
        self.next_token += 1
        note(f"driver adds token {tok} as Buffer ID {buf_id}: {len(readable)} readable, {n_write} writable, "
             f"indirect={indirect}")

    @step()
    def publish(self) -> None:
        """PACKED-DRV-D10/D11, with the same two windows as the device side (last decision, last kick)."""
        got = bool(self.dut.publish())
        self._check_available_untouched("publishing")
        new = self._published_pos()
        for pos in range(self.dev.next_avail, new):
            self.snapshot.setdefault(pos, self.mem.read(self._slot(pos), PVIRTQ_DESC_SIZE))
        if new != self.decided_at:
            wish = EventSuppress.read(self.mem, self.addrs.used)
            owed, ok = allowed(wish, got, new, self.decided_at, self.kicked_at, self.qs)
            self.R.check("PACKED-DRV-D10" if owed else "PACKED-DRV-D11", ok,
                         f"published positions {self.decided_at}->{new}, device asks {wish}: the driver "
                         f"{'did not notify' if owed else 'notified'}")
            self.decided_at = new
        if got:
            self.kicked_at = new
            if Capability.KICKED in self.caps:
                self.dut.kicked()
        note(f"driver publishes up to position {new}; notify={got}")

    @step(enabled=st.booleans())
    def device_suppress(self, enabled: bool) -> None:
        self.dev.set_avail_notifications(enabled)
        note(f"device {'asks for' if enabled else 'advises against'} available buffer notifications")

    @step()
    def device_pop(self) -> None:
        self._check_available_untouched("when the device looks")
        chain = self.dev.pop()  # every PACKED-DRV ring rule is checked by the walk
        for req in WALK_CHECKS:
            self.R.saw(req)
        for pos in [p for p in self.snapshot if p < self.dev.next_avail]:
            del self.snapshot[pos]  # the device holds it now: PACKED-DRV-2 from here (the device checks)
        if chain is None:
            note("device pops: nothing available")
            return
        tok = self.tokens.get(chain.head)
        if tok is None:
            raise ImplementationError("driver queue", f"Buffer ID {chain.head} made available, never added")
        payload, wlen = self.payloads[tok]
        if chain.read_all(self.mem) != payload or chain.writable_len != wlen:
            raise ImplementationError("driver queue", f"Buffer ID {chain.head} (token {tok}) does not carry "
                                      "the buffers the driver added")
        self.in_device[chain.head] = (tok, chain)
        note(f"device pops Buffer ID {chain.head} (token {tok})")

    @step(when=lambda self: self.in_device, use=USE)
    def device_use(self, use: tuple[int, int]) -> None:
        ids = sorted(self.in_device)
        buf_id = ids[use[0] % len(ids)]
        tok, chain = self.in_device.pop(buf_id)
        length = use[1] % (chain.writable_len + 1)
        self.dev.add_used(buf_id, length)  # the descriptors it passes over are as popped (PACKED-DRV-2)
        self.R.saw("PACKED-DRV-2")
        del self.tokens[buf_id]
        self.used.append((tok, length, chain.writable_len))
        note(f"device uses Buffer ID {buf_id} with len {length}")

    @step()
    def harvest(self) -> None:
        got = self.dut.harvest()
        self._check_available_untouched("harvesting")
        want, self.used = self.used[:len(got)], self.used[len(got):]
        for u, (tok, length, wlen) in zip(got, want):
            if self.quirks and not length and u.token == tok:
                self.R.check("PACKED-DRV-D3", u.len == 0, f"token {tok}: the device wrote nothing (no WRITE, "
                             f"len field {wlen}); the driver reports len {u.len}")
        seen = [(u.token, u.len) for u in got]
        if self.quirks:
            self.R.check("PACKED-DRV-D6", seen == [(t, n) for t, n, _ in want],
                         f"with NEXT set in used descriptors the driver harvested {seen}, the device used "
                         f"{[(t, n) for t, n, _ in want]}")
        elif seen != [(t, n) for t, n, _ in want]:
            raise ImplementationError("driver queue.harvest", f"returned {seen}, the device used "
                                      f"{[(t, n) for t, n, _ in want]}")
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

    @step(n_read=st.integers(0, 2), n_write=st.integers(1, 3), payload=PAYLOADS)
    def unwritten(self, n_read: int, n_write: int, payload: bytes) -> None:
        """One list with device-writable buffers, sent round and used with nothing written: where a used
        len without VIRTQ_DESC_F_WRITE is reserved (PACKED-DRV-D3, with quirks on), in one step. Search
        luck found it too rarely (16 of 20 random dev seeds) before this rule."""
        self.add(n_read, n_write, False, payload, [])
        if self.tokens:
            self.round_trip([])  # past the list, every use is (0, 0): len 0

    @step(asks=st.tuples(st.booleans(), st.booleans()), burst=BURST, payload=PAYLOADS, uses=USES)
    def burst(self, asks: tuple[bool, bool], burst: Burst, payload: bytes,
              uses: list[tuple[int, int]]) -> None:
        """Both sides say what notifications they want, then add a few lists (the same payload, cut at its
        first bytes) and send them round."""
        # The device's wish first: a driver that writes into the device area then overwrites it (PACKED-DRV-D9).
        self.device_suppress(asks[1])
        self.driver_suppress(asks[0])
        for n_read, n_write, indirect, _ in burst:
            self.add(n_read, n_write, indirect, payload, [])
        if self.tokens:
            self.round_trip(uses)

    @step(enabled=st.booleans())
    def driver_suppress(self, enabled: bool) -> None:
        self.dut.set_used_notifications(enabled)
        wish = EventSuppress.read(self.mem, self.addrs.avail)
        why = wish.problem(self.event_idx, self.qs)
        self.R.check("PACKED-DRV-D8", why is None, f"driver area: {why}")
        note(f"driver {'asks for' if enabled else 'advises against'} used buffer notifications: {wish}")
