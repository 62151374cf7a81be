"""Device operation (§5.5.6): the device and the reference driver take turns, and the host moves the
target. Each turn checks the notifications and the pages the device gave back; other areas add their
checks through the ``_after_*`` hooks."""

from __future__ import annotations

from hypothesis import strategies as st

from refmodel.balloon.proposals.bits import Proposal
from refmodel.balloon.proposals.common import ProposalDriver
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.features import Feature

from conformance.checks import PACKED_RING_DEVICE_CHECKS, RING_DEVICE_CHECKS
from conformance.machines.base import CYCLES, note, step
from conformance.machines.device.canary import LAYOUTS, canary
from conformance.machines.device.notifications import DeviceNotifications
from conformance.machines.device.pages import DevicePages


#: The requirement a PFN array's layout tests, by (packed ring, layout).
LAYOUT_REQS = {False: dict(zip(LAYOUTS[1:], ("SPLIT-DEV-1", "SPLIT-DEV-7", "SPLIT-DEV-6"))),
               True: dict(zip(LAYOUTS[1:], ("PACKED-DEV-8", "PACKED-DEV-D5", "PACKED-DEV-D6")))}


class DeviceOperation(DeviceNotifications, DevicePages):
    def _device_run(self) -> None:
        try:
            self.dev.run()
        except PeerSpecViolation as e:
            if e.role == "driver":  # the suite's driver sent nothing malformed: did the device misread it?
                self._check_readable(e)
            raise
        self._collect_interrupts()
        self._after_device_run()

    def _check_readable(self, blame: PeerSpecViolation) -> None:
        """The device blamed the reference driver; if a buffer the driver wrote for it to read changed (a PFN
        array, a command ID), the device wrote a device-readable buffer (SPLIT-DEV-3) and misread it."""
        for addr, data in self.drv.readable.items():
            self.R.check("SPLIT-DEV-3", self.os.mem.read(addr, len(data)) == data,
                         f"the device wrote the device-readable buffer at {addr:#x}, then raised "
                         f"{blame.req_id} against the driver: {blame.detail}")

    def _after_device_run(self) -> None:
        """Hook: the device just ran and its interrupts were delivered."""

    def _driver_run(self) -> None:
        for req in PACKED_RING_DEVICE_CHECKS if self.packed else RING_DEVICE_CHECKS:
            self.R.saw(req)
        held = self._held_pages()
        self.drv.run()
        self._given_back(held)
        self._judge_layouts()
        self._after_driver_run()

    def _judge_layouts(self) -> None:
        """Inflates acked whose PFN array was split or indirect: a device that discarded some of the array's
        (canaried) pages but left others as the driver wrote them did not read the array whole. One that
        discarded none shows nothing (it need not discard)."""
        for layout, pfns in self.drv.laid_out:
            kept = [p for p in pfns if self.os.mem.read(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) == canary(p)]
            if len(kept) < len(pfns):
                self.R.check(LAYOUT_REQS[self.packed][layout], not kept,
                             f"inflateq, a PFN array of {len(pfns)} ({layout}): the device discarded pages "
                             f"{sorted(set(pfns) - set(kept))} but not {kept}: it did not read the array whole")
        self.drv.laid_out.clear()

    def _after_driver_run(self) -> None:
        """Hook: the reference driver just ran."""

    def _cycles(self, n: int) -> None:
        for _ in range(n):
            self._device_run()
            self._driver_run()

    @step(rounds=st.integers(1, 3))
    def cycle(self, rounds: int) -> None:
        """The device does its work, interrupts reach the driver, the driver does its work."""
        self._cycles(rounds)
        note(f"cycle x{rounds}: balloon {len(self.drv.balloon)} pages, hinted {self.os.pages.hinted.bit_count()}")

    @step(num_pages=st.integers(0, 40), cycles=CYCLES)
    def set_target(self, num_pages: int, cycles: int) -> None:
        self._config_op("set_target", num_pages)
        self._cycles(cycles)
        note(f"host sets num_pages = {num_pages}, then {cycles} cycle(s)")

    def _plain_pfn_arrays(self) -> bool:
        """The driver sends 1.4 PFN arrays: no proposal profile (a bitmap, a combined queue, a claim
        on inflate) is negotiated, since the layouts below write those arrays as they are."""
        return not (isinstance(self.drv, ProposalDriver) and any(self.drv.proposal_has(p) for p in Proposal))

    @step(needs=_plain_pfn_arrays, layout=st.sampled_from(LAYOUTS[1:]), count=st.integers(2, 8))
    def inflate_laid_out(self, layout: str, count: int) -> None:
        """An inflate whose PFN array is split over descriptors or sent in an indirect table (re-probing
        for VIRTIO_F_INDIRECT_DESC first, as far as the device offers it), then two cycles."""
        if layout.startswith("indirect"):
            self._want_feature(Feature.VIRTIO_F_INDIRECT_DESC, True)
        self.drv.layout = layout
        self._config_op("set_target", len(self.drv.balloon) + self.drv.inflating + count)
        self._cycles(2)
        self.drv.layout = "direct"
        note(f"host asks for {count} more pages; the driver sends the PFN array {layout}; 2 cycles")
