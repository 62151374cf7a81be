"""Device mutants: each subclasses the reference device and breaks one requirement, named in ``breaks``.

A test runs every mutant with the ``ci`` profile and asserts that the failure names this requirement.
Each overrides the smallest piece that makes it wrong, through the seams a third party has: public
methods and the documented override points (``make_queue``, ``make_hint_device``, ``on_<queue>``,
``notify_config_change``; on the queue ``write_used_element``; on the hinting side ``next_command_id``).
"""

from __future__ import annotations

from typing import Any

from refmodel.balloon.constants import BALLOON_PAGE_SIZE, VIRTIO_BALLOON_CMD_ID_DONE
from refmodel.balloon.device import DEFAULT_OFFER, NEEDS_RESET_FIELD, BalloonDevice
from refmodel.balloon.hinting import FreePageHintDevice
from refmodel.errors import PeerSpecViolation
from refmodel.system.guest import bits
from refmodel.virtio.constants import VIRTQ_AVAIL_F_NO_INTERRUPT, DeviceStatus
from refmodel.virtio.features import Feature
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.layout import AVAIL_FLAGS
from refmodel.virtio.rings import SPLIT

F = Feature


class _LaterWrites(BalloonDevice):
    """Base: a device that keeps changing some pages on every run (after it promised not to)."""

    def __init__(self, mem: Any, *args: Any, **kwargs: Any) -> None:
        self.scribble = 0
        self._runs = 0
        super().__init__(mem, *args, **kwargs)

    def run(self) -> None:
        self._runs += 1
        for p in bits(self.scribble):  # pages from earlier runs, with a different byte each run
            self.mem.fill(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE, 0x80 | self._runs & 0x7F)
        super().run()


class _HintMutant(BalloonDevice):
    """Base: the device's hinting side is a :class:`FreePageHintDevice` subclass ``HINT``."""

    HINT: type[FreePageHintDevice] = FreePageHintDevice

    def make_hint_device(self, *args: Any, **kwargs: Any) -> FreePageHintDevice:
        return self.HINT(*args, **kwargs)


class _FirstIdHint(FreePageHintDevice):
    def next_command_id(self) -> int:
        return self.first_id


class ReusedCommandId(_HintMutant):
    """Publishes the same command ID for every round, STOP or not."""

    breaks = "BAL-FPH-DEV-2"
    HINT = _FirstIdHint


class AppliesStaleHints(BalloonDevice):
    """Applies hints whatever command ID they were sent under."""

    breaks = "BAL-FPH-DEV-3"

    def make_hint_device(self, *args: Any, **kwargs: Any) -> FreePageHintDevice:
        return super().make_hint_device(*args, **kwargs, accept_stale=True)


class _DoneIdHint(FreePageHintDevice):
    def next_command_id(self) -> int:
        return VIRTIO_BALLOON_CMD_ID_DONE


class PublishesReservedId(_HintMutant):
    """Starts a round with command ID 1, which is DONE."""

    breaks = "BAL-FPH-D1"
    HINT = _DoneIdHint


class WritesHintedAfterDone(_LaterWrites):
    """Keeps scribbling on hinted pages after publishing DONE."""

    breaks = "BAL-FPH-DEV-5"

    def hint_done(self) -> None:
        super().hint_done()
        self.scribble |= self.hinted

    def hint_start(self) -> int:
        self.scribble = 0
        return super().hint_start()


class NeverDone(BalloonDevice):
    """Publishes STOP where it should publish DONE."""

    breaks = "BAL-FPH-DEV-6"

    def hint_done(self) -> None:
        self.hint_stop()


