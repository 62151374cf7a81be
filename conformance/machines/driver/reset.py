"""A reset while the driver runs (§2.4, §3.1.1): the guest unbinds the driver and binds it again (a driver
with ``remove()``; the reference's lets go of every page and buffer), and the new probe starts with a reset,
after which the device has forgotten the balloon, the hinting round and every buffer. A driver that carries
anything across it (a command ID it already served, balloon pages, buffers in flight) shows in what follows.
A driver without ``remove()`` is not re-probed: the interface promises nothing about a second probe."""

from __future__ import annotations

from hypothesis import strategies as st

from conformance.harness import ImplementationError
from conformance.machines.base import CYCLES, note, step
from conformance.machines.driver.boot import DriverBoot
from conformance.machines.driver.hinting import DriverHinting


class DriverReset(DriverHinting, DriverBoot):
    #: Whether the guest can unbind and bind the driver (a real guest's driver is bound once).
    reprobes = True
    removable = False  # the driver has remove(): set at boot

    def _rebindable(self) -> bool:
        return self.reprobes and self.removable

    def _reprobe(self) -> None:
        self.unbinding = True  # what the driver lets go of now goes with the device, not back from it
        try:
            self._driver(self.drv.remove)
        finally:
            self.unbinding = False
        ok = self._driver(self.drv.probe, self.ref, self.os)
        self._device_forgot()
        self._check_negotiation(self.ref.offered, ok)
        if not ok:
            raise ImplementationError("driver.probe", "gave up on the device after a reset, though the "
                                      "device accepted its features")

    @step(when=_rebindable, cycles=CYCLES)
    def reprobe(self, cycles: int) -> None:
        self._reprobe()
        for _ in range(cycles):
            self._cycle()
        note(f"the guest unbinds the driver and binds it again: it resets the device; {cycles} cycle(s)")

    @step(needs=lambda self: self._rebindable() and self._hinting(), lead=st.integers(0, 2), cycles=CYCLES)
    def reset_mid_round(self, lead: int, cycles: int) -> None:
        """A round runs, the device is reset under it, and the new device starts a round of its own: its first
        command ID is the one the driver served before the reset."""
        self._host("hint_start")
        for _ in range(lead):
            self._cycle()
        self._reprobe()
        self._host("hint_start", cycles=cycles)
        note(f"a round, {lead} cycle(s), a reset (probe again), then a new round and {cycles} cycle(s)")
