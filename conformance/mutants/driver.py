"""Driver mutants: each subclasses the reference driver and breaks one requirement, named in ``breaks``.

A test runs every mutant with the ``ci`` profile and asserts that the failure names this requirement.
Each overrides the smallest piece that makes it wrong.
"""

from __future__ import annotations

from typing import Any


from refmodel.balloon.driver import CFG_NUM_PAGES, CFG_POISON, BalloonDriver
from refmodel.virtio.constants import VIRTQ_DESC_F_NEXT
from refmodel.balloon.constants import VIRTIO_BALLOON_CMD_ID_DONE
from refmodel.virtio.features import Feature

from refmodel.balloon.hinting import CMD_ID_SIZE, DriverHintEvent, FreePageHintDriver
from refmodel.virtio.split.layout import DESC_FMT, VIRTQ_DESC_SIZE



F = Feature


class _HintMutant(BalloonDriver):
    HINT: type[FreePageHintDriver] = FreePageHintDriver

    def _setup_hinting(self) -> None:
        super()._setup_hinting()
        if self.hint is not None:
            self.hint.__class__ = self.HINT


class _DoubleEchoHint(FreePageHintDriver):
    def on_config_change(self) -> None:
        served = self.served
        super().on_config_change()
        if self.served != served and self.served is not None and self._id_free:
            buf = self._id_free.pop()
            self.vq.mem.write_u32(buf, self.served)
            self._send(buf, ("id", buf))


class DoubleEcho(_HintMutant):
    """Sends the command ID out-buffer twice."""

    breaks = "BAL-FPH-DRV-3"
    HINT = _DoubleEchoHint


class _NoStopHint(FreePageHintDriver):
    def _stop(self) -> None:
        self._reap()
        self._go(DriverHintEvent.SEND_STOP)  # the state moves on; the buffer never goes out


class MissingStop(_HintMutant):
    """Stops hinting silently, without the STOP out-buffer."""

    breaks = "BAL-FPH-DRV-6"
    HINT = _NoStopHint


class _LongIdHint(FreePageHintDriver):
    def _flush(self) -> None:
        sent = False
        while self._pending and self.vq.num_free:
            buf, token = self._pending.pop(0)
            self.vq.add([(buf, CMD_ID_SIZE + 4)], token=token)
            sent = True
        if sent:
            self._publish()


class LongCommandId(_HintMutant):
    """Sends the command ID in an 8-byte out-buffer."""

    breaks = "BAL-FPH-DRV-1"
    HINT = _LongIdHint


class _KeepsHintedHint(FreePageHintDriver):
    def on_config_change(self) -> None:
        if self.read_cmd_id() != VIRTIO_BALLOON_CMD_ID_DONE:
            super().on_config_change()
            return
        release, self.guest.release_hinted = self.guest.release_hinted, lambda mask: None  # "forgets" them
        try:
            super().on_config_change()
        finally:
            del self.guest.release_hinted


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

    def report(self) -> int:
        if not self.ok or "reporting_vq" not in self.vqs:
            return 0
        negotiated = self.negotiated
        self.negotiated &= ~F.VIRTIO_BALLOON_F_PAGE_POISON.mask
        try:
            return super().report()
        finally:
            self.negotiated = negotiated


class NoPoisonWrite(BalloonDriver):
    """Sets DRIVER_OK without writing poison_val."""

    breaks = "BAL-PP-DRV-2"

    def probe(self, dev: Any, os: Any) -> bool:
        write = dev.write_config
        dev.write_config = lambda off, size, value: None if off == CFG_POISON else write(off, size, value)
        try:
            return super().probe(dev, os)
        finally:
            del dev.write_config


class UsesInflatedEarly(BalloonDriver):
    """Gives pages back to the OS as soon as it has put them in an inflate buffer."""

    breaks = ("BAL-OP-DRV-9", "BAL-OP-DRV-6")  # used before the ack, or after it without a deflate

    def _send_pfns(self, name: str, pfns: list[int]) -> None:
        super()._send_pfns(name, pfns)
        if name == "inflateq":
            for p in pfns:
                self.os.pages.allocated &= ~(1 << p)  # type: ignore[union-attr]

    def _release(self, pfns: list[int]) -> None:
        assert self.os is not None
        super()._release([p for p in pfns if self.os.pages.allocated >> p & 1 and p not in self.os.workload])


