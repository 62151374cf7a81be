"""Malformed driver input on an asynchronous device (QEMU's iothread): DEVICE_NEEDS_RESET may show only at
the last look for the input, and the configuration change notification that follows it a look later; a
device may set the status and return the buffer between two of our reads. Neither is a failure of the
device, and the verdict must not depend on where those moments fall among our looks."""

from __future__ import annotations

from typing import cast

import pytest

from conformance.checks import Recorder
from conformance.machines.device import DeviceConformance
from conformance.machines.device.notifications import OWED_LOOKS
from refmodel.balloon.device import NEEDS_RESET_FIELD, BalloonDevice
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.constants import DeviceStatus
from refmodel.virtio.transport import Interrupts

PFN_OUTSIDE, LOOP = 5, 8  # inflateq: a PFN outside guest memory, a descriptor loop


class Quiet(BalloonDevice):
    """Reports nothing to the driver (no PeerSpecViolation out of run), as QEMU does not, and once it
    asked for a reset waits for it."""

    def run(self) -> None:
        if self._error is not None:
            return
        try:
            super().run()
        except PeerSpecViolation:
            pass


class LateNeedsReset(Quiet):
    """DEVICE_NEEDS_RESET shows only from the status read of the last look for the input, and its
    configuration change notification comes with the next collection: the status first, then the
    notification, as the spec asks, only late (a device at work in a thread of its own)."""

    hidden = 0  # status reads that still hide DEVICE_NEEDS_RESET
    shown = held = False  # the status has shown; the notification is held until then

    def notify_config_change(self, field: str) -> None:
        if field != NEEDS_RESET_FIELD:
            super().notify_config_change(field)
            return
        self.hidden, self.held = OWED_LOOKS - 1, True

    def read_status(self) -> int:
        status = super().read_status()
        if status & DeviceStatus.DEVICE_NEEDS_RESET:
            if self.hidden:
                self.hidden -= 1
                return status & ~DeviceStatus.DEVICE_NEEDS_RESET
            self.shown = True
        return status

    def take_interrupts(self) -> Interrupts:
        irq = super().take_interrupts()
        if self.held and self.shown:
            self.held = False
            return Interrupts(irq.queues, True)
        return irq

    def write_status(self, value: int) -> None:
        if value == 0:
            self.hidden, self.shown, self.held = 0, False, False
        super().write_status(value)


class ReturnsOnStatusRead(Quiet):
    """Asks for a reset on an inflate PFN outside memory and returns the buffer, doing both while a status
    read is under way, which still shows the old status (QEMU's iothread calls virtio_error, then
    virtqueue_push, while we read)."""

    armed = False  # deferred to the next status read from here on

    def run(self) -> None:
        if not self.armed:
            super().run()

    def on_inflateq(self, chain):
        try:
            return super().on_inflateq(chain)
        except PeerSpecViolation as e:
            self._enter_needs_reset(e)
            return 0

    def read_status(self) -> int:
        status = super().read_status()
        if self.armed:
            type(self).armed = False
            Quiet.run(self)  # the reset asked for and the buffer back, just after the status was read
        return status


def machine(factory: type) -> DeviceConformance:
    cls = cast("type[DeviceConformance]", type(f"{factory.__name__}Conformance", (DeviceConformance,),
                                                 {"factory": staticmethod(factory)}))
    cls.recorder = Recorder()
    m = cls()
    m.boot(drop=frozenset(), queue_size=8)
    return m


@pytest.mark.verifies("STATUS-DEV-3")
def test_a_notification_that_follows_a_late_status_passes():
    m = machine(LateNeedsReset)
    m.malformed_input(LOOP)
    seen = m.R.observations["malformed inflateq: descriptor loop"]
    assert seen == {"set DEVICE_NEEDS_RESET", "sent a configuration change notification"}, seen
    assert "STATUS-DEV-3" in m.R.exercised


@pytest.mark.verifies("STATUS-DEV-2", "STATUS-DEV-3")
def test_a_buffer_returned_after_the_status_was_read_is_judged_with_the_status(monkeypatch):
    m = machine(ReturnsOnStatusRead)
    monkeypatch.setattr(ReturnsOnStatusRead, "armed", True)
    m.malformed_input(PFN_OUTSIDE)
    seen = m.R.observations["malformed inflateq: PFN outside guest memory"]
    assert seen == {"set DEVICE_NEEDS_RESET", "sent a configuration change notification"}, seen
    assert "STATUS-DEV-3" in m.R.exercised
