"""Driver mutants: each subclasses the reference driver and breaks one requirement, named in ``breaks``.

A test runs every mutant with the ``ci`` profile and asserts that the failure names this requirement.
Each overrides the smallest piece that makes it wrong, through the seams a third party has: public
methods (a few see the device through a transport of their own, as a driver with its own transport layer
would), and the documented override points (``choose_features``, ``write_poison``, ``send_pfns``,
``release``, ``waits_for_deflate_ack``, ``update_actual``, ``send_stats``, ``encode_stats``,
``fill_reported``, ``kick``, ``make_hint_driver``; on the hinting side ``send_command_id``, ``send_stop``,
``release_after_done``, ``out_len``, ``hints_writable``).
"""

from __future__ import annotations

from typing import Any

from refmodel.balloon.constants import VIRTIO_BALLOON_CMD_ID_STOP
from refmodel.balloon.driver import CFG_NUM_PAGES, BalloonDriver
from refmodel.balloon.hinting import CMD_ID_SIZE, DriverHintState, FreePageHintDriver
from refmodel.balloon.inflate import PFN_QUEUES
from refmodel.system.guest import bits
from refmodel.virtio.constants import VIRTQ_DESC_F_NEXT, DeviceStatus
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


class _OutBufferHint(FreePageHintDriver):
    hints_writable = False


class HintsAsOutBuffers(_HintMutant):
    """Sends hinted pages as device-readable (out) buffers."""

    breaks = "BAL-FPH-D3"
    HINT = _OutBufferHint


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
    DoubleEcho, MissingStop, LongCommandId, HintsAsOutBuffers, KeepsHintedAfterDone, ReusesReportedEarly,
    ReportsUnpoisoned, NoPoisonWrite, UsesInflatedEarly, DeflatesEarly, StaleActual, TwoStatsBuffers, TwelveByteStats,
    KicksBeforeDriverOk, AcceptsUnoffered, WritesNumPages, LoopingChain, ForgetsToNotify,
)


# -- status and initialization (§2.4, §3.1.1): the device as the driver's probe sees it ----------------------
class _Transport:
    """A mutant driver's view of the device: every call goes through unless a subclass answers it itself."""

    def __init__(self, dev: Any, os: Any) -> None:
        self.dev, self.os = dev, os

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dev, name)


class _TransportMutant(BalloonDriver):
    """Base: the driver probes the device through a :class:`_Transport` subclass ``TRANSPORT``."""

    TRANSPORT: type[_Transport] = _Transport

    def probe(self, dev: Any, os: Any) -> bool:
        return super().probe(self.TRANSPORT(dev, os), os)


class _ResetAtOnce(_Transport):
    reset = False

    def write_status(self, value: int) -> None:
        self.reset = value == 0
        self.dev.write_status(value)

    def read_status(self) -> int:
        if self.reset:
            self.reset = False
            return 0  # taken for granted, never read
        return int(self.dev.read_status())


class AssumesResetDone(_TransportMutant):
    """Treats the reset as complete without reading device status back."""

    breaks = "RESET-DRV-1"
    TRANSPORT = _ResetAtOnce


class _NoResetAfterFailed(_Transport):
    skipped = False

    def write_status(self, value: int) -> None:
        if value == 0 and self.dev.read_status() & DeviceStatus.FAILED:
            self.skipped = True  # retries a device it gave up on, as it is
            return
        self.dev.write_status(value)

    def read_status(self) -> int:
        if self.skipped:
            self.skipped = False
            return 0
        return int(self.dev.read_status())


class RetriesWithoutReset(_TransportMutant):
    """Initializes a device it marked FAILED again without resetting it first."""

    breaks = "STATUS-DRV-3"
    TRANSPORT = _NoResetAfterFailed


class _FeaturesOkAssumed(_Transport):
    written = 0

    def write_status(self, value: int) -> None:
        self.written = value if value & DeviceStatus.FEATURES_OK else 0
        self.dev.write_status(value)

    def read_status(self) -> int:
        if self.written:
            written, self.written = self.written, 0
            return written  # FEATURES_OK taken as kept
        return int(self.dev.read_status())


class NeverRereadsStatus(_TransportMutant):
    """Goes on with device setup after setting FEATURES_OK without reading status back."""

    breaks = "INIT-DRV-4"
    TRANSPORT = _FeaturesOkAssumed


