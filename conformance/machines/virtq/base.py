"""What both virtqueue-level machines share: the ring in a small guest memory, and chain buffers."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from refmodel.virtio.features import Feature
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import QueueAddresses

from conformance.machines.base import ConformanceMachine, note

RING = 0x1000
DATA = 0x20000  # 256-byte payload slot per token
OUT = 0x40000  # 256-byte writable slot per token
ARENA = (0x60000, 0x10000)
MEM = 0x80000
SIZES = st.sampled_from([1, 2, 4, 8, 16, 256])
STARTS = st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0xFFFF - 20, 0xFFFF))


def chain_payload(draw: Any, n_read: int) -> tuple[bytes, list[int]]:
    payload = draw(st.binary(min_size=max(n_read, 1), max_size=96), label="payload")
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(payload) - 1)), min_size=n_read - 1,
                               max_size=n_read - 1), label="cuts")) if n_read > 1 else []
    return payload, cuts


class QueueMachine(ConformanceMachine):
    """A split virtqueue in guest memory, one side under test and the reference on the other."""

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
        payload, cuts = chain_payload(data.draw, n_read) if n_read else (b"", [])
        base = DATA + 256 * (tok % 64)
        self.mem.write(base, payload)
        bounds = [0, *cuts, len(payload)]
        readable = [(base + s, e - s) for s, e in zip(bounds, bounds[1:])] if n_read else []
        writable = [(OUT + 256 * (tok % 64) + 48 * i, 48) for i in range(n_write)]
        return payload, readable, writable
