"""What both virtqueue-level machines share: the ring in a small guest memory, and chain buffers."""

from __future__ import annotations

from hypothesis import strategies as st

from refmodel.virtio.features import Feature
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.split.layout import avail_ring_size, desc_table_size
from refmodel.virtio.virtq import QueueAddresses

from conformance.machines.base import PICK, ConformanceMachine, note

RING = 0x1000
DATA = 0x20000  # 256-byte payload slot per token
OUT = 0x40000  # 256-byte writable slot per token
ARENA = (0x60000, 0x10000)
MEM = 0x80000
SIZES = st.sampled_from([1, 2, 4, 8, 16, 256])
STARTS = st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0xFFFF - 20, 0xFFFF))

#: A chain's payload and where to cut it: rule arguments, so the printed counterexample shows them.
PAYLOADS = st.binary(max_size=96)
CUTS = st.lists(st.integers(1, 95), max_size=2)
#: What the device does with a chain it holds: which one (an index into the held heads, sorted) and the
#: used length (modulo the chain's writable bytes + 1).
USE = st.tuples(PICK, st.integers(0, 3 * 48))
USES = st.lists(USE, max_size=8)  # one per chain a round trip uses; past the list, (0, 0)


def chain_payload(payload: bytes, cuts: list[int], n_read: int) -> tuple[bytes, list[int]]:
    """``payload`` (padded to one byte per readable buffer) and ``n_read - 1`` distinct cut points in it:
    the given ones (wrapped into range) first, then the lowest free ones."""
    if not n_read:
        return b"", []
    payload = payload.ljust(n_read, b"\0")
    points: list[int] = []
    for c in ([*cuts, *range(1, len(payload))] if n_read > 1 else []):
        at = (c - 1) % (len(payload) - 1) + 1
        if at not in points:
            points.append(at)
        if len(points) == n_read - 1:
            break
    return payload, sorted(points)


def use_of(uses: list[tuple[int, int]], i: int) -> tuple[int, int]:
    return uses[i] if i < len(uses) else (0, 0)


def _skewed(at: int, align: int) -> int:
    """The first address from ``at`` that is ``align``-aligned and no more: every bit above the
    alignment up to 4 KiB set, so a side that ORs or XORs an offset in, or assumes more alignment than
    SPLIT-DRV-1 gives, lands on the wrong slot (mutation testing found both)."""
    want = 0x1000 - align
    return at + (want - at) % 0x1000


def skewed_ring(qs: int) -> QueueAddresses:
    """The three parts of a split ring at their minimum alignments (16, 2, 4), one after another."""
    desc = _skewed(RING, 16)
    avail = _skewed(desc + desc_table_size(qs), 2)
    return QueueAddresses(desc, avail, _skewed(avail + avail_ring_size(qs), 4))


class QueueMachine(ConformanceMachine):
    """A split virtqueue in guest memory, one side under test and the reference on the other."""

    scope = "SPLIT-"

    def _ring(self, qs: int, event_idx: bool, indirect: bool, start: int) -> None:
        self.mem = GuestMemory(MEM)
        self.addrs = skewed_ring(qs)
        self.qs, self.event_idx, self.indirect = qs, event_idx, indirect
        self.next_token = 0
        self.booted = True
        self.R.features |= (Feature.VIRTIO_F_EVENT_IDX.mask if event_idx else 0) | (
            Feature.VIRTIO_F_INDIRECT_DESC.mask if indirect else 0)
        note(f"queue size {qs}, event_idx={event_idx}, indirect={indirect}, indices start at {start}")

    def _buffers(self, payload: bytes, cuts: list[int], n_read: int, n_write: int) -> tuple[bytes, list, list]:
        """The next token's payload, written to memory, cut into ``n_read`` readable buffers, and
        ``n_write`` writable buffers of 48 bytes."""
        tok = self.next_token
        payload, cuts = chain_payload(payload, cuts, n_read)
        base = DATA + 256 * (tok % 64)
        self.mem.write(base, payload)
        bounds = [0, *cuts, len(payload)]
        readable = [(base + s, e - s) for s, e in zip(bounds, bounds[1:])] if n_read else []
        writable = [(OUT + 256 * (tok % 64) + 48 * i, 48) for i in range(n_write)]
        return payload, readable, writable
