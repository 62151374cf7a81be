"""Any interleaving of driver adds and device uses on a packed ring round-trips every buffer exactly, in
order and out of order, across many wraps, for queue sizes that need not be powers of two and start
positions next to a wrap; both sides' notification decisions match a brute-force reading of §2.8.10."""

import inspect

import pytest
from hypothesis import note, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from conformance.interface import DeviceQueueUnderTest, DriverQueueUnderTest, check_implementation
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import IndirectArena, PackedQueueDriver, QueueFull
from refmodel.virtio.packed.events import EventSuppress
from refmodel.virtio.packed.layout import RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_ENABLE, place, wrap_of
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver

DATA = 0x40000  # per-token 256-byte payload slots
OUT = 0x80000   # per-token 256-byte writable slots
SIZES = st.one_of(st.integers(1, 7), st.integers(8, 40), st.sampled_from([100, 255, 256, 257]))


def brute_due(ev, old, new, qs):
    """§2.8.10 read literally: ENABLE -> anything new; DESC -> the named position was passed."""
    if new <= old:
        return False
    if ev.flags == RING_EVENT_FLAGS_ENABLE:
        return True
    if ev.flags == RING_EVENT_FLAGS_DESC:
        return any(p % qs == ev.off and wrap_of(p, qs) == ev.wrap for p in range(old, new))
    return False


