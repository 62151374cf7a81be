"""Standalone reproducers for what the suite found in QEMU over packed rings (``packed=on``, --ring packed).
``python -m conformance.adapters.qemu.packed_reproducers NAME [--qemu-binary PATH]`` runs one; the exit
status is 1 when QEMU diverges from the model. The docstrings name the QEMU code involved.
"""

from __future__ import annotations

import argparse
import sys

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.driver import BalloonDriver
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


REPRODUCERS = {"buffer-id-from-first": buffer_id_from_first}


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
