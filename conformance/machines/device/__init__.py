"""A device under test, driven by the reference driver and compared with the model.

The device is reached only through its transport calls (:class:`conformance.interface.DeviceUnderTest`)
and the guest memory it shares with the reference driver. Every observation is checked: the used
rings by the reference driver's parsers, interrupts against the notification rules, the config space
against the hinting handshake, and the guest's pages against what the workload wrote.

The machine is put together from one mixin per requirement area, each in its own module: boot and
negotiation, reset, operation (the turns, with notifications and pages), hinting, stats, reporting and
memory pressure, used lengths, malformed driver input, and rules aimed at the dangerous moments.
"""

from __future__ import annotations

from conformance.machines.base import CYCLES, OPTIONAL
from conformance.machines.device.boot import DEVICE_STATS_TAGS, N_PAGES, UNKNOWN_STAT_TAG, DeviceBoot
from conformance.machines.device.malformed import MALFORMED, DeviceMalformedInput
from conformance.machines.device.moments import DeviceMoments
from conformance.machines.device.notifications import OWED_LOOKS
from conformance.machines.device.stats import DeviceStats
from conformance.machines.device.used import DeviceUsedLengths

__all__ = ["CYCLES", "DEVICE_STATS_TAGS", "DeviceConformance", "MALFORMED", "N_PAGES", "OPTIONAL",
           "OWED_LOOKS", "UNKNOWN_STAT_TAG"]


class DeviceConformance(DeviceMoments, DeviceMalformedInput, DeviceUsedLengths, DeviceStats, DeviceBoot):
    """Subclass with ``factory = staticmethod(lambda mem: device)``; see :mod:`conformance.registry`."""
