"""The reference virtio-balloon driver (§5.5), after Linux's ``virtio_balloon.c``. Sans-I/O.

It talks to any object with the transport calls of :class:`~refmodel.balloon.device.BalloonDevice`
(``write_status``, ``read_config``, ``enable_queue``, ``notify``, ...) and takes its memory from a
:class:`~refmodel.system.guest_os.GuestOS`. Work happens in :meth:`BalloonDriver.run`, which a harness calls
after delivering interrupts, the way a kernel runs the driver's work items.

Everything read back from the device (status, config, used rings) is checked; a device mistake
raises :class:`PeerSpecViolation` and latches ERROR.
"""

from __future__ import annotations

import struct
from typing import Any

from refmodel.capabilities import Capability
from refmodel.virtio.constants import DeviceStatus

from refmodel.balloon.constants import BALLOON_PAGE_SIZE, VIRTIO_BALLOON_STAT_SIZE, BalloonStatTag
from refmodel.errors import PeerSpecViolation, Sticky, guarded
from refmodel.virtio.features import Feature, check_negotiation, has
from refmodel.balloon.queues import QueueNumbering, balloon_queue_indices
from refmodel.system.guest_os import GuestOS, poison_pattern
from refmodel.balloon.hinting import FreePageHintDriver
from refmodel.virtio.virtq import QueueAddresses, UsedBuffer
from refmodel.virtio.split.driver import QueueFull, SplitQueueDriver

F = Feature
_PFN = struct.Struct("<I")
_STAT = struct.Struct("<HQ")
#: le32 fields of struct virtio_balloon_config (§5.5.4)
CFG_NUM_PAGES, CFG_ACTUAL, CFG_CMD_ID, CFG_POISON = 0, 4, 8, 12
#: Every feature the reference driver knows how to use.
SUPPORTED = sum(f.mask for f in (
    F.VIRTIO_F_VERSION_1, F.VIRTIO_F_EVENT_IDX, F.VIRTIO_F_INDIRECT_DESC,
    F.VIRTIO_BALLOON_F_MUST_TELL_HOST, F.VIRTIO_BALLOON_F_STATS_VQ, F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
    F.VIRTIO_BALLOON_F_FREE_PAGE_HINT, F.VIRTIO_BALLOON_F_PAGE_POISON, F.VIRTIO_BALLOON_F_PAGE_REPORTING))
STATS_TAGS = (BalloonStatTag.VIRTIO_BALLOON_S_SWAP_IN, BalloonStatTag.VIRTIO_BALLOON_S_SWAP_OUT,
              BalloonStatTag.VIRTIO_BALLOON_S_MEMFREE, BalloonStatTag.VIRTIO_BALLOON_S_MEMTOT,
              BalloonStatTag.VIRTIO_BALLOON_S_AVAIL, BalloonStatTag.VIRTIO_BALLOON_S_CACHES)


