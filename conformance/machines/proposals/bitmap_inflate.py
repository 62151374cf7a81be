"""bitmap-inflate-deflate in the machines. Device: the suite's driver sends only well-formed bitmaps, so a
device that rejects one, or deflates a page it says is not in its balloon, misread a set bit
(PROP-BMP-DEV-1). Driver: the reference device parses every bitmap (PROP-BMP-DRV-1 to -3)."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.proposals.bits import Proposal
from refmodel.errors import PeerSpecViolation

P = Proposal.BITMAP_INFLATE_DEFLATE
DEVICE_CHECKS = {"PROP-BMP-DEV-1": "cycle (bitmap): the suite's well-formed bitmaps are taken"}
DRIVER_CHECKS = {r: "reference device (bitmap): bitmap parser" for r in ("PROP-BMP-DRV-1", "PROP-BMP-DRV-2",
                                                                        "PROP-BMP-DRV-3")}
#: What a device may blame on a balloon buffer: with bitmaps, each says it misread one.
_BALLOON_RULES = ("PROP-BMP-DRV-", "BAL-OP-")


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


class DriverMixin:
    def _exercised(self: Any) -> None:
        super()._exercised()  # type: ignore[misc]
        if self.proposal_has(P) and (self.ref.ballooned or self.balloon_moved):
            for req in DRIVER_CHECKS:
                self.R.saw(req)
