"""Standalone reproducers for what the suite found in QEMU over packed rings (``packed=on``, --ring packed).
``python -m conformance.adapters.qemu.packed_reproducers NAME [--qemu-binary PATH]`` runs one; the exit
status is 1 when QEMU diverges from the model. The docstrings name the QEMU code involved.
"""

from __future__ import annotations

import argparse
import sys

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.driver import BalloonDriver
from refmodel.errors import PeerSpecViolation
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.packed.layout import PDESC_FMT, PVIRTQ_DESC_SIZE, wrap_of

from conformance.adapters.qemu.device import QemuFactory
from conformance.adapters.qemu.reproducers import Reproduction

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


REPRODUCERS = {"buffer-id-from-first": buffer_id_from_first, "notify-on-wrap": notify_on_wrap,
               "reset-during-round-packed": reset_during_round_packed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(REPRODUCERS))
    p.add_argument("--qemu-binary")
    args = p.parse_args(argv)
    r = REPRODUCERS[args.name](args.qemu_binary)
    print(f"{r.name} ({r.requirement})\n  expected: {r.expected}\n  observed: {r.observed}")
    print("QEMU diverges from the model" if r.diverges else "QEMU agrees with the model")
    return 1 if r.diverges else 0


if __name__ == "__main__":
    sys.exit(main())
