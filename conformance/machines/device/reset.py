"""Device reset (§2.4): status reads 0, the device stays silent, and it accepts the same features again.
Other areas reset too: after a malformed input, or to re-probe with a feature on or off."""

from __future__ import annotations

from refmodel.virtio.features import Feature, has, names_of

from conformance.machines.base import note, step
from conformance.machines.device.boot import DeviceBoot
from conformance.machines.device.notifications import OWED_LOOKS


class DeviceReset(DeviceBoot):
    def _reset_device(self) -> None:
        """The driver resets the device: status reads 0 and the device stays silent; the driver goes."""
        self.dev.write_status(0)
        status = self.dev.read_status()
        self.R.check("RESET-DEV-1", status == 0, f"status reads {status:#x} after writing 0")
        # Snapshot only now: work the device finished before the reset completed is legal. An asynchronous
        # device's late notification comes with a later look (QEMU's free-page iothread can notify after
        # a reset that landed mid-round).
        before = {n: self._used_idx(n) for n in self.drv.vqs}
        for look in range(OWED_LOOKS):
            self.dev.run()
            irq = self.dev.take_interrupts()
            after = {n: self._used_idx(n) for n in self.drv.vqs}
            self.R.check("RESET-DEV-2", after == before and not irq,
                         f"after reset (look {look + 1}): used idx {before} -> {after}, interrupts {irq}")
        self.drv.remove()

    def _reprobe(self, drop: frozenset[Feature] | None = None) -> None:
        """Reset, then a fresh driver probes (declining ``drop`` instead, if given)."""
        self._reset_device()
        if drop is not None:
            self.drop = drop
        self._probe()

    def _want_feature(self, feature: Feature, on: bool) -> None:
        if self.has(feature) == on or on and not has(self.offered, feature):
            return
        self._reprobe(self.drop - {feature} if on else self.drop | {feature})
        note(f"driver resets the device and probes again {'with' if on else 'without'} {feature.name}")

    @step()
    def reset_and_reprobe(self) -> None:
        features = self.features
        self._reprobe()
        self.R.check("FEAT-DEV-4", self.features == features,
                     f"accepted {names_of(features)} before the reset, {names_of(self.features)} after")
        note("driver resets the device and probes again with the same features")
