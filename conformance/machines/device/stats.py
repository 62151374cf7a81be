"""Memory statistics, device side (§5.5.6.3): unknown tags ignored, entries in any order."""

from __future__ import annotations

from refmodel.balloon.device import KNOWN_STAT_TAGS
from refmodel.virtio.features import Feature

from conformance.interface import Capability
from conformance.machines.base import note, step
from conformance.machines.device.operation import DeviceOperation


class DeviceStats(DeviceOperation):
    @step(needs=lambda self: self.has(Feature.VIRTIO_BALLOON_F_STATS_VQ) and Capability.STATS in self.caps)
    def request_stats(self) -> None:
        self.dev.request_stats()
        self._collect_interrupts()
        for _ in range(2):
            self._device_run()
            self._driver_run()
        stats = self.dev.host_stats()
        if stats:
            unknown = set(stats) - KNOWN_STAT_TAGS
            self.R.check("BAL-ST-DEV-1", not unknown, f"the device kept unknown stats tags {sorted(unknown)}")
            want = {t: v for t, v in self.drv.last_stats.items() if t in KNOWN_STAT_TAGS}
            self.R.check("BAL-ST-DEV-2", stats == want, f"host sees {stats}, the driver sent {want} "
                         "(in another order)")
        note(f"host asks for statistics: {stats}")
