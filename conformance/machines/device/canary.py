"""The suite's driver in the device machine: the reference driver, whose reported pages hold a canary
when PAGE_POISON is not negotiated, so a used len can be checked against what the device wrote
(SPLIT-DEV-15)."""

from __future__ import annotations

import struct
from typing import Any

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.driver import BalloonDriver
from refmodel.virtio.features import Feature

WORD = struct.Struct("<Q")
#: "VCcanary" as a little-endian word; the word after it names the page.
CANARY_MAGIC = int.from_bytes(b"VCcanary", "little")


def canary(page: int) -> bytes:
    """What the suite's driver writes into a free page before reporting it without PAGE_POISON."""
    return (WORD.pack(CANARY_MAGIC) + WORD.pack(page)) * (BALLOON_PAGE_SIZE // (2 * WORD.size))


class CanaryDriver(BalloonDriver):
    """The reference driver, whose reported pages hold a canary when PAGE_POISON is not negotiated."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.canaried: set[int] = set()  # pages reported with a canary, until the device returns them

    def fill_reported(self, pages: list[int]) -> None:
        if self.negotiated_has(Feature.VIRTIO_BALLOON_F_PAGE_POISON):
            super().fill_reported(pages)  # BAL-FPR-DRV-2
            return
        assert self.os is not None
        for p in pages:
            self.os.fill(p, canary(p))
            self.canaried.add(p)