class DeflatesEarly(BalloonDriver):
    """Reuses deflated pages before the ack, although MUST_TELL_HOST is negotiated."""

    breaks = "BAL-OP-DRV-7"

    def _deflate(self, count: int) -> None:
        negotiated = self.negotiated
        self.negotiated &= ~F.VIRTIO_BALLOON_F_MUST_TELL_HOST.mask
        try:
            super()._deflate(count)
        finally:
            self.negotiated = negotiated

    def _used_deflateq(self, used: Any) -> None:
        slot, _ = used.token
        self._slots["deflateq"].append(slot)


class StaleActual(BalloonDriver):
    """Never updates actual."""

    breaks = "BAL-OP-DRV-11"

    def _update_actual(self) -> None:
        pass


class TwoStatsBuffers(BalloonDriver):
    """Keeps two stats buffers available."""

    breaks = "BAL-ST-DRV-1"

    def _send_stats(self, kick: bool = True) -> None:
        super()._send_stats(kick)
        if self.vqs["statsq"].num_free:
            super()._send_stats(kick)


class TwelveByteStats(BalloonDriver):
    """Pads each stats entry to 12 bytes."""

    breaks = "BAL-ST-DRV-5"

    def _send_stats(self, kick: bool = True) -> None:
        n = 12 * len(self.stats_tags)
        self.os.mem.write(self._stats_buf, bytes(n))  # type: ignore[union-attr]
        self.vqs["statsq"].add([(self._stats_buf, n)])
        if kick:
            self._kick("statsq")
        else:
            self.vqs["statsq"].publish()


class KicksBeforeDriverOk(BalloonDriver):
    """Notifies the stats queue before setting DRIVER_OK."""

    breaks = "INIT-DRV-5"

    def _send_stats(self, kick: bool = True) -> None:
        super()._send_stats(True)


class AcceptsUnoffered(BalloonDriver):
    """Accepts PAGE_REPORTING whether or not the device offers it."""

    breaks = "FEAT-DRV-1"

    def probe(self, dev: Any, os: Any) -> bool:
        write = dev.write_driver_features
        dev.write_driver_features = lambda v: write(v | F.VIRTIO_BALLOON_F_PAGE_REPORTING.mask
                                                    | F.VIRTIO_BALLOON_F_PAGE_POISON.mask)
        try:
            return super().probe(dev, os)
        finally:
            del dev.write_driver_features


class WritesNumPages(BalloonDriver):
    """Writes num_pages (the device's field) along with actual."""

    breaks = "BAL-CFG-D2"

    def _update_actual(self) -> None:
        n = len(self.balloon)
        if n != self.actual_written:
            self.dev.write_config(CFG_NUM_PAGES, 4, n)
        super()._update_actual()


class ForgetsToNotify(BalloonDriver):
    """Publishes inflate and deflate buffers without notifying the device."""

    breaks = "SPLIT-DRV-21"

    def _kick(self, name: str) -> None:
        if name in ("inflateq", "deflateq"):
            self.vqs[name].publish()
            return
        super()._kick(name)


class LoopingChain(BalloonDriver):
    """Makes an inflate descriptor point at itself."""

    breaks = "SPLIT-DRV-4"

    def _send_pfns(self, name: str, pfns: list[int]) -> None:
        vq = self.vqs[name]
        head = vq._free[-1]
        super()._send_pfns(name, pfns)
        addr = vq.addrs.desc + VIRTQ_DESC_SIZE * head
        a, n, flags, _ = self.os.mem.unpack(DESC_FMT, addr)  # type: ignore[union-attr]
        self.os.mem.pack(DESC_FMT, addr, a, n, flags | VIRTQ_DESC_F_NEXT, head)  # type: ignore[union-attr]


DRIVER_MUTANTS: tuple[type[BalloonDriver], ...] = (
    DoubleEcho, MissingStop, LongCommandId, KeepsHintedAfterDone, ReusesReportedEarly, ReportsUnpoisoned,
    NoPoisonWrite, UsesInflatedEarly, DeflatesEarly, StaleActual, TwoStatsBuffers, TwelveByteStats,
    KicksBeforeDriverOk, AcceptsUnoffered, WritesNumPages, LoopingChain, ForgetsToNotify,
)
