"""A driver under test, hosted on the reference device and compared with the model.

The reference device is the strictest peer the spec allows: every driver mistake it can see raises
the driver's requirement (status, features, config, rings, PFN arrays, stats, hinting, reporting),
and it changes page contents at the latest moment the spec permits, so a driver that hands a page
back too early shows up as a corrupted workload page, attributed to the rule it broke.

The driver is reached through :class:`conformance.interface.DriverUnderTest`. The machine is put together
from one mixin per requirement area, each in its own module: boot and negotiation, operation (the turns
and the kicks), settling, hinting, stats, reporting and memory pressure, the guest's pages (with their
history), a reset mid-operation, and the fragile moments as single rules; :mod:`.device` is the
reference device as the machine watches it.
"""

from __future__ import annotations

from conformance.machines.base import CYCLES, OPTIONAL
from conformance.machines.driver.boot import DRIVER_NEGOTIATION, N_PAGES, UNDEFINED_BIT, DriverBoot
from conformance.machines.driver.hinting import DriverHinting
from conformance.machines.driver.moments import DriverMoments
from conformance.machines.driver.pages import DriverPages
from conformance.machines.driver.reporting import DriverReportingAndOom
from conformance.machines.driver.reset import DriverReset
from conformance.machines.driver.settle import SETTLE_CYCLES, DriverSettle
from conformance.machines.driver.stats import DriverStats

__all__ = ["CYCLES", "DRIVER_NEGOTIATION", "DriverConformance", "N_PAGES", "OPTIONAL", "SETTLE_CYCLES",
           "UNDEFINED_BIT"]


class DriverConformance(DriverReset, DriverMoments, DriverHinting, DriverStats, DriverSettle,
                        DriverReportingAndOom, DriverPages, DriverBoot):
    """Subclass with ``factory = staticmethod(lambda: driver)``; see :mod:`conformance.registry`."""
