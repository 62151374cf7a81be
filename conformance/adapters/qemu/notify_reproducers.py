"""Standalone reproducers for what the suite found in QEMU's used buffer notifications, once it could tell
them apart per queue (MSI-X vectors; on 7.2, the ISR with only one queue in use).
``python -m conformance.adapters.qemu.notify_reproducers NAME [--qemu-binary PATH]`` runs one; the exit
status is 1 when QEMU diverges from the model. The docstrings name the QEMU code involved.
"""

from __future__ import annotations

import sys

from refmodel.balloon.driver import SUPPORTED, BalloonDriver
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.features import Feature

from conformance.adapters.qemu.device import QemuFactory
from conformance.adapters.qemu.reproducers import Reproduction, reproducer_main

F = Feature
#: Only inflateq and deflateq: no statsq, hinting or reporting buffer can be used meanwhile.
FEATURES = SUPPORTED & ~sum(f.mask for f in (F.VIRTIO_BALLOON_F_STATS_VQ, F.VIRTIO_BALLOON_F_FREE_PAGE_HINT,
                                               F.VIRTIO_BALLOON_F_PAGE_REPORTING, F.VIRTIO_F_RING_PACKED))


def first_use_notified(binary: str | None = None, uses: int = 3) -> Reproduction:
    """SPLIT-DEV-13: with EVENT_IDX, the driver sets inflateq's used_event half the index space away
    (no notification wanted) before the queue's first use, then inflates one page at a time.

    The model: used_event is never crossed, so the device does not notify (§2.7.10, SHOULD NOT). QEMU:
    ``virtio_split_should_notify`` (hw/virtio/virtio.c) returns true while ``signalled_used_valid`` is
    false, which it is from queue reset until the first notification, so the queue's first used buffer
    is always notified whatever used_event says; later ones follow used_event. vhost does the same
    (``vhost_notify``). Deliberate (a conservative first notification), and harmless to a driver.
    """
    factory = QemuFactory(binary)
    try:
        dev = factory()
        os_ = GuestOS.over(dev.mem, reserved=dev.reserved_pages)
        drv = BalloonDriver(features=FEATURES, queue_size=16, batch=1)
        if not drv.probe(dev, os_) or not drv.negotiated_has(F.VIRTIO_F_EVENT_IDX):
            return Reproduction("first-use-notified", "SPLIT-DEV-13", "", "QEMU refused VIRTIO_F_EVENT_IDX", True)
        vq, index = drv.vqs["inflateq"], drv.index_of["inflateq"]
        notified = []
        for n in range(1, uses + 1):
            vq.set_used_notifications(False)  # used_event = last used idx - 0x8000
            dev.set_target(n)
            dev.run()
            dev.take_interrupts()  # the config change's (QEMU's ISR reads 0x3 for one)
            drv.interrupt(frozenset(), config=True)
            drv.run()  # one PFN on inflateq, kicked
            dev.run()
            notified.append(index in dev.take_interrupts().queues)
            drv.run()  # reap it
        expected = f"no notification for any of {uses} inflates (used_event never crossed)"
        observed = ", ".join(f"use {i + 1}: {'notified' if got else 'silent'}" for i, got in enumerate(notified))
        return Reproduction("first-use-notified", "SPLIT-DEV-13", expected,
                            f"{observed} ({'MSI-X vector' if dev.msix is not None else 'ISR, inflateq alone'})",
                            any(notified))
    finally:
        factory.close()


REPRODUCERS = {"first-use-notified": first_use_notified}


def main(argv: list[str] | None = None) -> int:
    return reproducer_main(__doc__.splitlines()[0], REPRODUCERS, argv)


if __name__ == "__main__":
    sys.exit(main())