class PackedRingRoundTrip(RuleBasedStateMachine):
    @initialize(qs=SIZES, event_idx=st.booleans(), indirect=st.booleans(), in_order=st.booleans(),
                laps=st.integers(0, 5), back=st.integers(0, 3))
    def setup(self, qs, event_idx, indirect, in_order, laps, back):
        start = max(0, laps * qs - back)  # a few descriptors before a wrap, or at one
        note(f"queue size {qs}, event_idx={event_idx}, indirect={indirect}, in_order={in_order}, "
             f"start {start}")
        self.mem = GuestMemory(1 << 20)
        self.a = place(0x1000, qs)
        self.qs, self.event_idx, self.indirect, self.in_order = qs, event_idx, indirect, in_order
        self.drv = PackedQueueDriver(self.mem, self.a, qs, event_idx=event_idx, indirect_desc=indirect,
                                     start_idx=start, indirect_arena=IndirectArena(0xC0000, 0x10000),
                                     scrub_used=True, check_device_writes=True)
        self.dev = PackedQueueDevice(self.mem, self.a, qs, event_idx=event_idx, indirect_desc=indirect,
                                     start_idx=start, check_driver_writes=True)
        self.start = start
        self.next_token = 0
        self.added = {}     # buffer ID -> (token, readable, writable, payload); not yet harvested
        self.published = []  # buffer IDs published, in ring order, not yet popped
        self.pending = []   # added, not yet published
        self.popped = []    # buffer IDs the device holds, in pop order
        self.used = {}      # token -> reply bytes written by the device
        self.harvested = []

    @rule(n_read=st.integers(0, 3), n_write=st.integers(0, 2), indirect=st.booleans(), data=st.data())
    def add(self, n_read, n_write, indirect, data):
        indirect = indirect and self.indirect
        if n_read + n_write == 0 or n_read + n_write > self.qs:
            return  # PACKED-DRV-7 / -14 forbid it; test_packed_malformed covers the refusal
        tok = self.next_token
        payload = data.draw(st.binary(min_size=n_read, max_size=64), label="payload") if n_read else b""
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(payload) - 1)), min_size=n_read - 1,
                                        max_size=n_read - 1), label="cuts")) if n_read > 1 else []
        if len(cuts) != max(n_read - 1, 0):
            return
        base = DATA + 256 * (tok % 256)
        self.mem.write(base, payload)
        bounds = [0, *cuts, len(payload)]
        readable = [(base + s, e - s) for s, e in zip(bounds, bounds[1:])] if n_read else []
        writable = [(OUT + 256 * (tok % 256) + 32 * i, 32) for i in range(n_write)]
        try:
            buf_id = self.drv.add(readable, writable, token=tok, indirect=indirect)
        except QueueFull:
            note("queue full")
            return
        note(f"add token {tok} as ID {buf_id}: {len(readable)} readable, {n_write} writable, "
             f"indirect={indirect}")
        assert buf_id not in self.added
        self.added[buf_id] = (tok, readable, writable, payload)
        self.pending.append(buf_id)
        self.next_token += 1

    @rule()
    def publish(self):
        old = self.drv.last_kick_idx
        got = self.drv.publish()
        want = brute_due(EventSuppress.read(self.mem, self.a.used), old, self.drv.next_avail, self.qs)
        assert got == want, (old, self.drv.next_avail)
        self.published += self.pending
        self.pending = []
        note(f"publish -> notify={got}")

    @rule()
    def pop(self):
        assert self.dev.available() == len(self.published)
        chain = self.dev.pop()
        note(f"pop -> {None if chain is None else chain.head}")
        if not self.published:
            assert chain is None
            return
        buf_id = self.published.pop(0)
        assert chain is not None and chain.head == buf_id
        tok, readable, writable, payload = self.added[buf_id]
        assert [(b.addr, b.len) for b in chain.readable] == readable
        assert [(b.addr, b.len) for b in chain.writable] == writable
        assert chain.read_all(self.mem) == payload
        self.popped.append(buf_id)

    @precondition(lambda self: self.popped)
    @rule(data=st.data())
    def use(self, data):
        i = 0 if self.in_order else data.draw(st.integers(0, len(self.popped) - 1), label="which")
        buf_id = self.popped.pop(i)
        tok = self.added[buf_id][0]
        chain = self.dev.in_flight_chain(buf_id)
        reply = data.draw(st.binary(max_size=chain.writable_len), label="reply")
        n = chain.write_all(self.mem, reply)
        old = self.dev.last_signalled
        self.dev.add_used(buf_id, n)
        self.used[tok] = reply
        want = brute_due(EventSuppress.read(self.mem, self.a.avail), old, self.dev.next_used, self.qs)
        got = self.dev.notify_needed()
        assert got == want
        note(f"use ID {buf_id} (token {tok}) len {n} -> notify={got}")

    @rule(count=st.integers(1, 12), data=st.data())
    def round_trip(self, count, data):
        """Add ``count`` lists, publish, pop them all, use them (in a drawn order), harvest: laps go fast."""
        for _ in range(count):
            shape = data.draw(st.tuples(st.integers(0, 3), st.integers(0, 2), st.booleans()), label="shape")
            self.add(*shape, data)
        self.publish()
        while self.published:
            self.pop()
        while self.popped:
            self.use(data)
        self.harvest()

    @rule(enabled=st.booleans())
    def driver_suppress(self, enabled):
        self.drv.set_used_notifications(enabled)

    @rule(enabled=st.booleans())
    def device_suppress(self, enabled):
        self.dev.set_avail_notifications(enabled)

    @rule()
    def harvest(self):
        got = self.drv.harvest()
        note(f"harvest -> {[(u.head, u.token, u.len) for u in got]}")
        for u in got:
            tok, _, writable, _ = self.added.pop(u.head)
            assert u.token == tok
            reply = self.used.pop(tok)
            assert u.len == len(reply)
            if writable:
                assert self.mem.read(writable[0][0], len(reply)) == reply
            self.harvested.append(tok)

    @invariant()
    def conservation(self):
        if not hasattr(self, "drv"):
            return
        assert len(self.harvested) == len(set(self.harvested)), "a buffer came back twice"
        assert self.drv.in_flight == len(self.added)
        assert self.dev.in_flight == len(self.popped)
        assert set(self.used) <= {t for t, *_ in self.added.values()}
        # The device's positions never pass the driver's, and the in-flight span fits the ring.
        assert self.drv.next_used <= self.dev.next_used <= self.dev.next_avail <= self.drv.next_avail
        assert 0 <= self.drv.next_avail - self.drv.next_used <= self.qs - self.drv.num_free <= self.qs

    def teardown(self):
        if not hasattr(self, "drv"):
            return
        # Drain: everything added comes back exactly once, and every descriptor is free again.
        self.drv.publish()
        while (c := self.dev.pop()) is not None:
            self.popped.append(c.head)
        for buf_id in self.popped:
            self.dev.add_used(buf_id, 0)
        got = self.drv.harvest()
        assert sorted(self.harvested + [u.token for u in got]) == list(range(self.next_token))
        assert self.drv.num_free == self.qs and self.drv.in_flight == 0 and self.dev.in_flight == 0
        assert self.drv.next_used == self.dev.next_used == self.dev.next_avail == self.drv.next_avail


