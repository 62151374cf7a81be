"""device-init-reported in the machines. Device: the suite's driver reads each returned report's used
length, 0 or the whole length, and checks a whole-length claim against the pages (PROP-DIR-DEV-1). The
driver's rule (PROP-DIR-DRV-1) is a MAY inside the guest: not checkable."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.proposals.bits import Proposal

P = Proposal.DEVICE_INIT_REPORTED
DEVICE_CHECKS = {"PROP-DIR-DEV-1": "reference driver (device-init-reported): report used lengths"}
DRIVER_CHECKS: dict[str, str] = {}


class DeviceMixin:
    def _after_driver_run(self: Any) -> None:
        super()._after_driver_run()  # type: ignore[misc]
        if self.proposal_has(P) and self.drv.reports_checked:
            self.R.saw("PROP-DIR-DEV-1")


class DriverMixin:
    pass
