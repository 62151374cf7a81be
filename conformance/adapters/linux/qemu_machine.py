"""The Linux driver machine on the QEMU-guest route: the UML route's machine, with device status carried.

QEMU's trace gives the reference device every status the guest wrote, in order with its config writes and
its notifications before DRIVER_OK (:mod:`.qemu_backend`), so the status lifecycle is judged here. What
this route still hides is listed with its reason.
"""

from __future__ import annotations

from typing import Any

from refmodel.errors import PeerSpecViolation
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.layout import DESC_FLAGS, PVIRTQ_DESC_SIZE

from conformance.machines.base import note
from conformance.machines.driver.device import WatchedDevice
from conformance.adapters.linux.machine import UNOBSERVABLE as UML_UNOBSERVABLE, LinuxDriverConformance

_READS = ("QEMU answers the guest's status reads itself and traces only writes, so whether the driver re-read "
          "status cannot be seen")
_NO_REFUSAL = ("QEMU keeps the virtio-pci status register and accepts every FEATURES_OK, so the reference device "
               "cannot refuse one and the driver's way back from FAILED is never exercised")
#: Requirements the QEMU-guest route hides from the reference device, and why (verdict: not-checkable).
UNOBSERVABLE = {
    "RESET-DRV-1": _READS,
    "INIT-DRV-4": _READS,
    "STATUS-DRV-3": _NO_REFUSAL,
    "INIT-DRV-6": _NO_REFUSAL,
    **{k: UML_UNOBSERVABLE[k] for k in ("BAL-PP-DRV-1", "BAL-FPH-DRV-9")},
}
#: What the UML route cannot check and this one does.
CHECKED_HERE = tuple(sorted(set(UML_UNOBSERVABLE) - set(UNOBSERVABLE)))


class LateRingDevice(WatchedDevice):
    """The reference device as QEMU's vhost-user-test-device shows it: QEMU hands the backend the rings at
    DRIVER_OK, after the driver may have made buffers available (Linux's statsq buffer, see INIT-DRV-5), so
    PACKED-DRV-D12 (a zeroed ring at enable) is judged on the descriptors after the lists available by then."""

    def _check_zeroed(self, index: int, size: int, addrs: Any) -> None:
        if not isinstance(size, int) or not 0 < size <= 32768 or not self.mem.contains(addrs.desc, size * 16):
            return  # enable_queue names it
        # Where the lists made available in the first lap end, read as the device will (the model's walk).
        walker = PackedQueueDevice(self.mem, addrs, size, indirect_desc=True)
        pos = 0
        try:
            while pos < size and (got := walker.walk_untrusted(pos)) is not None:
                pos += got[1]
        except PeerSpecViolation:
            pass  # the device's pop names it
        for i in range(pos, size):
            flags = self.mem.read_u16(addrs.desc + PVIRTQ_DESC_SIZE * i + DESC_FLAGS)
            if flags:
                raise PeerSpecViolation("PACKED-DRV-D12", f"queue {index}: descriptor {i} has flags {flags:#06x} "
                                        f"when the rings reached the device ({pos} made available before): the "
                                        "ring is not zeroed")


class LinuxQemuDriverConformance(LinuxDriverConformance):
    """Subclass with ``factory`` returning a :class:`~conformance.adapters.linux.qemu_route.QemuLinuxDriver`."""

    unobservable = UNOBSERVABLE
    watch_status = True
    route_device = LateRingDevice
    #: A TCG guest at nice 10 on a loaded host can stall for over a second while it frees hinted pages (a ci
    #: run on 6.12 judged 10,082 pages short after 3.2 s, and not when replayed): wait longer before judging.
    release_wait, release_still = 8.0, 4.0
    #: QEMU's frontend acks VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS (it acks every protocol bit it knows,
    #: VHOST_USER_PROTOCOL_FEATURE_MASK) but has no handler for VHOST_USER_BACKEND_VRING_CALL, so a backend
    #: that signals in band loses every used buffer notification: the backend never offers it here.
    inband_notifications = False

    def _route_checks(self) -> None:
        """INIT-DRV-5 from the trace: a notification before DRIVER_OK is recorded by the backend, not given to
        the device (which would end the example), so with the requirement a known deviation the example goes on."""
        backend = self.linux.backend
        early = list(backend.early_notifies)
        names = dict(getattr(self.ref, "name_of", {}) or {})
        self.R.check("INIT-DRV-5", not early, "; ".join(
            f"notification of queue {i} ({names.get(i, '?')}) with device status {st:#04x}, before DRIVER_OK "
            "(QEMU's trace: virtio_queue_notify before virtio_set_status val 15)" for i, st in early))
        if backend.statuses:
            note(f"statuses the guest wrote (QEMU's trace): {backend.statuses[-6:]}")
