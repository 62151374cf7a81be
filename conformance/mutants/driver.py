"""Driver mutants: each subclasses the reference driver and breaks one requirement, named in ``breaks``.

A test runs every mutant with the ``ci`` profile and asserts that the failure names this requirement.
Each overrides the smallest piece that makes it wrong, through the seams a third party has: public
methods and the documented override points (``choose_features``, ``write_poison``, ``send_pfns``,
``release``, ``waits_for_deflate_ack``, ``update_actual``, ``send_stats``, ``encode_stats``,
``fill_reported``, ``kick``, ``make_hint_driver``; on the hinting side ``send_command_id``, ``send_stop``,
``release_after_done``, ``out_len``).
"""

from __future__ import annotations

from typing import Any

from refmodel.balloon.driver import CFG_NUM_PAGES, BalloonDriver
from refmodel.balloon.hinting import CMD_ID_SIZE, FreePageHintDriver
from refmodel.balloon.inflate import PFN_QUEUES
from refmodel.virtio.constants import VIRTQ_DESC_F_NEXT
from refmodel.virtio.features import Feature
from refmodel.virtio.split.layout import DESC_FMT, VIRTQ_DESC_SIZE

F = Feature


class _HintMutant(BalloonDriver):
    """Base: the driver's hinting side is a :class:`FreePageHintDriver` subclass ``HINT``."""

    HINT: type[FreePageHintDriver] = FreePageHintDriver

    def make_hint_driver(self, *args: Any, **kwargs: Any) -> FreePageHintDriver:
        return self.HINT(*args, **kwargs)


class _DoubleEchoHint(FreePageHintDriver):
    def send_command_id(self, cid: int) -> bool:
        if not super().send_command_id(cid):
            return False
        super().send_command_id(cid)
        return True


class DoubleEcho(_HintMutant):
    """Sends the command ID out-buffer twice."""

    breaks = "BAL-FPH-DRV-3"
    HINT = _DoubleEchoHint


class _NoStopHint(FreePageHintDriver):
    def send_stop(self) -> None:
        pass  # the state moves on; the buffer never goes out


class MissingStop(_HintMutant):
    """Stops hinting silently, without the STOP out-buffer."""

    breaks = "BAL-FPH-DRV-6"
    HINT = _NoStopHint


class _LongIdHint(FreePageHintDriver):
    out_len = CMD_ID_SIZE + 4


class LongCommandId(_HintMutant):
    """Sends the command ID in an 8-byte out-buffer."""

    breaks = "BAL-FPH-DRV-1"
    HINT = _LongIdHint


class _KeepsHintedHint(FreePageHintDriver):
    def release_after_done(self, pages: int) -> None:
        pass  # "forgets" them


class KeepsHintedAfterDone(_HintMutant):
    """Holds on to hinted pages after DONE."""

    breaks = "BAL-FPH-DRV-10"
    HINT = _KeepsHintedHint


class ReusesReportedEarly(BalloonDriver):
    """Puts reported pages back on the free lists right after queueing the report."""

    breaks = "BAL-FPR-DRV-3"

    def report(self) -> int:
        n = super().report()
        self.os.pages.isolated = 0  # type: ignore[union-attr]
        return n


class ReportsUnpoisoned(BalloonDriver):
    """Reports free pages without filling them with poison_val."""

    breaks = "BAL-FPR-DRV-2"

    def fill_reported(self, pages: list[int]) -> None:
        pass


class NoPoisonWrite(BalloonDriver):
    """Sets DRIVER_OK without writing poison_val."""

    breaks = "BAL-PP-DRV-2"

    def write_poison(self) -> None:
        pass


