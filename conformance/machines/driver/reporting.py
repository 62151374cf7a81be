"""Free page reporting and memory pressure, driver side (§5.5.6.7, §5.5.6.1 with DEFLATE_ON_OOM): the
driver is asked to report or to give pages back; the reference device checks what it sends."""

from __future__ import annotations

from hypothesis import strategies as st

from refmodel.virtio.features import Feature

from conformance.interface import Capability
from conformance.machines.base import note, step
from conformance.machines.driver.base import DriverMachine


class DriverReportingAndOom(DriverMachine):
    @step(needs=lambda self: self.has(Feature.VIRTIO_BALLOON_F_PAGE_REPORTING)
          and Capability.REPORT in self.caps)
    def report(self) -> None:
        n = self._driver(self.drv.report)
        note(f"driver reports {n} free page(s)")

    @step(when=lambda self: Capability.OOM in self.caps, count=st.integers(1, 8))
    def oom(self, count: int) -> None:
        n = self._driver(self.drv.oom, count)
        note(f"memory pressure: the driver gives back {n} page(s)")
