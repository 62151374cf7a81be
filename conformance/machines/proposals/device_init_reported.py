"""device-init-reported in the machines. Device: the suite's driver reads each returned report's used
length, 0 or the whole length, and checks a whole-length claim against the pages (PROP-DIR-DEV-1). The
driver's rule (PROP-DIR-DRV-1) is a MAY inside the guest: not checkable. Driver: with the bit negotiated,
BAL-FB-DRV-3 is judged as #244 extends it: a guest that relies on free pages keeping their value may report
them without PAGE_POISON."""

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
    def _reports_keep_free_pages(self: Any, accepted: int) -> bool:
        return super()._reports_keep_free_pages(accepted) or self.proposal_has(P)  # type: ignore[misc]
