"""What both packed-virtqueue machines share: the ring placed by the packed layout, drawn sizes that need
not be powers of two, start positions a few descriptors before a wrap, and the notification judgement."""

from __future__ import annotations

from hypothesis import strategies as st

from refmodel.virtio.features import Feature
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.events import EventSuppress
from refmodel.virtio.packed.layout import desc_ring_size, place, wrap_of

from conformance.machines.base import note
from conformance.machines.virtq.base import MEM, RING, QueueMachine

#: §2.8: any size 1..32768. Small odd sizes wrap often; 256 is the split machines' largest.
PACKED_SIZES = st.one_of(st.sampled_from([1, 2, 3, 5, 7, 13, 256]), st.integers(1, 40))
#: The start position is ``laps * qs - back``: ``back`` descriptors before a wrap (or at one).
LAPS = st.integers(0, 3)
BACK = st.integers(0, 3)
#: A burst of lists, each (readable buffers, writable buffers, indirect, WRITE on the table's descriptor):
#: one step that adds them and sends them round, so an example meets many used descriptors and wraps.
BURST = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.booleans(), st.booleans()), min_size=1,
                 max_size=4)
Burst = list[tuple[int, int, bool, bool]]
#: What the stale ring holds before the driver side is built (the driver must zero it: PACKED-DRV-D12).
STALE = 0xA5


def allowed(ev: EventSuppress, got: bool, new: int, decided_at: int, notified_at: int,
            qs: int) -> tuple[bool, bool]:
    """(owed, ok), the windows as in :meth:`conformance.machines.notify.Suppression.allowed`: owed if due
    since the last decision, allowed if due since the last notification (AMB-PACKED-EVENT-WINDOW)."""
    owed = ev.due(decided_at, new, qs)
    return owed, got == owed or got and (owed or ev.due(notified_at, new, qs))


class PackedQueueMachine(QueueMachine):
    """A packed virtqueue in guest memory, one side under test and the reference on the other."""

    scope = "PACKED-"

    def _packed_ring(self, qs: int, event_idx: bool, indirect: bool, laps: int, back: int) -> int:
        """Place the ring, stale bytes in it; returns the start position."""
        self.mem = GuestMemory(MEM)
        self.addrs = place(RING, qs)
        self.mem.fill(self.addrs.desc, desc_ring_size(qs), STALE)
        self.qs, self.event_idx, self.indirect = qs, event_idx, indirect
        self.next_token = 0
        self.booted = True
        self.R.features |= Feature.VIRTIO_F_RING_PACKED.mask | (
            Feature.VIRTIO_F_EVENT_IDX.mask if event_idx else 0) | (
            Feature.VIRTIO_F_INDIRECT_DESC.mask if indirect else 0)
        start = max(0, laps * qs - back)
        note(f"packed queue size {qs}, event_idx={event_idx}, indirect={indirect}, positions start at "
             f"{start} (offset {start % qs}, wrap counter {wrap_of(start, qs)})")
        return start
