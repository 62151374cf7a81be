"""device-init-on-inflate in the machines. Device: the suite's driver checks each bit the device sets
against the page (PROP-DII-DEV-1). Driver: the reference device takes each inflate chain's bitmap
(PROP-DII-DRV-1)."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.proposals.bits import Proposal

P = Proposal.DEVICE_INIT_ON_INFLATE
DEVICE_CHECKS = {"PROP-DII-DEV-1": "reference driver (device-init-on-inflate): each claimed page read back"}
DRIVER_CHECKS = {"PROP-DII-DRV-1": "reference device (device-init-on-inflate): inflate bitmap length"}


class DeviceMixin:
    def _after_driver_run(self: Any) -> None:
        super()._after_driver_run()  # type: ignore[misc]
        if self.proposal_has(P) and self.drv.claims_checked:
            self.R.saw("PROP-DII-DEV-1")


class DriverMixin:
    def _exercised(self: Any) -> None:
        super()._exercised()  # type: ignore[misc]
        if self.proposal_has(P) and (self.ref.ballooned or self.balloon_moved):
            self.R.saw("PROP-DII-DRV-1")
