"""Device operation (§5.5.6): the device and the reference driver take turns, and the host moves the
target. Each turn checks the notifications and the pages the device gave back; other areas add their
checks through the ``_after_*`` hooks."""

from __future__ import annotations

from hypothesis import strategies as st

from conformance.checks import RING_DEVICE_CHECKS
from conformance.machines.base import CYCLES, note, step
from conformance.machines.device.notifications import DeviceNotifications
from conformance.machines.device.pages import DevicePages


class DeviceOperation(DeviceNotifications, DevicePages):
    def _device_run(self) -> None:
        self.dev.run()
        self._collect_interrupts()
        self._after_device_run()

    def _after_device_run(self) -> None:
        """Hook: the device just ran and its interrupts were delivered."""

    def _driver_run(self) -> None:
        for req in RING_DEVICE_CHECKS:
            self.R.saw(req)
        held = self._held_pages()
        self.drv.run()
        self._given_back(held)
        self._after_driver_run()

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
