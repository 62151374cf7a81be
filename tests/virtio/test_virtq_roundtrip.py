"""Any interleaving of driver adds and device uses round-trips buffers exactly; nothing is lost or duplicated."""

from hypothesis import note, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import QueueAddresses
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import IndirectArena, QueueFull, SplitQueueDriver

DATA = 0x40000  # per-token 256-byte payload slots
OUT = 0x80000   # per-token 256-byte writable slots


class SplitRingRoundTrip(RuleBasedStateMachine):
    @initialize(qs=st.sampled_from([1, 2, 4, 8, 16]), event_idx=st.booleans(), indirect=st.booleans(),
                start=st.one_of(st.just(0), st.integers(65535 - 40, 65535)))
    def setup(self, qs, event_idx, indirect, start):
        note(f"queue size {qs}, event_idx={event_idx}, indirect={indirect}, start idx {start}")
        self.mem = GuestMemory(1 << 20)
        a = QueueAddresses.packed_at(0x1000, qs)
        self.qs = qs
        self.drv = SplitQueueDriver(self.mem, a, qs, event_idx=event_idx, indirect_desc=indirect, start_idx=start,
                                    indirect_arena=IndirectArena(0xC0000, 0x10000), scrub_used=True)
        self.dev = SplitQueueDevice(self.mem, a, qs, event_idx=event_idx, indirect_desc=indirect, start_idx=start)
        self.indirect = indirect
        self.next_token = 0
        self.added = {}     # token -> (payload, writable size); added by the driver, not yet harvested
        self.popped = {}    # head -> (token, chain)
        self.used = {}      # token -> reply bytes written by the device
        self.harvested = []

    @rule(n_read=st.integers(1, 3), n_write=st.integers(0, 2), indirect=st.booleans(), data=st.data())
    def add(self, n_read, n_write, indirect, data):
        indirect = indirect and self.indirect
        if n_read + n_write > self.qs:
            return  # SPLIT-DRV-8 forbids it, direct or indirect; test_virtq_malformed covers the refusal
        tok = self.next_token
        payload = data.draw(st.binary(min_size=n_read, max_size=64), label="payload")
        cuts = sorted(data.draw(st.lists(st.integers(1, max(1, len(payload) - 1)), min_size=n_read - 1,
                                         max_size=n_read - 1, unique=True), label="cuts")) if n_read > 1 else []
        if len(cuts) != n_read - 1:
            return
        base = DATA + 256 * (tok % 256)
        self.mem.write(base, payload)
        bounds = [0, *cuts, len(payload)]
        readable = [(base + s, e - s) for s, e in zip(bounds, bounds[1:])]
        writable = [(OUT + 256 * (tok % 256) + 32 * i, 32) for i in range(n_write)]
        try:
            self.drv.add(readable, writable, token=tok, indirect=indirect)
        except QueueFull:
            note("queue full")
            return
        note(f"add token {tok}: {len(readable)} readable, {len(writable)} writable, indirect={indirect}")
        self.added[tok] = (payload, 32 * n_write)
        self.next_token += 1

    @rule()
    def publish(self):
        note(f"publish -> notify={self.drv.publish()}")

    @rule()
    def pop(self):
        chain = self.dev.pop()
        note(f"pop -> {None if chain is None else chain.head}")
        if chain is None:
            return
        payload = chain.read_all(self.mem)
        token = next(t for t, (p, w) in self.added.items()
                     if p == payload and w == chain.writable_len and t not in {x for x, _ in self.popped.values()}
                     and t not in self.used)
        self.popped[chain.head] = (token, chain)

    @precondition(lambda self: self.popped)
    @rule(data=st.data())
    def use(self, data):
        head = data.draw(st.sampled_from(sorted(self.popped)), label="head")
        token, chain = self.popped.pop(head)
        reply = data.draw(st.binary(max_size=chain.writable_len), label="reply")
        n = chain.write_all(self.mem, reply)
        self.dev.add_used(head, n)
        self.used[token] = reply
        note(f"use head {head} (token {token}) len {n} -> notify={self.dev.notify_needed()}")

    @rule()
    def harvest(self):
        got = self.drv.harvest()
        note(f"harvest -> {[(u.token, u.len) for u in got]}")
        for u in got:
            reply = self.used.pop(u.token)
            assert u.len == len(reply)
            payload, _ = self.added.pop(u.token)
            addr = OUT + 256 * (u.token % 256)
            assert self.mem.read(addr, len(reply)) == reply
            self.harvested.append(u.token)

    @invariant()
    def conservation(self):
        if not hasattr(self, "drv"):
            return
        assert len(self.harvested) == len(set(self.harvested)), "a buffer came back twice"
        assert self.drv.in_flight == len(self.added)
        assert self.dev.in_flight == len(self.popped)
        assert set(self.used) <= set(self.added)

    def teardown(self):
        if not hasattr(self, "drv"):
            return
        # Drain: everything added comes back exactly once.
        self.drv.publish()
        while (c := self.dev.pop()) is not None:
            self.popped[c.head] = (None, c)
        for head in list(self.popped):
            self.dev.add_used(head, 0)
        got = self.drv.harvest()
        assert sorted(self.harvested + [u.token for u in got]) == list(range(self.next_token))
        assert self.drv.num_free == self.qs


TestSplitRingRoundTrip = SplitRingRoundTrip.TestCase
