"""Free page reporting (§5.5.6.7): the driver lends free pages on reporting_vq until the device returns them.

:class:`ReportingDevice` and :class:`ReportingDriver` are parts of the balloon device and driver; each
names, under ``TYPE_CHECKING``, what it uses of the side it is part of.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.errors import PeerSpecViolation, Sticky, guarded
from refmodel.system.guest import bits, range_mask
from refmodel.system.guest_os import poison_pattern
from refmodel.virtio.virtq import Chain, UsedBuffer

if TYPE_CHECKING:
    from refmodel.system.guest_os import GuestOS
    from refmodel.virtio.memory import GuestMemory
    from refmodel.virtio.split.driver import SplitQueueDriver


class ReportingDevice(Sticky):
    """Part of :class:`~refmodel.balloon.device.BalloonDevice`: discard reported pages (or fill them with
    poison_val) before returning the report."""

    reported: int  # pages reported and acknowledged since reset
    if TYPE_CHECKING:  # provided by BalloonDevice
        mem: GuestMemory
        guest_in_use: Callable[[int], bool] | None
        poison_val: int | None

        def _touch(self, pages: int, fill: bytes | None, req_id: str, why: str) -> None: ...

    def _reset_reporting(self) -> None:
        self.reported = 0

    def on_reporting_vq(self, chain: Chain) -> int | None:
        """Take the pages of one report; returns the used length. Override point."""
        mask = 0
        for b in chain.writable + chain.readable:  # AMB-REPORT-DIRECTION: Linux uses in-buffers
            if (b.addr % BALLOON_PAGE_SIZE or b.len % BALLOON_PAGE_SIZE
                    or not self.mem.contains(b.addr, b.len)):
                raise PeerSpecViolation("BAL-FPR-DRV-5", f"report buffer [{b.addr:#x}, +{b.len}) is not "
                                        "whole pages of guest memory")
            mask |= range_mask(b.addr // BALLOON_PAGE_SIZE, b.len // BALLOON_PAGE_SIZE)
        poison = self.poison_val
        fill = None
        if poison is not None:
            fill = poison_pattern(poison)
            for p in bits(mask):
                if self.guest_in_use is not None and self.guest_in_use(p):
                    raise PeerSpecViolation("BAL-FPR-DRV-3", f"reported page {p} is in use by the guest "
                                            "before the report was acknowledged")
                if self.mem.read(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) != fill:
                    raise PeerSpecViolation("BAL-FPR-DRV-2", f"reported page {p} does not hold poison_val "
                                            f"{poison:#010x}")
        self.reported |= mask
        self._touch(mask, fill, "BAL-FPR-DRV-3", "reported page discarded before the report ack")
        return 0


class ReportingDriver(Sticky):
    """Part of :class:`~refmodel.balloon.driver.BalloonDriver`: ``report_pages`` free pages per report."""

    report_pages: int
    if TYPE_CHECKING:  # provided by BalloonDriver
        os: GuestOS | None
        ok: bool
        vqs: dict[str, SplitQueueDriver]

        def kick(self, name: str) -> None: ...
        def _harvest(self) -> None: ...
        def poison(self, pages: list[int]) -> None: ...

    @guarded
    def report(self) -> int:
        """Report up to ``report_pages`` free pages in one chain; returns how many."""
        if not self.ok or "reporting_vq" not in self.vqs:
            return 0
        assert self.os is not None
        self._harvest()
        vq = self.vqs["reporting_vq"]
        pages = self.os.free_pages()[-self.report_pages:]
        if not pages or vq.num_free < len(pages):
            return 0
        mask = sum(1 << p for p in pages)
        self.os.pages.isolate(mask)  # off the free lists until the ack (BAL-FPR-DRV-3)
        self.fill_reported(pages)
        vq.add(writable=[(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) for p in pages], token=mask)
        self.kick("reporting_vq")
        return len(pages)

    def fill_reported(self, pages: list[int]) -> None:
        """Before the report: with PAGE_POISON the pages hold poison_val (BAL-FPR-DRV-2). Override point."""
        self.poison(pages)

    def _used_reporting_vq(self, used: UsedBuffer) -> None:
        assert self.os is not None
        self.os.pages.unisolate(used.token)  # type: ignore[arg-type]
