"""Standalone reproducers for what the suite found in QEMU over packed rings (``packed=on``, --ring packed).
``python -m conformance.adapters.qemu.packed_reproducers NAME [--qemu-binary PATH]`` runs one; the exit
status is 1 when QEMU diverges from the model. The docstrings name the QEMU code involved.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.driver import BalloonDriver
from refmodel.errors import PeerSpecViolation
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.constants import DeviceStatus
from refmodel.virtio.packed.layout import PDESC_FMT, PVIRTQ_DESC_SIZE, wrap_of

from conformance.adapters.qemu.device import QemuFactory
from conformance.adapters.qemu.process import QemuError
from conformance.adapters.qemu.reproducers import Reproduction, reproducer_main

#: What a NEXT-ed descriptor carries in its id field here; §2.8.6 puts the Buffer ID in the list's last.
FIRST_ID = 0x5A5


def buffer_id_from_first(binary: str | None = None) -> Reproduction:
    """PACKED-DEV-D4: a two-descriptor report on reporting_vq whose Buffer ID is in its last descriptor (as
    §2.8.6 places it) and whose first descriptor's id field holds something else.

    The model: the used descriptor names the Buffer ID, read from the list's last descriptor. QEMU:
    ``virtqueue_packed_pop`` (hw/virtio/virtio.c) keeps ``id = desc.id`` of the *first* descriptor and
    returns that as ``elem->index``, so the used descriptor names whatever the first one held. Linux's
    driver writes the same ID into every descriptor of a list, which hides it.
    """
    factory = QemuFactory(binary).with_packed()
    try:
        dev = factory()
        os_ = GuestOS.over(dev.mem, reserved=dev.reserved_pages)
        drv = BalloonDriver(queue_size=8, report_pages=2)
        if not drv.probe(dev, os_) or "reporting_vq" not in drv.vqs:
            return Reproduction("buffer-id-from-first", "PACKED-DEV-D4", "", "QEMU refused packed rings or "
                                "PAGE_REPORTING", True)
        vq = drv.vqs["reporting_vq"]
        pages = [os_.alloc_page(), os_.alloc_page()]
        start = vq.next_avail
        buf_id = vq.add(writable=[(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) for p in pages])
        first = vq.addrs.desc + PVIRTQ_DESC_SIZE * (start % vq.queue_size)
        dev.mem.write_u16(first + 12, FIRST_ID)  # the first descriptor's id field, before it is available
        if vq.publish():
            dev.notify(drv.index_of["reporting_vq"])
        dev.run()
        _, length, used_id, flags = dev.mem.unpack(PDESC_FMT, first, 16)
        wrap = wrap_of(start, vq.queue_size)
        used = bool(flags & 0x8000) == wrap and bool(flags & 0x80) == wrap
        observed = (f"used descriptor at offset {start % vq.queue_size} names id {used_id:#x} (len {length})"
                    if used else f"the report was not used (flags {flags:#06x})")
        return Reproduction("buffer-id-from-first", "PACKED-DEV-D4",
                            f"the used descriptor names Buffer ID {buf_id:#x}, from the list's last descriptor",
                            observed, not used or used_id != buf_id)
    finally:
        factory.close()


def notify_on_wrap(binary: str | None = None) -> Reproduction:
    """PACKED-DEV-D11: with VIRTIO_F_EVENT_IDX, a used descriptor that does not reach the driver's event
    offset still gets a used buffer notification when it takes the used ring into its next lap.

    The model: notify only when the used position passes the driver's RING_EVENT_FLAGS_DESC offset and
    wrap (§2.8.10). QEMU: ``virtqueue_packed_flush`` (hw/virtio/virtio.c) clears
    ``signalled_used_valid`` whenever ``used_idx`` wraps, and ``virtio_packed_should_notify`` then
    notifies without reading the event: one needless notification per lap, deliberately conservative.
    A 2-entry inflateq: the first use passes the event (owed), the second wraps the ring and does not.
    """
    factory = QemuFactory(binary).with_packed()
    try:
        dev = factory()
        os_ = GuestOS.over(dev.mem, reserved=dev.reserved_pages)
        drv = BalloonDriver(queue_size=2)
        if not drv.probe(dev, os_) or not drv.vqs["inflateq"].event_idx:
            return Reproduction("notify-on-wrap", "PACKED-DEV-D11", "", "QEMU refused packed rings or EVENT_IDX",
                                True)
        vq, index = drv.vqs["inflateq"], drv.index_of["inflateq"]
        dev.take_interrupts()
        got = []
        for step in range(2):
            if step == 0:
                vq.set_used_notifications(True)  # RING_EVENT_FLAGS_DESC at offset 0, wrap 1: the next use
            buf, pfn = os_.alloc_page(), os_.alloc_page()
            dev.mem.write(buf * BALLOON_PAGE_SIZE, pfn.to_bytes(4, "little"))  # a PFN list of one page
            vq.add(readable=[(buf * BALLOON_PAGE_SIZE, 4)])
            if vq.publish():
                dev.notify(index)
            dev.run()
            got.append(index in dev.take_interrupts().queues)
            vq.harvest()
        return Reproduction("notify-on-wrap", "PACKED-DEV-D11",
                            "a notification for the use at offset 0 (the event), none for the use at offset 1 "
                            "that wraps the ring", f"notified: use at offset 0 {got[0]}, use at offset 1 {got[1]}",
                            got[1])
    finally:
        factory.close()


def reset_during_round_packed(binary: str | None = None, *, attempts: int = 200, queue_size: int = 8,
                              seed: int = 0) -> Reproduction:
    """The reset/iothread race of SPLIT-DEV-D3 (``reset-during-round``) over packed rings: reset the device
    while QEMU's iothread polls free_page_vq in a hinting round (``virtio_ballloon_get_free_page_hints``,
    without the BQL). Over split rings the queue's indices go wrong; over packed rings QEMU aborts:
    ``address_space_lduw_le_cached: Assertion `addr < cache->len && 2 <= cache->len - addr'`` (the iothread
    reads a 16-bit field through a region cache too short for it: most likely caches sized for the driver's
    queue, read with the size the reset restored, QEMU's own; not confirmed in QEMU's source). The suite met it
    on 10.0.2 and 11.1.3, each time at a status write of 0. A small queue
    (8, as the suite draws them) is what it takes: with 256 entries 200 attempts did not crash. Tries up to
    ``attempts`` times; on 11.1.3 it hits within ~20."""
    import random
    import time

    from conformance.adapters.qemu.device import RESERVED_PAGES
    from conformance.adapters.qemu.process import QemuError
    from conformance.adapters.qemu.qtest import QtestError

    expected = "the reset ends the round; QEMU goes on serving the device"
    rng = random.Random(seed)
    factory = QemuFactory(binary).with_packed()
    try:
        for attempt in range(1, attempts + 1):
            drv = BalloonDriver(queue_size=queue_size, hint_burst=queue_size - 1)
            dev = None
            try:
                dev = factory()
                os_ = GuestOS.over(dev.mem, reserved=RESERVED_PAGES)
                if not drv.probe(dev, os_):
                    raise QemuError("the reference driver could not initialize the device")
                dev.hint_start()
                for _ in range(rng.randint(1, 4)):  # echo, then queue hints: the iothread pops them
                    irq = dev.take_interrupts()
                    drv.interrupt(irq.queues, irq.config)
                    drv.run()
                time.sleep(rng.choice((0.0, 0.001, 0.005)))  # where the reset lands in the iothread's work
                dev.write_status(0)
                drv.remove()
                again = BalloonDriver(queue_size=queue_size, hint_burst=0)  # the queues again, as the suite does
                if not again.probe(dev, os_):
                    raise QemuError("the device refused the features after the reset")
            except PeerSpecViolation:
                factory.close()  # the split symptom of the same race (reset-during-round): a fresh QEMU goes on
                factory = QemuFactory(binary).with_packed()
                continue
            except (QemuError, QtestError) as e:
                tail = dev.q.log_tail(400) if dev is not None and hasattr(dev, "q") else ""
                why = next((line for line in tail.splitlines() if "Assertion" in line), str(e))
                return Reproduction("reset-during-round-packed", "SPLIT-DEV-D3", expected,
                                    f"attempt {attempt}: QEMU died at the reset: {why}", True)
        return Reproduction("reset-during-round-packed", "SPLIT-DEV-D3", expected,
                            f"no crash in {attempts} attempts", False)
    finally:
        factory.close()


#: How many interrupt collections (of up to 1 s of settling each) a lost notification gets to arrive.
LOOKS = 5
NO_MSIX = "no MSI-X on this build's balloon (QEMU before 9.0): not met"


def _setup(binary: str | None, packed: bool,
           hint_burst: int) -> tuple[QemuFactory, Any, BalloonDriver | None]:
    """A QEMU (packed=on if ``packed``) and the reference driver on it, queues of 8; no driver without
    MSI-X. QemuError if QEMU refused the features (packed rings, hinting)."""
    factory = QemuFactory(binary).with_packed() if packed else QemuFactory(binary)
    try:
        dev = factory()
        if dev.msix is None:
            return factory, dev, None
        os_ = GuestOS.over(dev.mem, reserved=dev.reserved_pages)
        drv = BalloonDriver(queue_size=8, hint_burst=hint_burst)
        if not drv.probe(dev, os_) or "free_page_vq" not in drv.vqs:
            raise QemuError("QEMU refused the reference driver's features (packed rings or hinting)")
    except BaseException:
        factory.close()
        raise
    return factory, dev, drv


def _looks(dev: Any, index: int, looks: int = LOOKS) -> tuple[bool, bool]:
    """(queue ``index`` notified, config notified) in any of ``looks`` collections."""
    queue = config = False
    for _ in range(looks):
        dev.run()
        irq = dev.take_interrupts()
        queue, config = queue or index in irq.queues, config or irq.config
    return queue, config


def hint_use_not_notified(binary: str | None = None, *, packed: bool = True) -> Reproduction:
    """PACKED-DEV-D10 (SPLIT-DEV-12 with ``packed=False``): with MSI-X, the used buffers QEMU's iothread
    returns on free_page_vq are never notified, though the driver asks for every one (RING_EVENT_FLAGS_ENABLE;
    split: used_event at the next entry), while inflateq's, used on the main loop, are.

    The model: a used buffer notification on free_page_vq's vector (§2.8.10, §2.7.7.2). QEMU (after 10.0:
    not in 10.0.2's source, in 10.2.2's; met on 11.1.3): ``virtio_irq`` (hw/virtio/virtio.c) sets ISR bit 0,
    then in an IOThread (``qemu_in_iothread()``) defers ``event_notifier_set(&vq->guest_notifier)`` instead
    of calling ``virtio_notify_vector``, "assuming device models have already called
    ->set_guest_notifiers()". virtio-balloon never does (vhost and dataplane devices do), so the notifier
    was never initialized and ``event_notifier_set`` returns -1: the notification is dropped. The iothread
    is where ``virtio_ballloon_get_free_page_hints`` (hw/virtio/virtio-balloon.c) pops free_page_vq and
    calls ``virtio_notify``; QEMU's trace shows ``virtio_notify`` then ``virtio_notify_irqfd_deferred_fn``
    for it, and no MSI write follows. Linux's driver gives free_page_vq no callback (no vector), which
    hides it; a driver that waits for the notification waits for ever.
    """
    name, req = ("hint-use-not-notified", "PACKED-DEV-D10") if packed else \
        ("hint-use-not-notified-split", "SPLIT-DEV-12")
    factory, dev, drv = _setup(binary, packed, hint_burst=2)
    try:
        if drv is None:
            return Reproduction(name, req, "", NO_MSIX, False)
        inflate, hints = drv.vqs["inflateq"], drv.vqs["free_page_vq"]
        for vq in (inflate, hints):
            vq.set_used_notifications(True)  # ENABLE (packed, no EVENT_IDX needed) / used_event = next entry
        dev.take_interrupts()
        dev.set_target(1)  # the control: one PFN on inflateq, used by QEMU's main loop
        dev.run()
        drv.interrupt(dev.take_interrupts().queues, config=True)
        drv.run()
        inflated, _ = _looks(dev, drv.index_of["inflateq"])
        drv.run()  # reap it
        before = hints.used_mark()
        dev.hint_start()  # a migration: QEMU publishes a command ID with a config change
        dev.run()
        irq = dev.take_interrupts()
        drv.interrupt(irq.queues, irq.config)
        drv.run()  # echo the ID and hint on free_page_vq: the iothread uses them at once
        hinted, _ = _looks(dev, drv.index_of["free_page_vq"])
        used = hints.used_mark() - before
        dev.hint_done()
        observed = (f"inflateq (main loop): used and {'notified' if inflated else 'not notified'}; "
                    f"free_page_vq (iothread): {used} descriptor(s) used, "
                    + ("notified" if hinted else f"no notification on its vector in {LOOKS} looks"))
        return Reproduction(name, req, "both queues' used buffers notified on their MSI-X vectors",
                            observed, used > 0 and not hinted)
    finally:
        factory.close()


def hint_error_not_notified(binary: str | None = None, *, packed: bool = True) -> Reproduction:
    """STATUS-DEV-3: with MSI-X, a command ID of 3 bytes on free_page_vq makes QEMU set DEVICE_NEEDS_RESET
    (``get_free_page_hints``: virtio_error "received an incorrect cmd id", in the iothread) with no
    configuration change notification, while DRIVER_OK is set; a config change from the main loop (a
    balloon target) is notified on the same vector just before, as the control.

    The model: DEVICE_NEEDS_RESET with DRIVER_OK set is followed by a configuration change notification
    (§2.1.2, MUST). QEMU (the same versions as hint-use-not-notified): ``virtio_error`` calls
    ``virtio_notify_config`` (hw/virtio/virtio.c), which in an IOThread defers
    ``event_notifier_set(&vdev->config_notifier)`` instead of ``virtio_notify_vector(config_vector)``;
    virtio-balloon never set that notifier up, so nothing is sent. Split rings the same (``packed=False``).
    """
    name = "hint-error-not-notified" if packed else "hint-error-not-notified-split"
    factory, dev, drv = _setup(binary, packed, hint_burst=0)
    try:
        if drv is None:
            return Reproduction(name, "STATUS-DEV-3", "", NO_MSIX, False)
        dev.take_interrupts()
        dev.set_target(1)  # the control: a config change on the main loop
        _, control = _looks(dev, -1, looks=1)
        assert drv.os is not None  # set by probe
        free = drv.os.alloc_page()
        assert free is not None  # a fresh guest has free pages
        page = free * BALLOON_PAGE_SIZE
        dev.mem.write(page, b"\x02\x00\x00")
        vq = drv.vqs["free_page_vq"]
        vq.add(readable=[(page, 3)])  # a command ID of 3 bytes (BAL-FPH-DRV-1)
        vq.publish()
        dev.notify(drv.index_of["free_page_vq"])
        _, config = _looks(dev, -1)
        status = dev.read_status()
        needs_reset = bool(status & DeviceStatus.DEVICE_NEEDS_RESET)
        observed = (f"control (balloon target, main loop): {'notified' if control else 'not notified'}; "
                    f"after the 3-byte ID status {status:#04x} "
                    f"({'DEVICE_NEEDS_RESET' if needs_reset else 'no NEEDS_RESET'}), "
                    f"{'a' if config else 'no'} configuration change notification in {LOOKS} looks")
        return Reproduction(name, "STATUS-DEV-3", "DEVICE_NEEDS_RESET, then a configuration change "
                            "notification on the config vector", observed, needs_reset and not config)
    finally:
        factory.close()


REPRODUCERS: dict[str, Callable[..., Reproduction]] = {
    "buffer-id-from-first": buffer_id_from_first, "notify-on-wrap": notify_on_wrap,
    "reset-during-round-packed": reset_during_round_packed,
    "hint-use-not-notified": hint_use_not_notified,
    "hint-use-not-notified-split": functools.partial(hint_use_not_notified, packed=False),
    "hint-error-not-notified": hint_error_not_notified,
    "hint-error-not-notified-split": functools.partial(hint_error_not_notified, packed=False)}


def main(argv: list[str] | None = None) -> int:
    return reproducer_main(__doc__.splitlines()[0], REPRODUCERS, argv)


if __name__ == "__main__":
    sys.exit(main())
