"""Free page reporting and memory pressure, device side (§5.5.6.7, §5.5.6.1 with DEFLATE_ON_OOM): the
reference driver reports or deflates; the pages area checks what the device does with them."""

from __future__ import annotations

from hypothesis import strategies as st

from refmodel.virtio.features import Feature

from conformance.machines.base import note, step
from conformance.machines.device.base import DeviceMachine


class DeviceReportingAndOom(DeviceMachine):
    @step(when=lambda self: self.has(Feature.VIRTIO_BALLOON_F_PAGE_REPORTING))
    def report(self) -> None:
        n = self.drv.report()
        note(f"driver reports {n} free page(s)")

    @step(when=lambda self: self.has(Feature.VIRTIO_BALLOON_F_DEFLATE_ON_OOM), count=st.integers(1, 8))
    def oom(self, count: int) -> None:
        n = self.drv.oom(count)
        note(f"memory pressure: the driver deflates {n} page(s)")
