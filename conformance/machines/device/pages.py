"""Pages the device must leave alone: the workload's (BAL-OP-DEV-D1), and free pages it gave back, as it
left them: deflated (BAL-OP-DEV-D1), hinted after DONE (BAL-FPH-DEV-5), reported (BAL-FPR-DEV-D1)."""

from __future__ import annotations

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.system.guest import bits
from refmodel.system.guest_os import poison_pattern
from refmodel.virtio.features import Feature

from conformance.machines.base import live_invariant
from conformance.machines.device.base import DeviceMachine


class DevicePages(DeviceMachine):
    def _written(self, pages: list[int]) -> None:
        for page in pages:
            self.mark.pop(page, None)  # written after any earlier device ownership ended

    def _held_pages(self) -> tuple[int, int, int]:
        """Before the driver runs: pages hinted, pages isolated for reporting, pages released so far."""
        pages = self.os.pages
        return pages.hinted, pages.isolated, len(self.drv.released)

    def _given_back(self, held: tuple[int, int, int]) -> None:
        """After the driver ran: freeze the pages the device has just given back to the guest."""
        hinted, isolated, released = held
        pages = self.os.pages
        for p in bits(hinted & ~pages.hinted):
            self._freeze(p, "BAL-FPH-DEV-5")
        poison = self.drv.poison_val if self.has(Feature.VIRTIO_BALLOON_F_PAGE_POISON) else None
        for p in bits(isolated & ~pages.isolated):
            if poison is not None:
                self.R.check("BAL-FPR-DEV-2", self.os.holds(p, poison_pattern(poison)),
                             f"reported page {p} does not hold poison_val {poison:#010x} after the ack")
            self._freeze(p, "BAL-FPR-DEV-D1")
        for p in self.drv.released[released:]:
            self._freeze(p, "BAL-OP-DEV-D1")

    def _freeze(self, page: int, req_id: str) -> None:
        """The device gave ``page`` back: from now on it must not change it (``req_id``)."""
        self.mark[page] = req_id
        self.frozen[page] = (req_id, self.os.mem.read(page * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE))

    @live_invariant()
    def workload_pages_intact(self) -> None:
        for p in self.os.corrupted():
            req = self.mark.get(p, "BAL-OP-DEV-D1")
            self.R.check(req, False, f"workload page {p} changed under the guest")
        free = self.os.pages.free
        for p, (req, data) in list(self.frozen.items()):
            if not free >> p & 1:
                del self.frozen[p]  # the guest or the driver took it: no longer the device's to leave alone
            elif self.os.mem.read(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) != data:
                self.R.check(req, False, f"free page {p} changed after the device gave it back")
        for req in {"BAL-OP-DEV-D1", *self.mark.values()}:
            self.R.saw(req)
