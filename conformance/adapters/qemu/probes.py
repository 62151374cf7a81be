"""Robustness probes: feed QEMU's balloon one malformed request at a time and record its reaction.

Each probe breaks one driver requirement on purpose. The device is not required to do anything in
particular, except not to crash, and (STATUS-DEV-2, SHOULD) to set DEVICE_NEEDS_RESET when it cannot
go on. A crash or hang is a failure with the probe as its reproducer; anything else is recorded.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from refmodel.balloon.driver import BalloonDriver
from refmodel.virtio.constants import VIRTQ_DESC_F_NEXT, DeviceStatus
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.split.layout import DESC_FMT, USED_IDX, VIRTQ_DESC_SIZE

from conformance.adapters.qemu.device import RESERVED_PAGES, QemuBalloon, QemuFactory
from conformance.adapters.qemu.process import QemuError


@attrs.frozen
class ProbeResult:
    name: str
    breaks: str  # the driver requirement the probe violates
    reaction: str  # "needs-reset", "used", "ignored" or "crashed"
    detail: str

    @property
    def verdict(self) -> str:
        return "fail" if self.reaction == "crashed" else "pass"


def _session(factory: QemuFactory) -> tuple[QemuBalloon, GuestOS, BalloonDriver]:
    dev = factory()
    os_ = GuestOS.over(dev.mem, reserved=RESERVED_PAGES)
    drv = BalloonDriver(queue_size=8)
    if not drv.probe(dev, os_):
        raise QemuError("the reference driver could not initialize the device")
    return dev, os_, drv


def _scratch(os_: GuestOS) -> int:
    return os_.alloc_contiguous(1) * BALLOON_PAGE_SIZE


def _patch_desc(os_: GuestOS, drv: BalloonDriver, queue: str, head: int, **fields: int) -> None:
    vq = drv.vqs[queue]
    addr = vq.addrs.desc + VIRTQ_DESC_SIZE * head
    a, n, flags, nxt = os_.mem.unpack(DESC_FMT, addr)
    values = {"addr": a, "len": n, "flags": flags, "next": nxt, **fields}
    os_.mem.pack(DESC_FMT, addr, values["addr"], values["len"], values["flags"], values["next"])


def _submit(dev: QemuBalloon, drv: BalloonDriver, queue: str, readable: tuple = (), writable: tuple = (),
            patch: Callable[[int], None] | None = None) -> None:
    """Add a chain with the reference driver, damage its descriptor, publish and kick."""
    vq = drv.vqs[queue]
    head = vq.add(readable, writable)
    if patch is not None:
        patch(head)  # before publishing: the device never sees the well-formed version
    vq.publish()
    dev.notify(drv.index_of[queue])


def probe_short_cmd_id(dev, os_, drv) -> None:
    dev.hint_start()
    buf = _scratch(os_)
    os_.mem.write(buf, b"\x01\x00\x00")
    _submit(dev, drv, "free_page_vq", readable=((buf, 3),))


def probe_hint_outside_ram(dev, os_, drv) -> None:
    cid = dev.hint_start()
    buf = _scratch(os_)
    os_.mem.write_u32(buf, cid)
    _submit(dev, drv, "free_page_vq", readable=((buf, 4),))
    outside = dev.mem.size + (1 << 30)
    _submit(dev, drv, "free_page_vq", writable=((buf, BALLOON_PAGE_SIZE),),
            patch=lambda head: _patch_desc(os_, drv, "free_page_vq", head, addr=outside))


def probe_descriptor_loop(dev, os_, drv) -> None:
    buf = _scratch(os_)
    os_.mem.write_u32(buf, 0x400)
    _submit(dev, drv, "inflateq", readable=((buf, 4),),
            patch=lambda head: _patch_desc(os_, drv, "inflateq", head, flags=VIRTQ_DESC_F_NEXT, next=head))


def probe_zero_length_buffer(dev, os_, drv) -> None:
    buf = _scratch(os_)
    _submit(dev, drv, "inflateq", readable=((buf, 4),),
            patch=lambda head: _patch_desc(os_, drv, "inflateq", head, len=0))


def probe_queue_index_out_of_range(dev, os_, drv) -> None:
    dev.notify(7)


PROBES: dict[str, tuple[str, Callable[..., None]]] = {
    "3-byte command ID": ("BAL-FPH-DRV-1", probe_short_cmd_id),
    "hint outside guest RAM": ("SPLIT-DRV-D1", probe_hint_outside_ram),
    "descriptor loop": ("SPLIT-DRV-4", probe_descriptor_loop),
    "zero-length PFN buffer": ("BAL-OP-D1", probe_zero_length_buffer),
    "notify of queue index 7": ("INIT-DRV-5", probe_queue_index_out_of_range),
}


def run_probes(factory: QemuFactory | None = None) -> list[ProbeResult]:
    factory = factory or QemuFactory()
    out = []
    try:
        for name, (breaks, probe) in PROBES.items():
            try:
                dev, os_, drv = _session(factory)
                used_before = {q: os_.mem.read_u16(vq.addrs.used + USED_IDX) for q, vq in drv.vqs.items()}
                probe(dev, os_, drv)
                dev.run()
                status = dev.read_status()
                used_after = {q: os_.mem.read_u16(vq.addrs.used + USED_IDX) for q, vq in drv.vqs.items()}
            except (QemuError, OSError, RuntimeError) as e:
                alive = factory.qemu is not None and factory.qemu.alive
                log = factory.qemu.log_tail(300) if factory.qemu is not None else ""
                out.append(ProbeResult(name, breaks, "ignored" if alive else "crashed", f"{e}; QEMU log: {log}"))
                continue
            moved = [q for q in used_after if used_after[q] != used_before[q]]
            if status & DeviceStatus.DEVICE_NEEDS_RESET:
                reaction, detail = "needs-reset", f"status {status:#04x}: DEVICE_NEEDS_RESET"
            elif moved:
                reaction, detail = "used", f"returned the buffer on {', '.join(moved)}; status {status:#04x}"
            else:
                reaction, detail = "ignored", f"no reaction; status {status:#04x}"
            out.append(ProbeResult(name, breaks, reaction, detail))
    finally:
        factory.close()
    return out
