"""Virtqueue-level conformance: one split or packed virtqueue under test against our other side.

* :class:`DeviceQueueConformance` drives a device-side queue
  (:class:`conformance.interface.DeviceQueueUnderTest`, the shape of
  :class:`refmodel.virtio.split.device.SplitQueueDevice`) with the reference driver-side queue, which
  scrubs the used ring and snapshots what the device must not write.
* :class:`DriverQueueConformance` drives a driver-side queue
  (:class:`conformance.interface.DriverQueueUnderTest`, the shape of
  :class:`refmodel.virtio.split.driver.SplitQueueDriver`) with the strict reference device-side queue.

Both start the ring indices anywhere, near the u16 wrap included, and draw the queue size, EVENT_IDX
and indirect descriptors. :class:`PackedDeviceQueueConformance` and :class:`PackedDriverQueueConformance`
do the same for a packed virtqueue (§2.8; the ring placed by :func:`refmodel.virtio.packed.layout.place`),
with sizes that need not be powers of two and start positions a few descriptors before a wrap.

A factory takes ``(mem, addrs, queue_size, *, event_idx, indirect_desc, start_idx)``; the driver-side one
also gets ``indirect_arena``.
"""

from __future__ import annotations

from conformance.machines.virtq.base import ARENA, DATA, MEM, OUT, RING, SIZES, STARTS, QueueMachine
from conformance.machines.virtq.device import DeviceQueueConformance
from conformance.machines.virtq.driver import DriverQueueConformance
from conformance.machines.virtq.packed_device import PackedDeviceQueueConformance
from conformance.machines.virtq.packed_driver import PackedDriverQueueConformance

#: The machines of each ring layout, (device side, driver side).
QUEUE_MACHINES = {"split": (DeviceQueueConformance, DriverQueueConformance),
                  "packed": (PackedDeviceQueueConformance, PackedDriverQueueConformance)}

__all__ = ["ARENA", "DATA", "DeviceQueueConformance", "DriverQueueConformance", "MEM", "OUT",
           "PackedDeviceQueueConformance", "PackedDriverQueueConformance", "QUEUE_MACHINES", "QueueMachine",
           "RING", "SIZES", "STARTS"]