class BalloonDriver(Sticky):
    """One driver instance. ``features`` limits what it accepts; ``batch`` is PFNs per buffer."""

    #: What a harness can ask of this driver besides probe/interrupt/run.
    capabilities = frozenset({Capability.REPORT, Capability.OOM})

    def __init__(self, *, features: int = SUPPORTED, numbering: QueueNumbering = QueueNumbering.COMPACT_BY_OFFERED,
                 poison_val: int = 0x5A5A5A5A, queue_size: int = 16, batch: int = 8, report_pages: int = 4,
                 hint_burst: int = 4, hint_order: int = 0, hint_min_order: int | None = None,
                 stats_tags: tuple[int, ...] = STATS_TAGS,
                 before_driver_ok: Any = None) -> None:
        self.features, self.numbering, self.poison_val = features, numbering, poison_val
        self.queue_size, self.batch, self.report_pages, self.hint_burst = queue_size, batch, report_pages, hint_burst
        self.dev: Any = None
        self.os: GuestOS | None = None
        self.negotiated = 0
        self.ok = False
        self.vqs: dict[str, SplitQueueDriver] = {}
        self.index_of: dict[str, int] = {}
        self.balloon: list[int] = []  # pages in the balloon (inflate acknowledged)
        self.inflating = 0  # pages in inflate buffers not yet acknowledged
        self.actual_written: int | None = None
        self.hint: FreePageHintDriver | None = None
        self._slots: dict[str, list[int]] = {}
        self._config_dirty = True
        self._stats_buf = 0
        self._stats_in_flight = False
        self.stats_tags = stats_tags
        self.hint_order = hint_order  # hint blocks of 2^order pages (Linux: MAX_ORDER - 1, 4 MiB)
        self.hint_min_order = hint_min_order  # then smaller blocks, down to this order (Linux: none)
        self.last_stats: dict[int, int] = {}
        self.released: list[int] = []  # every page given back to the OS after a deflate, in order
        self.owned: list[tuple[int, int]] = []  # (first page, count) of rings and buffers
        self.before_driver_ok = before_driver_ok  # a harness hook: queues set up, DRIVER_OK not yet set

    def negotiated_has(self, feature: Feature) -> bool:
        return has(self.negotiated, feature)

    # -- initialization (§3.1.1) --------------------------------------------------------------------
    @guarded
    def probe(self, dev: Any, os: GuestOS) -> bool:
        """Initialize the device; False if it refused our features (then status has FAILED)."""
        self.dev, self.os = dev, os
        dev.write_status(0)
        if dev.read_status() != 0:  # RESET-DRV-1
            raise PeerSpecViolation("RESET-DEV-1", f"status reads {dev.read_status():#x} after a reset")
        dev.write_status(DeviceStatus.ACKNOWLEDGE)
        dev.write_status(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER)
        offered = dev.read_device_features()
        accepted = offered & self.features
        if not check_negotiation(offered, accepted).driver_valid:  # e.g. a dependency we would break
            accepted &= ~(F.VIRTIO_BALLOON_F_PAGE_REPORTING.mask | F.VIRTIO_BALLOON_F_PAGE_POISON.mask)
        dev.write_driver_features(accepted)
        status = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK
        dev.write_status(status)
        if not dev.read_status() & DeviceStatus.FEATURES_OK:  # INIT-DRV-4
            dev.write_status(status & ~DeviceStatus.FEATURES_OK | DeviceStatus.FAILED)  # INIT-DRV-6
            return False
        self.negotiated = accepted
        self.index_of = balloon_queue_indices(self.numbering, offered, accepted)
        for name, index in self.index_of.items():
            self._setup_queue(name, index)
        if self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON):
            dev.write_config(CFG_POISON, 4, self.poison_val)  # BAL-PP-DRV-2
        self._setup_hinting()
        if "statsq" in self.vqs:
            self._stats_buf = self._scratch_page() * BALLOON_PAGE_SIZE
            self._send_stats(kick=False)  # BAL-ST-DRV-2; no notification before DRIVER_OK (INIT-DRV-5)
        if self.before_driver_ok is not None:
            self.before_driver_ok(self)
        dev.write_status(status | DeviceStatus.DRIVER_OK)
        self.ok = True
        if "statsq" in self.vqs:
            self.dev.notify(self.index_of["statsq"])
        return True

    def _scratch_page(self) -> int:
        return self._scratch_pages(1)

    def _setup_queue(self, name: str, index: int) -> None:
        max_size = self.dev.queue_max_size(index)
        if max_size == 0:
            raise PeerSpecViolation("BAL-VQ-D1", f"{name} expected at queue index {index}, which does not exist")
        if max_size & (max_size - 1) or max_size > 32768:
            raise PeerSpecViolation("SPLIT-DEV-D4", f"queue {index} maximum size {max_size} is not a power of 2 "
                                    "up to 32768")
        size = min(self.queue_size, max_size)
        nbytes = QueueAddresses.packed_at(0, size).end(size)
        base = self._scratch_pages(-(-nbytes // BALLOON_PAGE_SIZE)) * BALLOON_PAGE_SIZE
        addrs = QueueAddresses.packed_at(base, size)
        assert self.os is not None
        self.vqs[name] = SplitQueueDriver(self.os.mem, addrs, size,
                                          event_idx=self.negotiated_has(F.VIRTIO_F_EVENT_IDX),
                                          check_device_writes=True, scrub_used=True)
        self.dev.enable_queue(index, size, addrs)
        if name in ("inflateq", "deflateq"):
            slot_bytes = _PFN.size * self.batch
            area = self._scratch_pages(-(-slot_bytes * size // BALLOON_PAGE_SIZE)) * BALLOON_PAGE_SIZE
            self._slots[name] = [area + slot_bytes * i for i in range(size)]

    def _scratch_pages(self, count: int) -> int:
        assert self.os is not None
        start = self.os.alloc_contiguous(count)
        self.owned.append((start, count))
        return start

    def remove(self) -> None:
        """The driver goes away after a reset: every page it held goes back to the OS."""
        if self.os is None:
            return
        pages = self.os.pages
        for start, count in self.owned:
            pages.allocated &= ~(((1 << count) - 1) << start)
        for p in self.balloon:
            pages.allocated &= ~(1 << p)
        pages.hinted = pages.isolated = 0
        self.owned.clear()
        self.balloon.clear()
        self.ok = False

    def _setup_hinting(self) -> None:
        if "free_page_vq" not in self.vqs:
            return
        assert self.os is not None
        area = self._scratch_page() * BALLOON_PAGE_SIZE
        index = self.index_of["free_page_vq"]
        self.hint = FreePageHintDriver(lambda: self.dev.read_config(CFG_CMD_ID, 4), self.vqs["free_page_vq"],
                                       self.os.pages, id_area=area, stop_buf=area + 64, order=self.hint_order,
                                       min_order=self.hint_min_order,
                                       kick=lambda: self.dev.notify(index))

    # -- events ---------------------------------------------------------------------------------------
    def interrupt(self, queues: frozenset[int] = frozenset(), config: bool = False) -> None:
        """The device signalled. Work is deferred to :meth:`run`, as in an interrupt handler."""
        if config:
            self._config_dirty = True

    @guarded
    def run(self) -> None:
        """Do all pending work: reap used buffers, follow the config, hint, resize the balloon."""
        if not self.ok:
            return
        self._harvest()
        if self._config_dirty:
            self._config_dirty = False
            if self.hint is not None:
                self.hint.on_config_change()
        if self.hint is not None:
            for _ in range(self.hint_burst):
                if not self.hint.hint_one():
                    break
        self._resize()
        self._update_actual()

    def _kick(self, name: str) -> None:
        if self.vqs[name].publish():
            self.dev.notify(self.index_of[name])

    def _harvest(self) -> None:
        for name, vq in self.vqs.items():
            if name == "free_page_vq":
                continue  # the hinting side reaps its own queue
            for used in vq.harvest():
                getattr(self, f"_used_{name}")(used)

    # -- inflate and deflate (§5.5.6.1, §5.5.6.2) -----------------------------------------------------------
    def _read_target(self) -> int:
        return self.dev.read_config(CFG_NUM_PAGES, 4)

    def _resize(self) -> None:
        target = self._read_target()
        have = len(self.balloon) + self.inflating
        if target > have:
            self._inflate(target - have)
        elif target < len(self.balloon) and not self.inflating:
            self._deflate(len(self.balloon) - target)

    def _send_pfns(self, name: str, pfns: list[int]) -> None:
        vq = self.vqs[name]
        slot = self._slots[name].pop()
        self.os.mem.write(slot, b"".join(_PFN.pack(p) for p in pfns))  # type: ignore[union-attr]
        vq.add([(slot, _PFN.size * len(pfns))], token=(slot, tuple(pfns)))
        self._kick(name)

    def _inflate(self, count: int) -> None:
        assert self.os is not None
        vq = self.vqs["inflateq"]
        while count > 0 and vq.num_free and self._slots["inflateq"]:
            pfns = []
            while len(pfns) < min(count, self.batch) and (p := self.os.alloc_page()) is not None:
                pfns.append(p)
            if not pfns:
                return  # no free memory: try again later (BAL-OP-DRV-1 is a SHOULD)
            self._send_pfns("inflateq", pfns)  # BAL-OP-D1; pages untouched until the ack (BAL-OP-DRV-9)
            self.inflating += len(pfns)
            count -= len(pfns)

    def _used_inflateq(self, used: UsedBuffer) -> None:
        slot, pfns = used.token  # type: ignore[misc]
        self._slots["inflateq"].append(slot)
        self.inflating -= len(pfns)
        self.balloon.extend(pfns)

    def _deflate(self, count: int) -> None:
        vq = self.vqs["deflateq"]
        while count > 0 and vq.num_free and self._slots["deflateq"] and self.balloon:
            pfns = [self.balloon.pop() for _ in range(min(count, self.batch, len(self.balloon)))]
            self._send_pfns("deflateq", pfns)  # BAL-OP-DRV-6
            count -= len(pfns)
            if not self.negotiated_has(F.VIRTIO_BALLOON_F_MUST_TELL_HOST):
                self._release(pfns)  # BAL-OP-DRV-8: no need to wait for the ack

    def _used_deflateq(self, used: UsedBuffer) -> None:
        slot, pfns = used.token  # type: ignore[misc]
        self._slots["deflateq"].append(slot)
        if self.negotiated_has(F.VIRTIO_BALLOON_F_MUST_TELL_HOST):
            self._release(list(pfns))  # BAL-OP-DRV-7: only now

    def _release(self, pfns: list[int]) -> None:
        assert self.os is not None
        for p in pfns:
            if self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON):
                self.os.fill(p, poison_pattern(self.poison_val))  # BAL-PP-DRV-1
            self.os.free_page(p)
            self.released.append(p)

    def _update_actual(self) -> None:
        n = len(self.balloon)
        if n != self.actual_written:
            self.dev.write_config(CFG_ACTUAL, 4, n)  # BAL-OP-DRV-11
            self.actual_written = n

    @guarded
    def oom(self, count: int) -> int:
        """Memory pressure: give back up to ``count`` balloon pages if DEFLATE_ON_OOM allows it."""
        if not self.ok or not self.negotiated_has(F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM):
            return 0
        self._harvest()
        before = len(self.balloon)
        self._deflate(count)
        self._update_actual()
        return before - len(self.balloon)

    # -- statistics (§5.5.6.3) -----------------------------------------------------------------------------
    def _send_stats(self, kick: bool = True) -> None:
        assert self.os is not None
        free = self.os.pages.free.bit_count() * BALLOON_PAGE_SIZE
        values = {BalloonStatTag.VIRTIO_BALLOON_S_MEMFREE: free, BalloonStatTag.VIRTIO_BALLOON_S_AVAIL: free,
                  BalloonStatTag.VIRTIO_BALLOON_S_MEMTOT: self.os.n_pages * BALLOON_PAGE_SIZE}
        self.last_stats = {int(t): values.get(t, 0) for t in self.stats_tags}
        data = b"".join(_STAT.pack(t, v) for t, v in self.last_stats.items())  # BAL-ST-DRV-4, -8
        assert len(data) == VIRTIO_BALLOON_STAT_SIZE * len(self.stats_tags)
        self.os.mem.write(self._stats_buf, data)
        self.vqs["statsq"].add([(self._stats_buf, len(data))])
        self._stats_in_flight = True  # BAL-ST-DRV-1: one at a time
        if kick:
            self._kick("statsq")
        else:
            self.vqs["statsq"].publish()

    def _used_statsq(self, used: UsedBuffer) -> None:
        self._stats_in_flight = False
        self._send_stats()  # BAL-ST-DRV-3

    # -- free page reporting (§5.5.6.7) ---------------------------------------------------------------------
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
        if self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON):
            for p in pages:
                self.os.fill(p, poison_pattern(self.poison_val))  # BAL-FPR-DRV-2
        vq.add(writable=[(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) for p in pages], token=mask)
        self._kick("reporting_vq")
        return len(pages)

    def _used_reporting_vq(self, used: UsedBuffer) -> None:
        assert self.os is not None
        self.os.pages.unisolate(used.token)  # type: ignore[arg-type]


__all__ = ["BalloonDriver", "QueueFull", "SUPPORTED"]