PackedRingRoundTrip.TestCase.settings = settings(stateful_step_count=80)
TestPackedRingRoundTrip = PackedRingRoundTrip.TestCase
TestPackedRingRoundTrip.pytestmark = [pytest.mark.verifies(
    "PACKED-DEV-8", "PACKED-DEV-D4", "PACKED-DRV-D2", "PACKED-DEV-D2", "PACKED-DRV-D10", "PACKED-DRV-D11",
    "PACKED-DEV-D10", "PACKED-DEV-D11", "PACKED-DRV-D12")]


@pytest.mark.parametrize("qs", [1, 3, 7, 100, 257])
@pytest.mark.parametrize("in_order", [True, False])
def test_many_wraps_with_full_rings(qs, in_order):
    """Fill the ring with lists of mixed lengths, use them all (reversed when out of order), repeat for
    many laps: the Buffer IDs, the wrap counters and the skipping stay in step."""
    mem = GuestMemory(1 << 20)
    a = place(0x1000, qs)
    drv = PackedQueueDriver(mem, a, qs, indirect_desc=True, indirect_arena=IndirectArena(0xC0000, 0x10000),
                            scrub_used=True, check_device_writes=True, start_idx=qs - 1)
    dev = PackedQueueDevice(mem, a, qs, indirect_desc=True, start_idx=qs - 1, check_driver_writes=True)
    tok = 0
    for rnd in range(40):
        added = {}
        while True:
            n = 1 + (tok % 3) % qs if qs > 1 else 1
            try:
                readable = [(DATA + 16 * (tok % 64), 16)] * max(n - 1, 1)
                writable = [(OUT + 16 * (tok % 64), 16)] if n > 1 else []
                bid = drv.add(readable, writable, token=tok, indirect=tok % 5 == 0)
            except QueueFull:
                break
            added[bid] = tok
            tok += 1
        assert drv.publish()  # flags ENABLE: a notification after every publication
        chains = []
        while (c := dev.pop()) is not None:
            chains.append(c)
        assert [c.head for c in chains] == list(added)
        for c in (chains if in_order else reversed(chains)):
            dev.add_used(c.head, c.writable_len)
        assert dev.notify_needed()
        got = drv.harvest()
        assert sorted(u.token for u in got) == sorted(added.values())
        assert drv.num_free == qs
    assert drv.next_avail > 20 * qs  # many laps


@pytest.mark.parametrize("cls, protocol, role", [
    (PackedQueueDriver, DriverQueueUnderTest, "driver queue"),
    (PackedQueueDevice, DeviceQueueUnderTest, "device queue"),
])
def test_same_interface_as_the_split_queue(cls, protocol, role):
    mem = GuestMemory(0x80000)
    obj = cls(mem, place(0x1000, 5), 5)
    assert check_implementation(obj, protocol, role) == frozenset()
    split = SplitQueueDriver if cls is PackedQueueDriver else SplitQueueDevice
    # A machine passes the same constructor keywords to either ring, and calls the same methods.
    assert set(inspect.signature(split).parameters) <= set(inspect.signature(cls).parameters)
    for name, method in inspect.getmembers(split, inspect.isfunction):
        if not name.startswith("_") and name in protocol.__dict__ or name in ("kicked", "signalled"):
            assert inspect.signature(method).parameters.keys() == \
                inspect.signature(getattr(cls, name)).parameters.keys(), name