class _NoFailed(_Transport):
    def write_status(self, value: int) -> None:
        if value & DeviceStatus.FAILED:
            return  # gives up without saying so
        self.dev.write_status(value)


class GivesUpSilently(_TransportMutant):
    """Gives up on a device that refused FEATURES_OK without setting FAILED."""

    breaks = "INIT-DRV-6"
    TRANSPORT = _NoFailed


class _StaleUsedFlags(_Transport):
    def __init__(self, dev: Any, os: Any) -> None:
        super().__init__(dev, os)
        self.held = os.mem.read(os.mem.base, os.mem.size)  # guest RAM as the driver found it

    def enable_queue(self, index: int, size: int, addrs: Any) -> None:
        at = addrs.used - self.os.mem.base
        self.os.mem.write(addrs.used, self.held[at:at + 2])  # the used flags, put back as they were
        self.dev.enable_queue(index, size, addrs)


class StaleUsedFlags(_TransportMutant):
    """Leaves the used ring's flags as the page held them (it zeroes only the rest of the ring)."""

    breaks = "SPLIT-DRV-18"
    TRANSPORT = _StaleUsedFlags


# -- descriptors (§2.7.4) -----------------------------------------------------------------------------------
class _SplittingQueue:
    """A driver queue whose buffers of more than 4 bytes take two descriptors, split 4 bytes in."""

    def __init__(self, vq: Any) -> None:
        self.vq = vq

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vq, name)

    def add(self, readable: Any = (), writable: Any = (), **kwargs: Any) -> int:
        parts = [part for a, n in readable for part in ([(a, 4), (a + 4, n - 4)] if n > 4 else [(a, n)])]
        if len(parts) + len(writable) > self.vq.num_free:
            parts = list(readable)
        return int(self.vq.add(parts, writable, **kwargs))


class SplitsBuffers(BalloonDriver):
    """Describes its PFN arrays and stats buffers with two descriptors where one would do."""

    breaks = "SPLIT-DRV-3"

    def probe(self, dev: Any, os: Any) -> bool:
        ok = super().probe(dev, os)
        for name in ("inflateq", "deflateq", "statsq"):
            if name in self.vqs:
                self.vqs[name] = _SplittingQueue(self.vqs[name])  # type: ignore[assignment]
        return ok


# -- feature bits (§5.5.3) -----------------------------------------------------------------------------------
class ReportsOverInitOnFree(BalloonDriver):
    """Accepts PAGE_REPORTING without PAGE_POISON though its guest relies on free pages keeping a value."""

    breaks = "BAL-FB-DRV-3"

    def choose_features(self, offered: int) -> int:
        reporting = offered & self.features & F.VIRTIO_BALLOON_F_PAGE_REPORTING.mask
        return super().choose_features(offered) | reporting


# -- free page hinting (§5.5.6.5) ----------------------------------------------------------------------------
class _NoBlockHint(FreePageHintDriver):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.min_order = self.order + 1  # no block size to try: every round ends with STOP at once


class HintsNothing(_HintMutant):
    """Echoes each command ID, then ends the round with STOP without supplying a single page."""

    breaks = "BAL-FPH-DRV-4"
    HINT = _NoBlockHint


class _HintsThroughStopHint(FreePageHintDriver):
    def on_config_change(self) -> None:
        if self.read_cmd_id() == VIRTIO_BALLOON_CMD_ID_STOP and self.state is DriverHintState.HINTING:
            return  # keeps hinting as if the field still held its ID
        super().on_config_change()


class HintsThroughStop(_HintMutant):
    """Keeps supplying hints after the host set free_page_hint_cmd_id to STOP."""

    breaks = "BAL-FPH-DRV-5"
    HINT = _HintsThroughStopHint


class _ShrinksAsIsHint(FreePageHintDriver):
    def shrink(self, count: int) -> int:
        pages = bits(self.guest.hinted)[:count]
        self.guest.release_hinted(sum(1 << p for p in pages))  # as the device may have left them
        return len(pages)


class ShrinksUninitialized(_HintMutant):
    """Gives hinted pages back to the guest before DONE without initializing them."""

    breaks = "BAL-FPH-DRV-9"
    HINT = _ShrinksAsIsHint


DRIVER_MUTANTS += (
    AssumesResetDone, RetriesWithoutReset, NeverRereadsStatus, GivesUpSilently, StaleUsedFlags, SplitsBuffers,
    ReportsOverInitOnFree, HintsNothing, HintsThroughStop, ShrinksUninitialized,
)
