"""The guest's workload pages (BAL-OP-DRV-7/9, BAL-FPR-DRV-3): a page the device changed under the
workload is blamed on the rule the driver broke by handing it over; any other change is an error."""

from __future__ import annotations

from conformance.harness import ImplementationError
from conformance.machines.base import live_invariant
from conformance.machines.driver.base import DriverMachine


class DriverPages(DriverMachine):
    @live_invariant()
    def workload_pages_intact(self) -> None:
        for p in self.os.corrupted():
            for touch in reversed(self.ref.touched):
                if touch.pages >> p & 1:
                    self.R.check(touch.req_id, False, f"workload page {p}: {touch.why}")
            raise ImplementationError("driver", f"workload page {p} changed, and not by the device")
        for req in {t.req_id for t in self.ref.touched}:
            self.R.saw(req)
