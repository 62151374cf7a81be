"""A device-side packed virtqueue under test (:class:`conformance.interface.DeviceQueueUnderTest`), fed by
the reference driver-side packed queue, which scrubs Buffer IDs, snapshots what the device must not write,
and checks every used descriptor it harvests (PACKED-DEV-*)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize

from refmodel.virtio.packed.driver import IndirectArena, PackedQueueDriver, QueueFull
from refmodel.virtio.packed.events import EventSuppress

from conformance.harness import Guarded, ImplementationError
from conformance.interface import DeviceQueueUnderTest, check_implementation
from conformance.machines.base import note, step
from conformance.machines.virtq.base import ARENA, CUTS, PAYLOADS, USE, USES, use_of
from conformance.machines.virtq.packed_base import (BACK, BURST, LAPS, PACKED_SIZES, Burst,
                                                    PackedQueueMachine, allowed)

#: What the reference driver's harvest checks on every used descriptor it reads.
HARVEST_CHECKS = ("PACKED-DEV-D2", "PACKED-DEV-D3", "PACKED-DEV-D4", "PACKED-DEV-1", "PACKED-DEV-4",
                  "PACKED-DEV-7", "PACKED-DEV-D9")


class PackedDeviceQueueConformance(PackedQueueMachine):
    """A device-side packed virtqueue under test, fed by the reference driver-side packed queue."""

    @initialize(qs=PACKED_SIZES, event_idx=st.booleans(), indirect=st.booleans(), laps=LAPS, back=BACK)
    def setup(self, qs: int, event_idx: bool, indirect: bool, laps: int, back: int) -> None:
        start = self._packed_ring(qs, event_idx, indirect, laps, back)
        self.drv = PackedQueueDriver(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                     start_idx=start, indirect_arena=IndirectArena(*ARENA), scrub_used=True,
                                     check_device_writes=True)
        raw = type(self).factory(self.mem, self.addrs, qs, event_idx=event_idx, indirect_desc=indirect,
                                 start_idx=start)
        self.caps = check_implementation(raw, DeviceQueueUnderTest, "device queue")
        self.dut: Any = Guarded(raw, "device queue", self.timeout)
        # Buffer ID -> (token, readable bytes, writable bytes, how, ring descriptors it takes)
        self.expect: dict[int, tuple[int, bytes, int, str, int]] = {}
        self.published: list[int] = []  # Buffer IDs published, in ring order, not yet popped
        self.pending: list[int] = []  # added, not yet published
        self.popped: dict[int, Any] = {}  # Buffer ID -> chain, in the device's hands
        self.used_order: list[tuple[int, int]] = []  # (token, len) in add_used order, not yet harvested
        self.used_pos = start  # where the device writes its next used descriptor
        self.decided_at = start  # used position at the device's last notification decision
        self.signalled_at = start  # ... and at its last notification

    # -- the reference driver -------------------------------------------------------------------------
    @step(n_read=st.integers(0, 3), n_write=st.integers(0, 3), indirect=st.booleans(),
          write_flag=st.booleans(), payload=PAYLOADS, cuts=CUTS)
    def add(self, n_read: int, n_write: int, indirect: bool, write_flag: bool, payload: bytes,
            cuts: list[int]) -> None:
        indirect = indirect and self.indirect
        if n_read + n_write == 0 or n_read + n_write > self.qs or len(self.expect) >= 64:
            note("driver adds nothing (no buffers, more than the queue holds, or 64 in flight)")
            return
        tok = self.next_token
        payload, readable, writable = self._buffers(payload, cuts, n_read, n_write)
        try:
            buf_id = self.drv.add(readable, writable, token=tok, indirect=indirect,
                                  table_write_flag=indirect and write_flag)
        except QueueFull:
            note("queue full")
            return
        how = ("indirect" if indirect else "a list of descriptors" if n_read + n_write > 1 else
               "one descriptor")
        if indirect and write_flag:
            how = "indirect, WRITE set on the table's descriptor"  # PACKED-DEV-D6: it means nothing
        self.expect[buf_id] = (tok, payload, 48 * n_write, how, 1 if indirect else n_read + n_write)
        self.pending.append(buf_id)
        self.next_token += 1
        note(f"driver adds token {tok} as Buffer ID {buf_id}: {len(readable)} readable "
             f"({len(payload)} bytes), {n_write} writable, {how}")

    @step()
    def publish(self) -> None:
        notify = self.drv.publish()  # reads the Device Event Suppression structure (PACKED-DEV-D8)
        self.R.saw("PACKED-DEV-D8")
        self.published += self.pending
        self.pending = []
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
            self.R.check("PACKED-DEV-6", chain is None, f"the device popped Buffer ID "
                         f"{getattr(chain, 'head', '')} with nothing made available ({len(self.pending)} "
                         "added, not yet published)")
            self.R.saw("PACKED-DEV-D12")  # nothing new: a spurious notification changes nothing
            note("device pops: nothing available")
            return
        want = self.published[0]
        if chain is None:
            raise ImplementationError("device queue.pop", f"returned nothing with Buffer ID {want} available")
        tok, payload, wlen, how, _ = self.expect[want]
        if chain.head != want:
            req = ("PACKED-DEV-1" if chain.head in self.published else
                   "PACKED-DEV-D5" if how.startswith("indirect") else "PACKED-DEV-D4")
            self.R.check(req, False, f"the device popped Buffer ID {chain.head}; the next list in the ring "
                         f"({how}) is Buffer ID {want}")
        self.R.saw("PACKED-DEV-1")
        self.published.pop(0)
        got = chain.read_all(self.mem)
        req = "PACKED-DEV-D6" if "WRITE" in how else "PACKED-DEV-D5" if how == "indirect" else "PACKED-DEV-8"
        self.R.check(req, got == payload and chain.writable_len == wlen,
                     f"Buffer ID {want} ({how}): the device read {len(got)} readable bytes "
                     f"{'(different)' if got != payload else ''} and {chain.writable_len} writable bytes; "
                     f"the driver supplied {len(payload)} and {wlen}")
        self.popped[want] = chain
        note(f"device pops Buffer ID {want} (token {tok}, {how})")

    @step(when=lambda self: self.popped, use=USE)
    def device_use(self, use: tuple[int, int]) -> None:
        ids = sorted(self.popped)
        buf_id = ids[use[0] % len(ids)]
        chain = self.popped.pop(buf_id)
        length = use[1] % (chain.writable_len + 1)
        chain.write_all(self.mem, bytes([buf_id & 0xFF]) * length)
        self.dut.add_used(buf_id, length)
        tok, *_, ndesc = self.expect.pop(buf_id)
        self.used_order.append((tok, length))
        self.used_pos += ndesc  # §2.8.6: the next used descriptor goes after the list's descriptors
        self._check_notify()
        note(f"device uses Buffer ID {buf_id} with len {length}")

    def _check_notify(self) -> None:
        """PACKED-DEV-D10/D11 for everything used since the last decision."""
        got = bool(self.dut.notify_needed())
        wish = EventSuppress.read(self.mem, self.addrs.avail)
        owed, ok = allowed(wish, got, self.used_pos, self.decided_at, self.signalled_at, self.qs)
        self.R.check("PACKED-DEV-D10" if owed else "PACKED-DEV-D11", ok,
                     f"used positions {self.decided_at}->{self.used_pos}, driver asks {wish}: the device "
                     f"{'did not notify' if owed else 'notified'}")
        self.decided_at = self.used_pos
        if got:
            self.signalled_at = self.used_pos

    @step(when=lambda self: self.published or self.pending, uses=USES)
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

    @step(asks=st.tuples(st.booleans(), st.booleans()), burst=BURST, payload=PAYLOADS, uses=USES)
    def burst(self, asks: tuple[bool, bool], burst: Burst, payload: bytes,
              uses: list[tuple[int, int]]) -> None:
        """Both sides say what notifications they want, then add a few lists (the same payload, cut at its
        first bytes) and send them round."""
        self.driver_suppress(asks[0])
        self.device_suppress(asks[1])
        for n_read, n_write, indirect, write_flag in burst:
            self.add(n_read, n_write, indirect, write_flag, payload, [])
        self.round_trip(uses)

    @step(enabled=st.booleans())
    def device_suppress(self, enabled: bool) -> None:
        self.dut.set_avail_notifications(enabled)
        note(f"device {'asks for' if enabled else 'advises against'} available buffer notifications")

    @step()
    def harvest(self) -> None:
        got = self.drv.harvest()  # every used descriptor is checked here (HARVEST_CHECKS)
        for req in HARVEST_CHECKS:
            self.R.saw(req)
        if self.indirect:
            self.R.saw("PACKED-DEV-D7")
        want, self.used_order = self.used_order[:len(got)], self.used_order[len(got):]
        seen = [(u.token, u.len) for u in got]
        if seen != want:
            raise ImplementationError("device queue", f"the ring holds used {seen}, the device used {want}")
        note(f"driver harvests {len(got)} used buffer(s)")
