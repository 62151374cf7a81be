"""bitmap-inflate-deflate in the machines. Device: the suite's driver sends only well-formed bitmaps, so a
device that rejects one, or deflates a page it says is not in its balloon, misread a set bit
(PROP-BMP-DEV-1); except once on purpose, a bitmap past guest memory (PROP-BMP-DRV-3), judged as the 1.4
malformed inputs are. Driver: the reference device parses every bitmap (PROP-BMP-DRV-1 to -3)."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.proposals import bitmap_inflate as bmp
from refmodel.balloon.proposals.bits import Proposal
from refmodel.errors import PeerSpecViolation

from conformance.machines.base import note, step
from conformance.machines.device.malformed import Malformed

P = Proposal.BITMAP_INFLATE_DEFLATE
DEVICE_CHECKS = {"PROP-BMP-DEV-1": "cycle (bitmap): the suite's well-formed bitmaps are taken"}
DRIVER_CHECKS = {r: "reference device (bitmap): bitmap parser" for r in ("PROP-BMP-DRV-1", "PROP-BMP-DRV-2",
                                                                        "PROP-BMP-DRV-3")}
#: What a device may blame on a balloon buffer: with bitmaps, each says it misread one.
_BALLOON_RULES = ("PROP-BMP-DRV-", "BAL-OP-")
#: The malformed bitmap the suite's driver sends on purpose: judged as the 1.4 malformed inputs are.
PAST_MEMORY = Malformed("inflateq", "bitmap past guest memory", "PROP-BMP-DRV-3", "bitmap_past_memory")


class DeviceMixin:
    def _device_run(self: Any) -> None:
        bitmaps = self.proposal_has(P)
        try:
            super()._device_run()  # type: ignore[misc]
        except PeerSpecViolation as e:
            if bitmaps and e.role == "driver" and e.req_id.startswith(_BALLOON_RULES):
                raise PeerSpecViolation("PROP-BMP-DEV-1", f"the device rejected one of the suite's well-formed "
                                        f"bitmaps, blaming {e.req_id}: {e.detail}") from e
            raise
        if bitmaps and (self.drv.balloon or self.drv.released):
            self.R.saw("PROP-BMP-DEV-1")

    @step(needs=lambda self: self.proposal_has(P) and "inflateq" in self.drv.vqs)
    def bitmap_past_memory(self: Any) -> None:
        """The suite's driver sends one bitmap whose nbits runs 64 bits past guest memory (PROP-BMP-DRV-3),
        its only set bit the page that holds it; what the device does is judged as for the 1.4 malformed
        inputs (STATUS-DEV-2, STATUS-DEV-3, the observation), then the driver resets and probes again."""
        self.scratch: list[int] = []
        scratch = self._scratch_page()
        head = None
        if scratch is not None:
            page, n = scratch // BALLOON_PAGE_SIZE, self.os.mem.end // BALLOON_PAGE_SIZE
            base = page & ~63
            data = bmp.encode(base, n - base + 64, 1 << (page - base))
            self.os.mem.write(scratch + BALLOON_PAGE_SIZE // 2, data)
            head = self._add("inflateq", readable=[(scratch + BALLOON_PAGE_SIZE // 2, len(data))])
        if head is None:
            note(f"{PAST_MEMORY.topic}: no room for it (no free page, or the ring is full)")
        else:
            note(f"driver puts a bitmap on inflateq from PFN {base} over {n - base + 64} bits, past the {n} "
                 f"pages of guest memory (PROP-BMP-DRV-3), head {head}")
            before = self._used_idx("inflateq")
            self._react(PAST_MEMORY, head, before, self._publish("inflateq"))
            self.workload_pages_intact()  # before the reset forgets which pages the device gave back
        self._reprobe()
        for p in self.scratch:
            self.os.free_page(p)
        note("driver resets the device and probes again")


class DriverMixin:
    def _exercised(self: Any) -> None:
        super()._exercised()  # type: ignore[misc]
        if self.proposal_has(P) and (self.ref.ballooned or self.balloon_moved):
            for req in DRIVER_CHECKS:
                self.R.saw(req)
