"""QEMU's trace of the guest's status writes and early notifications, as events for the reference device.

On the QEMU-guest route QEMU keeps the virtio-pci status register itself and tells a vhost-user backend
nothing of it; ``-trace virtio_set_status`` prints every value the guest writes, and
``-trace virtio_queue_notify`` every notification QEMU handles itself (all of them until DRIVER_OK,
when the backend takes the rings over). QEMU writes and flushes each line before it goes on, so
reading the trace before each vhost-user message keeps the two in the guest's order.
"""

from __future__ import annotations

import re

import attrs

_STATUS = re.compile(r"\bvirtio_set_status vdev (?:0x[0-9a-fA-F]+|\(nil\)) val (\d+)\s*$")
_NOTIFY = re.compile(r"\bvirtio_queue_notify vdev (?:0x[0-9a-fA-F]+|\(nil\)) n (\d+) vq ")
#: The trace events the route asks QEMU for.
EVENTS = ("virtio_set_status", "virtio_queue_notify")


@attrs.frozen
class Status:
    """The guest wrote ``value`` to device status."""

    value: int


@attrs.frozen
class Notify:
    """The guest notified queue ``index`` (a write QEMU handled, not one passed to the backend)."""

    index: int


def parse_line(line: str) -> Status | Notify | None:
    """One trace line (any ``pid@time:`` prefix allowed) as an event; None for anything else."""
    m = _STATUS.search(line)
    if m:
        value = int(m.group(1))
        return Status(value) if value <= 0xFF else None
    m = _NOTIFY.search(line)
    if m:
        return Notify(int(m.group(1)))
    return None


class TraceReader:
    """Splits QEMU's stderr into trace events and other lines (kept for error messages)."""

    def __init__(self, keep: int = 40) -> None:
        self._buf = b""
        self.other: list[str] = []
        self.keep = keep

    def feed(self, chunk: bytes) -> list[Status | Notify]:
        self._buf += chunk
        *complete, self._buf = self._buf.split(b"\n")
        out = []
        for raw in complete:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            ev = parse_line(line)
            if ev is not None:
                out.append(ev)
            elif line.strip() and not any(e in line for e in EVENTS):
                self.other = [*self.other, line][-self.keep:]
        return out