class _QueueMutant(BalloonDevice):
    """Base: the device's split queues are a :class:`SplitQueueDevice` subclass ``QUEUE`` (over packed rings
    the reference's: these mutants break SPLIT-* requirements)."""

    QUEUE: type[SplitQueueDevice] = SplitQueueDevice

    def make_queue(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.ring is not SPLIT:
            return super().make_queue(name, *args, **kwargs)
        return self.QUEUE(*args, **kwargs)


class _LateElementQueue(SplitQueueDevice):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.late: list[tuple[int, int, int]] = []

    def write_used_element(self, idx: int, head: int, length: int) -> None:
        self.late.append((idx, head, length))  # add_used publishes the index now, the element comes later

    def write_late(self) -> None:
        for idx, head, length in self.late:
            super().write_used_element(idx, head, length)
        self.late = []


class UsedIdxBeforeElement(_QueueMutant):
    """Publishes used idx at once and writes the used element only on its next pass."""

    breaks = "SPLIT-DEV-14"
    QUEUE = _LateElementQueue

    def run(self) -> None:
        for q in self.queues.values():
            q.write_late()  # type: ignore[attr-defined]
        super().run()


class _RawLenQueue(SplitQueueDevice):
    LEN_EXTRA = 0
    ID_EXTRA = 0

    def write_used_element(self, idx: int, head: int, length: int) -> None:
        super().write_used_element(idx, head + self.ID_EXTRA, length + self.LEN_EXTRA)


class _LongLenQueue(_RawLenQueue):
    LEN_EXTRA = 4


class _JunkIdQueue(_RawLenQueue):
    ID_EXTRA = 0x8000


class WrongUsedLen(_QueueMutant):
    """Reports 4 more bytes written than the chain has writable."""

    breaks = "SPLIT-DEV-D2"
    QUEUE = _LongLenQueue


class JunkUsedId(_QueueMutant):
    """Writes used elements whose id is no head the driver made available."""

    breaks = "SPLIT-DEV-D1"
    QUEUE = _JunkIdQueue


class _ScribbleReadableQueue(SplitQueueDevice):
    def pop(self) -> Any:
        chain = super().pop()
        if chain is not None and chain.readable:
            b = chain.readable[0]
            self.mem.write(b.addr, b"\xff" * min(b.len, 4))
        return chain


class WritesReadableBuffer(_QueueMutant):
    """Writes into device-readable buffers (the PFN arrays)."""

    breaks = "SPLIT-DEV-3"
    QUEUE = _ScribbleReadableQueue


class _AlwaysNotifyQueue(SplitQueueDevice):
    """Notifies whenever the used idx moved, if ``event_idx`` is what the queue negotiated."""

    WHEN_EVENT_IDX = True

    def notify_needed(self) -> bool:
        if self.event_idx != self.WHEN_EVENT_IDX:
            return super().notify_needed()
        if self.last_signalled == self.used_idx:
            return False
        self.signalled()
        return True


class _NoInterruptIgnoredQueue(_AlwaysNotifyQueue):
    WHEN_EVENT_IDX = False


class _StrayFlagQueue(SplitQueueDevice):
    def notify_needed(self) -> bool:
        need = super().notify_needed()
        return need and not (self.event_idx and self.mem.read_u16(self.addrs.avail + AVAIL_FLAGS)
                             & VIRTQ_AVAIL_F_NO_INTERRUPT)


class _NeverNotifyQueue(SplitQueueDevice):
    def notify_needed(self) -> bool:
        return False


class IgnoresEventIdx(_QueueMutant):
    """With EVENT_IDX, notifies after every used buffer, as if used_event did not exist."""

    breaks = "SPLIT-DEV-13"
    QUEUE = _AlwaysNotifyQueue


class IgnoresNoInterrupt(_QueueMutant):
    """Without EVENT_IDX, notifies after every used buffer, even while the driver sets NO_INTERRUPT."""

    breaks = "SPLIT-DEV-9"
    QUEUE = _NoInterruptIgnoredQueue


class HonoursNoInterruptWithEventIdx(_QueueMutant):
    """With EVENT_IDX, still reads NO_INTERRUPT in avail flags and stays silent when it is set."""

    breaks = "SPLIT-DEV-11"
    QUEUE = _StrayFlagQueue


class NoUsedNotification(_QueueMutant):
    """Never sends a used buffer notification."""

    breaks = ("SPLIT-DEV-10", "SPLIT-DEV-12")  # without and with EVENT_IDX
    QUEUE = _NeverNotifyQueue


class NoConfigNotification(BalloonDevice):
    """Changes num_pages without a configuration change notification."""

    breaks = "NOTIFY-DEV-D1"

    def notify_config_change(self, field: str) -> None:
        if field != "num_pages":
            super().notify_config_change(field)


class StuckGeneration(BalloonDevice):
    """Never moves config_generation."""

    breaks = "CFG-DEV-2"

    def config_generation(self) -> int:
        return 0


class ResetKeepsStatus(BalloonDevice):
    """Ignores a reset written while the driver is running."""

    breaks = "RESET-DEV-1"

    def write_status(self, value: int) -> None:
        if value == 0 and self.status.driver_ok:
            return
        super().write_status(value)


class RejectsValidSubset(BalloonDevice):
    """Refuses FEATURES_OK unless the driver took every feature offered."""

    breaks = "FEAT-DEV-2"

    def write_status(self, value: int) -> None:
        if value & DeviceStatus.FEATURES_OK and not self.status.driver_ok and self.driver_features != self.offered:
            self.driver_features |= 1 << 40  # an unofferable bit makes the model reject the set
        super().write_status(value)


class OffersUndefinedBit(BalloonDevice):
    """Offers balloon feature bit 23, which the spec does not define."""

    breaks = "FEAT-DEV-3"

    def read_device_features(self) -> int:
        return self.offered | 1 << 23


class ReportZeroUnderPoison(BalloonDevice):
    """Discards reported pages to zero even when PAGE_POISON asks for poison_val."""

    breaks = "BAL-FPR-DEV-2"

    def on_reporting_vq(self, chain: Any) -> int | None:
        used = super().on_reporting_vq(chain)
        for p in bits(self.touched[-1].pages):
            self.mem.fill(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE, 0)
        return used


class ModifiesReportedAfterAck(_LaterWrites):
    """Keeps scribbling on reported pages after it returned the report."""

    breaks = "BAL-FPR-DEV-D1"

    def on_reporting_vq(self, chain: Any) -> int | None:
        used = super().on_reporting_vq(chain)
        self.scribble |= self.touched[-1].pages
        return used


class LazyDeflateDiscard(_LaterWrites):
    """Drops the contents of deflated pages on its next passes, after acknowledging the deflate."""

    breaks = "BAL-OP-DEV-D1"

    def on_deflateq(self, chain: Any) -> int | None:
        before = self.ballooned
        used = super().on_deflateq(chain)
        self.scribble |= before & ~self.ballooned
        return used

    def on_inflateq(self, chain: Any) -> int | None:
        used = super().on_inflateq(chain)
        self.scribble &= ~self.ballooned
        return used


class ConsumesBeforeDriverOk(BalloonDevice):
    """Uses the stats buffer as soon as it sees one, DRIVER_OK or not."""

    breaks = "STATUS-DEV-1"

    def run(self) -> None:
        q = self.queues.get("statsq")
        if not self.status.driver_ok and q is not None:
            while (chain := q.pop()) is not None:
                q.add_used(chain.head, 0)
            self.signal_used("statsq")
            return
        super().run()


class KeepsUnknownStats(BalloonDevice):
    """Reports stats entries with tags it does not know."""

    breaks = "BAL-ST-DEV-1"

    def on_statsq(self, chain: Any) -> int | None:
        used = super().on_statsq(chain)
        data = chain.read_all(self.mem)
        for off in range(0, len(data), 10):
            tag = int.from_bytes(data[off:off + 2], "little")
            self.stats.setdefault(tag, int.from_bytes(data[off + 2:off + 10], "little"))
        return used


class HidesItsError(BalloonDevice):
    """On a driver's malformed input it stops serving, silently: no DEVICE_NEEDS_RESET, no notification,
    the buffer never returned, until the driver happens to reset it."""

    breaks = "STATUS-DEV-2"
    gave_up = False

    def run(self) -> None:
        if self.gave_up:
            return
        try:
            super().run()
        except PeerSpecViolation:
            self.gave_up = True

    def notify(self, index: int) -> None:
        if not self.gave_up:
            super().notify(index)

    def read_status(self) -> int:
        return super().read_status() & ~DeviceStatus.DEVICE_NEEDS_RESET

    def notify_config_change(self, field: str) -> None:
        if field != NEEDS_RESET_FIELD:
            super().notify_config_change(field)

    def write_status(self, value: int) -> None:
        if value == 0:
            self.gave_up = False
        super().write_status(value)


class NeedsResetUnannounced(BalloonDevice):
    """Sets DEVICE_NEEDS_RESET on a driver's error but sends no configuration change notification."""

    breaks = "STATUS-DEV-3"

    def notify_config_change(self, field: str) -> None:
        if field != NEEDS_RESET_FIELD:
            super().notify_config_change(field)


class ReportLenUnwritten(BalloonDevice):
    """Returns each report with a used len over every reported byte, but leaves the pages as they were."""

    breaks = "SPLIT-DEV-15"

    def on_reporting_vq(self, chain: Any) -> int | None:
        before = [(b.addr, self.mem.read(b.addr, b.len)) for b in chain.writable]
        super().on_reporting_vq(chain)
        for addr, data in before:  # the discard never happened
            self.mem.write(addr, data)
        return chain.writable_len


class ReportLenUnwrittenPacked(ReportLenUnwritten):
    """ReportLenUnwritten over packed rings (it offers VIRTIO_F_RING_PACKED and the registry runs it there):
    each report's used descriptor has WRITE set and len over every reported byte, the pages left as they
    were."""

    breaks = "PACKED-DEV-D13"
    over_ring = "packed"  # the ring the registry runs it over (see conformance.registry)

    def __init__(self, mem: Any, offered: int = DEFAULT_OFFER | F.VIRTIO_F_RING_PACKED.mask,
                 **kwargs: Any) -> None:
        super().__init__(mem, offered, **kwargs)


class DiscardsRewrittenHints(BalloonDevice):
    """Drops the contents of every page it applied as a hint, on each pass until DONE, even pages the guest
    has written since it hinted them."""

    breaks = "BAL-FPH-D4"
    discarding = False

    def hint_start(self) -> int:
        self.discarding = True
        return super().hint_start()

    def hint_done(self) -> None:
        self.discarding = False
        super().hint_done()

    def run(self) -> None:
        super().run()
        if self.discarding:
            for p in bits(self.hinted_pages()):
                self.mem.fill(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE, 0)


class OddQueueSize(BalloonDevice):
    """Offers an inflate queue of 12 entries, which is no power of 2."""

    breaks = "SPLIT-DEV-D4"

    def queue_max_size(self, index: int) -> int:
        size = super().queue_max_size(index)
        return 12 if self.name_of.get(index) == "inflateq" else size


DEVICE_MUTANTS: tuple[type[BalloonDevice], ...] = (
    ReusedCommandId, AppliesStaleHints, PublishesReservedId, WritesHintedAfterDone, NeverDone,
    UsedIdxBeforeElement, WrongUsedLen, JunkUsedId, WritesReadableBuffer, IgnoresEventIdx, NoUsedNotification,
    NoConfigNotification, StuckGeneration, ResetKeepsStatus, RejectsValidSubset, OffersUndefinedBit,
    ReportZeroUnderPoison, ModifiesReportedAfterAck, LazyDeflateDiscard, ConsumesBeforeDriverOk,
    KeepsUnknownStats, OddQueueSize, IgnoresNoInterrupt, HonoursNoInterruptWithEventIdx, HidesItsError,
    NeedsResetUnannounced, ReportLenUnwritten, ReportLenUnwrittenPacked, DiscardsRewrittenHints,
)
