"""The suite's driver in the device machine: the reference driver, whose reported pages hold a canary
when PAGE_POISON is not negotiated, so a used len can be checked against what the device wrote
(SPLIT-DEV-15), and which remembers what it wrote into the buffers the device may only read: PFN arrays,
command ID and STOP buffers (SPLIT-DEV-3)."""

from __future__ import annotations

import struct
from typing import Any

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.driver import BalloonDriver
from refmodel.balloon.hinting import CMD_ID_SIZE, FreePageHintDriver
from refmodel.virtio.features import Feature

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


class CanaryDriver(BalloonDriver):
    """The reference driver, whose reported pages hold a canary when PAGE_POISON is not negotiated."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.canaried: set[int] = set()  # pages reported with a canary, until the device returns them
        self.readable: dict[int, bytes] = {}  # address -> what the driver last put there for the device

    def make_hint_driver(self, *args: Any, **kwargs: Any) -> FreePageHintDriver:
        return RecordingHintDriver(*args, readable=self.readable, **kwargs)

    def send_pfns(self, name: str, pfns: list[int]) -> int:
        slot = self._slots[name][-1]  # the PFN array's buffer, which send_pfns takes (on either ring)
        head = super().send_pfns(name, pfns)
        self.readable[slot] = self.vqs[name].mem.read(slot, 4 * len(pfns))
        return head

    def fill_reported(self, pages: list[int]) -> None:
        if self.negotiated_has(Feature.VIRTIO_BALLOON_F_PAGE_POISON):
            super().fill_reported(pages)  # BAL-FPR-DRV-2
            return
        assert self.os is not None
        for p in pages:
            self.os.fill(p, canary(p))
            self.canaried.add(p)
