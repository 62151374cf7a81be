"""Device reset (§2.4): status reads 0, the device stays silent, and it accepts the same features again."""

from __future__ import annotations

from refmodel.virtio.features import names_of

from conformance.machines.base import note, step
from conformance.machines.device.boot import DeviceBoot


class DeviceReset(DeviceBoot):
    @step()
    def reset_and_reprobe(self) -> None:
        self.dev.write_status(0)
        status = self.dev.read_status()
        self.R.check("RESET-DEV-1", status == 0, f"status reads {status:#x} after writing 0")
        # Snapshot only now: work the device finished before the reset completed is legal.
        before = {n: self._used_idx(n) for n in self.drv.vqs}
        self.dev.run()
        irq = self.dev.take_interrupts()
        after = {n: self._used_idx(n) for n in self.drv.vqs}
        self.R.check("RESET-DEV-2", after == before and not irq,
                     f"after reset: used idx {before} -> {after}, interrupts {irq}")
        self.drv.remove()
        features = self.features
        self._probe()
        self.R.check("FEAT-DEV-4", self.features == features,
                     f"accepted {names_of(features)} before the reset, {names_of(self.features)} after")
        note("driver resets the device and probes again with the same features")
