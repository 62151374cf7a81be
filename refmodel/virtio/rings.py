"""The seam between a virtio device or driver and its virtqueue layout: split (§2.7) or packed (§2.8).

VIRTIO_F_RING_PACKED negotiated means packed rings (§6). A device or driver asks :func:`ring_for` once per
negotiation and builds its queues through the :class:`Ring` it gets, so no balloon code names a layout.
Both rings' queue objects share one API (``pop``/``add_used``/``notify_needed``/... device-side,
``add``/``publish``/``harvest``/... driver-side), plus two marks an observer compares over time:

* driver side, ``used_mark()``: how far the device has used, as the driver can read it now without
  harvesting (split: the used idx; packed: the position after the used descriptors);
* device side, ``avail_mark()``: how far the driver has made buffers available (split: the avail idx;
  packed: the position after the available descriptor lists).

A mark is what the ring's notification suppression counts in (split: u16 ring indices; packed:
descriptor positions), so the same comparisons judge notifications on either ring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from refmodel.virtio.features import Feature, has
from refmodel.virtio.packed import layout as packed_layout
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver
from refmodel.virtio.virtq import QueueAddresses

__all__ = ["PACKED", "RINGS", "Ring", "SPLIT", "ring_for"]

MAX_QUEUE_SIZE = 32768


def _split_size_problem(size: int) -> str | None:
    if size & (size - 1) or not 0 < size <= MAX_QUEUE_SIZE:
        return f"maximum size {size} is not a power of 2 up to {MAX_QUEUE_SIZE}"
    return None


def _packed_size_problem(size: int) -> str | None:
    if not 0 < size <= MAX_QUEUE_SIZE:
        return f"maximum size {size} is not in 1..{MAX_QUEUE_SIZE}"
    return None


@attrs.frozen
class Ring:
    """One virtqueue layout: its queue classes, where its three parts go, and its size rule."""

    name: str
    device: type[Any]  # the device side's queue class
    driver: type[Any]  # the driver side's
    place: Callable[[int, int], QueueAddresses]  # (base, queue size) -> the three parts from base
    end: Callable[[QueueAddresses, int], int]  # first byte after the parts
    size_problem: Callable[[int], str | None]  # why a device's maximum queue size is not allowed
    size_req: str  # the requirement that size rule is

    def queue_bytes(self, queue_size: int) -> int:
        """Bytes the three parts take from a 16-aligned base."""
        return self.end(self.place(0, queue_size), queue_size)


SPLIT = Ring("split", SplitQueueDevice, SplitQueueDriver, QueueAddresses.packed_at,
             lambda addrs, n: addrs.end(n), _split_size_problem, "SPLIT-DEV-D4")
PACKED = Ring("packed", PackedQueueDevice, PackedQueueDriver, packed_layout.place, packed_layout.end,
              _packed_size_problem, "PACKED-DEV-D1")
RINGS = {r.name: r for r in (SPLIT, PACKED)}


def ring_for(negotiated: int | None) -> Ring:
    """The layout the negotiated features select: packed with VIRTIO_F_RING_PACKED, else split."""
    return PACKED if negotiated is not None and has(negotiated, Feature.VIRTIO_F_RING_PACKED) else SPLIT
