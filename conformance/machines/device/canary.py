"""The suite's driver in the device machine: the reference driver, whose reported pages hold a canary
when PAGE_POISON is not negotiated, so a used len can be checked against what the device wrote
(SPLIT-DEV-15), and which remembers what it wrote into the buffers the device may only read: PFN arrays,
command ID and STOP buffers (SPLIT-DEV-3)."""

from __future__ import annotations

import struct
from typing import Any, cast

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.driver import BalloonDriver
from refmodel.balloon.hinting import CMD_ID_SIZE, FreePageHintDriver
from refmodel.virtio.features import Feature
from refmodel.virtio.split.driver import IndirectArena
from refmodel.virtio.virtq import UsedBuffer

WORD = struct.Struct("<Q")
#: "VCcanary" as a little-endian word; the word after it names the page.
CANARY_MAGIC = int.from_bytes(b"VCcanary", "little")


def canary(page: int) -> bytes:
    """What the suite's driver writes into a free page before reporting it without PAGE_POISON."""
    return (WORD.pack(CANARY_MAGIC) + WORD.pack(page)) * (BALLOON_PAGE_SIZE // (2 * WORD.size))


class RecordingHintDriver(FreePageHintDriver):
    """The reference hinting side, noting what its command ID and STOP buffers hold after each write."""

    def __init__(self, *args: Any, readable: dict[int, bytes], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.readable = readable
        slots = kwargs.get("id_slots", 8)
        self.out_buffers = [kwargs["id_area"] + CMD_ID_SIZE * i for i in range(slots)] + [self.stop_buf]
        self.remember()

    def remember(self) -> None:
        for addr in self.out_buffers:
            self.readable[addr] = self.vq.mem.read(addr, CMD_ID_SIZE)

    def send_command_id(self, cid: int) -> bool:
        sent = super().send_command_id(cid)
        self.remember()
        return sent


#: How the suite's driver lays out an inflate PFN array: one descriptor, split over two (SPLIT-DEV-1), in
#: an indirect table (SPLIT-DEV-7), or that with WRITE set on the table's own descriptor (SPLIT-DEV-6).
LAYOUTS = ("direct", "split", "indirect", "indirect, WRITE on the table's descriptor")


class CanaryDriver(BalloonDriver):
    """The reference driver, whose reported pages hold a canary when PAGE_POISON is not negotiated, and
    whose inflate PFN arrays take the layout the machine asks for (``layout``), their pages canaried, so
    a device that discards some page of an array but not all of it has not read the array whole."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.canaried: set[int] = set()  # pages reported with a canary, until the device returns them
        self.readable: dict[int, bytes] = {}  # address -> what the driver last put there for the device
        self.layout = "direct"
        self.laid_out: list[tuple[str, tuple[int, ...]]] = []  # (layout, PFNs) of inflates acked, unjudged
        self._layouts: dict[int, str] = {}  # head -> layout of the inflate buffers in flight

    def indirect_arena(self, name: str) -> IndirectArena | None:
        if name != "inflateq":
            return None
        page = self._scratch_page()
        return IndirectArena(page * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)

    def send_pfns(self, name: str, pfns: list[int]) -> int:
        layout = self.layout if name == "inflateq" else "direct"
        if layout == "split" and len(pfns) < 2 or layout.startswith("indirect") and not self.vqs[name].indirect_desc:
            layout = "direct"  # one PFN cannot be split; no indirect table without INDIRECT_DESC
        slot = self._slots[name][-1]  # the PFN array's buffer, which send_pfns takes (on either ring)
        if layout == "direct":
            head = super().send_pfns(name, pfns)
        else:
            assert self.os is not None
            self._slots[name].pop()
            for p in pfns:
                self.os.fill(p, canary(p))  # the guest's last write before it gives the page away
            self.os.mem.write(slot, b"".join(p.to_bytes(4, "little") for p in pfns))
            cut = 4 * (len(pfns) // 2)  # split over two descriptors (in the table too, if there are two PFNs)
            bufs = [(slot, cut), (slot + cut, 4 * len(pfns) - cut)] if cut else [(slot, 4 * len(pfns))]
            head = self.vqs[name].add(bufs, token=(slot, tuple(pfns)), indirect=layout != "split",
                                      table_write_flag="WRITE" in layout)
            self.kick(name)
        self.readable[slot] = self.vqs[name].mem.read(slot, 4 * len(pfns))
        if name == "inflateq":
            self._layouts[head] = layout
        return head

    def make_hint_driver(self, *args: Any, **kwargs: Any) -> FreePageHintDriver:
        return RecordingHintDriver(*args, readable=self.readable, **kwargs)

    def _used_inflateq(self, used: UsedBuffer) -> None:
        super()._used_inflateq(used)
        layout = self._layouts.pop(used.head, "direct")
        if layout != "direct":
            self.laid_out.append((layout, cast(tuple[int, tuple[int, ...]], used.token)[1]))

    def fill_reported(self, pages: list[int]) -> None:
        if self.negotiated_has(Feature.VIRTIO_BALLOON_F_PAGE_POISON):
            super().fill_reported(pages)  # BAL-FPR-DRV-2
            return
        assert self.os is not None
        for p in pages:
            self.os.fill(p, canary(p))
            self.canaried.add(p)
