"""Memory statistics, driver side (§5.5.6.3): a returned stats buffer comes back, with entries."""

from __future__ import annotations

from refmodel.virtio.features import Feature

from conformance.machines.base import note, step
from conformance.machines.driver.operation import DriverOperation


class DriverStats(DriverOperation):
    @step(needs=lambda self: self.has(Feature.VIRTIO_BALLOON_F_STATS_VQ))
    def request_stats(self) -> None:
        returned = self.ref.request_stats()
        irq = self.ref.take_interrupts()
        self._driver(self.drv.interrupt, irq.queues, irq.config)
        if returned:
            updates = self.ref.stats_updates
            for _ in range(3):
                self._cycle()
            self.R.check("BAL-ST-DRV-3", self.ref.stats_updates > updates,
                         "the device returned the stats buffer and the driver never made another available")
            self.R.check("BAL-ST-DRV-4", bool(self.ref.stats_tags), "stats buffer without entries")
        note("host asks for statistics")
