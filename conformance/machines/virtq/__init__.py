"""Virtqueue-level conformance: one split virtqueue implementation under test against our other side.

* :class:`DeviceQueueConformance` drives a device-side queue
  (:class:`conformance.interface.DeviceQueueUnderTest`, the shape of
  :class:`refmodel.virtio.split.device.SplitQueueDevice`) with the reference driver-side queue, which
  scrubs the used ring and snapshots what the device must not write.
* :class:`DriverQueueConformance` drives a driver-side queue
  (:class:`conformance.interface.DriverQueueUnderTest`, the shape of
  :class:`refmodel.virtio.split.driver.SplitQueueDriver`) with the strict reference device-side queue.

Both start the ring indices anywhere, near the u16 wrap included, and draw the queue size, EVENT_IDX
and indirect descriptors. A factory takes ``(mem, addrs, queue_size, *, event_idx, indirect_desc,
start_idx)``; the driver-side one also gets ``indirect_arena``.
"""

from __future__ import annotations

from conformance.machines.virtq.base import ARENA, DATA, MEM, OUT, RING, SIZES, STARTS, QueueMachine
from conformance.machines.virtq.device import DeviceQueueConformance
from conformance.machines.virtq.driver import DriverQueueConformance

__all__ = ["ARENA", "DATA", "DeviceQueueConformance", "DriverQueueConformance", "MEM", "OUT", "QueueMachine",
           "RING", "SIZES", "STARTS"]