class UsesInflatedEarly(BalloonDriver):
    """Gives pages back to the OS as soon as it has put them in an inflate buffer."""

    breaks = ("BAL-OP-DRV-9", "BAL-OP-DRV-6")  # used before the ack, or after it without a deflate

    def send_pfns(self, name: str, pfns: list[int]) -> int:
        head = super().send_pfns(name, pfns)
        if name == "inflateq":
            for p in pfns:
                self.os.pages.allocated &= ~(1 << p)  # type: ignore[union-attr]
        return head

    def release(self, pfns: list[int]) -> None:
        assert self.os is not None
        super().release([p for p in pfns if self.os.pages.allocated >> p & 1 and p not in self.os.workload])


class DeflatesEarly(BalloonDriver):
    """Reuses deflated pages before the ack, although MUST_TELL_HOST is negotiated."""

    breaks = "BAL-OP-DRV-7"

    def waits_for_deflate_ack(self) -> bool:
        return False


class StaleActual(BalloonDriver):
    """Never updates actual."""

    breaks = "BAL-OP-DRV-11"

    def update_actual(self) -> None:
        pass


class TwoStatsBuffers(BalloonDriver):
    """Keeps two stats buffers available."""

    breaks = "BAL-ST-DRV-1"

    def send_stats(self, kick: bool = True) -> None:
        super().send_stats(kick)
        if self.vqs["statsq"].num_free:
            super().send_stats(kick)


class TwelveByteStats(BalloonDriver):
    """Pads each stats entry to 12 bytes."""

    breaks = "BAL-ST-DRV-5"

    def encode_stats(self, stats: dict[int, int]) -> bytes:
        return bytes(12 * len(stats))


class KicksBeforeDriverOk(BalloonDriver):
    """Notifies the stats queue before setting DRIVER_OK."""

    breaks = "INIT-DRV-5"

    def send_stats(self, kick: bool = True) -> None:
        super().send_stats(True)


class AcceptsUnoffered(BalloonDriver):
    """Accepts PAGE_REPORTING whether or not the device offers it."""

    breaks = "FEAT-DRV-1"

    def choose_features(self, offered: int) -> int:
        return super().choose_features(offered) | F.VIRTIO_BALLOON_F_PAGE_REPORTING.mask \
            | F.VIRTIO_BALLOON_F_PAGE_POISON.mask


class WritesNumPages(BalloonDriver):
    """Writes num_pages (the device's field) along with actual."""

    breaks = "BAL-CFG-D2"

    def update_actual(self) -> None:
        n = len(self.balloon)
        if n != self.actual_written:
            self.dev.write_config(CFG_NUM_PAGES, 4, n)
        super().update_actual()


class ForgetsToNotify(BalloonDriver):
    """Publishes inflate and deflate buffers without notifying the device."""

    breaks = "SPLIT-DRV-21"

    def kick(self, name: str) -> None:
        if name in PFN_QUEUES:
            self.vqs[name].publish()
            return
        super().kick(name)


class LoopingChain(BalloonDriver):
    """Makes an inflate descriptor point at itself."""

    breaks = "SPLIT-DRV-4"

    def send_pfns(self, name: str, pfns: list[int]) -> int:
        head = super().send_pfns(name, pfns)
        addr = self.vqs[name].addrs.desc + VIRTQ_DESC_SIZE * head
        a, n, flags, _ = self.os.mem.unpack(DESC_FMT, addr)  # type: ignore[union-attr]
        self.os.mem.pack(DESC_FMT, addr, a, n, flags | VIRTQ_DESC_F_NEXT, head)  # type: ignore[union-attr]
        return head


DRIVER_MUTANTS: tuple[type[BalloonDriver], ...] = (
    DoubleEcho, MissingStop, LongCommandId, KeepsHintedAfterDone, ReusesReportedEarly, ReportsUnpoisoned,
    NoPoisonWrite, UsesInflatedEarly, DeflatesEarly, StaleActual, TwoStatsBuffers, TwelveByteStats,
    KicksBeforeDriverOk, AcceptsUnoffered, WritesNumPages, LoopingChain, ForgetsToNotify,
)
