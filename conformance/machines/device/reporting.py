"""Free page reporting and memory pressure, device side (§5.5.6.7, §5.5.6.1 with DEFLATE_ON_OOM): the
reference driver reports or deflates; the pages area checks what the device does with them. Both reap
used buffers first, so what the device gave back is recorded around them too."""

from __future__ import annotations

from hypothesis import strategies as st

from refmodel.virtio.features import Feature

from conformance.machines.base import note, step
from conformance.machines.device.pages import DevicePages


class DeviceReportingAndOom(DevicePages):
    def _report(self) -> int:
        """The driver reports free pages; returns how many."""
        held = self._held_pages()
        n = self.drv.report()
        self._given_back(held)  # also records the pages just reported
        return n

    @step(needs=lambda self: self.has(Feature.VIRTIO_BALLOON_F_PAGE_REPORTING))
    def report(self) -> None:
        n = self._report()
        note(f"driver reports {n} free page(s)")

    @step(needs=lambda self: self.has(Feature.VIRTIO_BALLOON_F_DEFLATE_ON_OOM), count=st.integers(1, 8))
    def oom(self, count: int) -> None:
        held = self._held_pages()
        n = self.drv.oom(count)
        self._given_back(held)
        note(f"memory pressure: the driver deflates {n} page(s)")
