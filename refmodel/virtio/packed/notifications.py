"""Notifications on a packed virtqueue (§2.8.10, §2.9), one mixin per side: which notifications are due
against the other side's event suppression structure, the side's own structure, and notification data.
Mixed into :class:`~refmodel.virtio.packed.driver.PackedQueueDriver` and
:class:`~refmodel.virtio.packed.device.PackedQueueDevice`, whose state they read (positions, memory,
addresses)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from refmodel.errors import PeerSpecViolation, guarded
from refmodel.virtio.packed.events import EventSuppress, pack_notification, unpack_notification
from refmodel.virtio.packed.layout import EVENT_SUPPRESS_SIZE, wrap_of

if TYPE_CHECKING:
    from refmodel.virtio.memory import GuestMemory
    from refmodel.virtio.virtq import QueueAddresses


class _Queue:
    """What the mixins read of the queue they are mixed into."""

    mem: GuestMemory
    addrs: QueueAddresses
    queue_size: int
    event_idx: bool


class DriverNotifications(_Queue):
    """The driver's side: available buffer notifications (PACKED-DRV-D10/D11), its used buffer
    notification suppression (PACKED-DRV-D8), notification data (PACKED-DRV-4)."""

    _last_kick: int
    _published: int
    _used: int
    _driver_event: bytes

    def _device_event_untrusted(self) -> EventSuppress:
        ev = EventSuppress.read(self.mem, self.addrs.used)
        if why := ev.problem(self.event_idx, self.queue_size):
            raise PeerSpecViolation("PACKED-DEV-D8", f"device area: {why}")
        return ev

    @guarded
    def notify_needed(self) -> bool:
        """Whether the driver must notify now for what it published since its last notification
        (PACKED-DRV-D10 / PACKED-DRV-D11)."""
        old, new = self._last_kick, self._published
        if old == new:
            return False
        need = self._device_event_untrusted().due(old, new, self.queue_size)
        if need:
            self._last_kick = new
        return need

    def kicked(self) -> None:
        """Record that the driver notified the device (resets the notification window)."""
        self._last_kick = self._published

    def notification_data(self, vqn: int) -> int:
        """The le32 a notification carries with VIRTIO_F_NOTIFICATION_DATA (§2.9, PACKED-DRV-4)."""
        pos, qs = self._published, self.queue_size
        return pack_notification(vqn, pos % qs, wrap_of(pos, qs))

    @guarded
    def set_used_notifications(self, enabled: bool) -> None:
        """Ask for (or advise against) used buffer notifications in the driver area (PACKED-DRV-D8).

        With VIRTIO_F_EVENT_IDX, enabling asks for a notification when the descriptor at the position
        of the next used descriptor is used (RING_EVENT_FLAGS_DESC); otherwise ENABLE.
        """
        if not enabled:
            ev = EventSuppress.disable()
        elif self.event_idx:
            ev = EventSuppress.at(self._used, self.queue_size)
        else:
            ev = EventSuppress.enable()
        ev.write(self.mem, self.addrs.avail)
        self._driver_event = self.mem.read(self.addrs.avail, EVENT_SUPPRESS_SIZE)


class DeviceNotifications(_Queue):
    """The device's side: used buffer notifications (PACKED-DEV-D10/D11), its available buffer
    notification suppression, the driver's notification data (PACKED-DRV-4, PACKED-DRV-D14)."""

    _last_signalled: int
    _used: int
    _avail: int
    _device_event: bytes

    if TYPE_CHECKING:
        def walk_untrusted(self, pos: int) -> Any: ...

    @guarded
    def notify_needed(self) -> bool:
        """Whether a used buffer notification is due for what was used since the last decision."""
        old, new = self._last_signalled, self._used
        if old == new:
            return False
        ev = EventSuppress.read(self.mem, self.addrs.avail)
        if why := ev.problem(self.event_idx, self.queue_size):
            raise PeerSpecViolation("PACKED-DRV-D8", f"driver area: {why}")
        self._last_signalled = new  # judged once, as split's notify_needed does
        return ev.due(old, new, self.queue_size)  # PACKED-DEV-D10 / PACKED-DEV-D11

    def signalled(self) -> None:
        """Record a used buffer notification sent for another reason."""
        self._last_signalled = self._used

    @guarded
    def set_avail_notifications(self, enabled: bool) -> None:
        """Ask for (or advise against) available buffer notifications in the device area.

        With VIRTIO_F_EVENT_IDX, enabling asks for a notification when the descriptor at the position
        we poll next is made available (RING_EVENT_FLAGS_DESC); otherwise ENABLE. Disabling is DISABLE.
        """
        if not enabled:
            ev = EventSuppress.disable()
        elif self.event_idx:
            ev = EventSuppress.at(self._avail, self.queue_size)
        else:
            ev = EventSuppress.enable()
        ev.write(self.mem, self.addrs.used)
        self._device_event = self.mem.read(self.addrs.used, EVENT_SUPPRESS_SIZE)

    @guarded
    def check_notification_data(self, data: int, vqn: int) -> None:
        """An available buffer notification with VIRTIO_F_NOTIFICATION_DATA (§2.9): ``vqn`` and the
        next descriptor not yet made available (PACKED-DRV-4, PACKED-DRV-D14). Walks (and checks) the
        lists available now to find where the driver's next descriptor goes."""
        got_vqn, off, wrap = unpack_notification(data)
        if got_vqn != vqn:
            raise PeerSpecViolation("PACKED-DRV-D14", f"notification data names queue {got_vqn}, sent "
                                    f"for {vqn}")
        pos = self._avail
        while (got := self.walk_untrusted(pos)) is not None:
            pos += got[1]
        want = (pos % self.queue_size, wrap_of(pos, self.queue_size))
        if (off, wrap) != want:
            raise PeerSpecViolation("PACKED-DRV-4", f"next_off {off} next_wrap {wrap}; the next descriptor "
                                    f"not yet available is offset {want[0]} wrap {want[1]}")
