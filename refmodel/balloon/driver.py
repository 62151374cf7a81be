"""The reference virtio-balloon driver (§5.5), after Linux's ``virtio_balloon.c``. Sans-I/O.

It talks to any object with the transport calls of :class:`~refmodel.balloon.device.BalloonDevice`
(``write_status``, ``read_config``, ``enable_queue``, ``notify``, ...) and takes its memory from a
:class:`~refmodel.system.guest_os.GuestOS`. Work happens in :meth:`BalloonDriver.run`, which a harness calls
after delivering interrupts, the way a kernel runs the driver's work items.

Everything read back from the device (status, config, used rings) is checked; a device mistake
raises :class:`PeerSpecViolation` and latches ERROR.

:class:`BalloonDriver` holds initialization, the queues and the work loop, and composes one part per
operation: :mod:`~refmodel.balloon.inflate`, :mod:`~refmodel.balloon.stats`, :mod:`~refmodel.balloon.hinting`,
:mod:`~refmodel.balloon.reporting`, :mod:`~refmodel.balloon.poison`.
"""

from __future__ import annotations

from typing import Any

from refmodel.balloon.config import CFG_ACTUAL, CFG_CMD_ID, CFG_NUM_PAGES, CFG_POISON
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.hinting import HintingDriver
from refmodel.balloon.inflate import PFN_QUEUES, InflateDriver
from refmodel.balloon.poison import PoisonDriver
from refmodel.balloon.queues import QueueNumbering, balloon_queue_indices
from refmodel.balloon.reporting import ReportingDriver
from refmodel.balloon.stats import STATS_TAGS, StatsDriver
from refmodel.capabilities import Capability
from refmodel.errors import PeerSpecViolation, Sticky, guarded
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.constants import DeviceStatus
from refmodel.virtio.features import Feature, check_negotiation, has
from refmodel.virtio.rings import ring_for
from refmodel.virtio.split.driver import IndirectArena, QueueFull

F = Feature
#: Every feature the reference driver knows how to use.
SUPPORTED = sum(f.mask for f in (
    F.VIRTIO_F_VERSION_1, F.VIRTIO_F_EVENT_IDX, F.VIRTIO_F_INDIRECT_DESC,
    F.VIRTIO_BALLOON_F_MUST_TELL_HOST, F.VIRTIO_BALLOON_F_STATS_VQ, F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
    F.VIRTIO_BALLOON_F_FREE_PAGE_HINT, F.VIRTIO_BALLOON_F_PAGE_POISON, F.VIRTIO_BALLOON_F_PAGE_REPORTING,
    F.VIRTIO_F_RING_PACKED))  # RSV-DRV-4: packed rings whenever offered

__all__ = ["BalloonDriver", "CFG_ACTUAL", "CFG_CMD_ID", "CFG_NUM_PAGES", "CFG_POISON", "QueueFull",
           "STATS_TAGS", "SUPPORTED"]


class BalloonDriver(InflateDriver, StatsDriver, HintingDriver, ReportingDriver, PoisonDriver, Sticky):
    """One driver instance. ``features`` limits what it accepts; ``batch`` is PFNs per buffer."""

    #: What a harness can ask of this driver besides probe/interrupt/run.
    capabilities = frozenset({Capability.REPORT, Capability.OOM})

    def __init__(self, *, features: int = SUPPORTED,
                 numbering: QueueNumbering = QueueNumbering.COMPACT_BY_OFFERED, poison_val: int = 0x5A5A5A5A,
                 queue_size: int = 16, batch: int = 8, report_pages: int = 4, hint_burst: int = 4,
                 hint_order: int = 0, hint_min_order: int | None = None,
                 stats_tags: tuple[int, ...] = STATS_TAGS, before_driver_ok: Any = None,
                 init_on_free: bool = False) -> None:
        self.features, self.numbering, self.poison_val = features, numbering, poison_val
        #: The guest initializes pages as it frees them and relies on free pages keeping that value (Linux's
        #: init_on_free=1, or page poisoning): then PAGE_REPORTING only with PAGE_POISON (BAL-FB-DRV-3).
        self.init_on_free = init_on_free
        self.queue_size, self.batch, self.report_pages = queue_size, batch, report_pages
        self.hint_burst = hint_burst
        self.dev: Any = None
        self.os: GuestOS | None = None
        self.negotiated = 0
        self.ok = False
        self.vqs: dict[str, Any] = {}  # the negotiated ring's driver-side queues (refmodel.virtio.rings)
        self.index_of: dict[str, int] = {}
        self.hint = None
        self._config_dirty = True
        self.stats_tags = stats_tags
        self.hint_order, self.hint_min_order = hint_order, hint_min_order
        self.owned: list[tuple[int, int]] = []  # (first page, count) of rings and buffers
        self.before_driver_ok = before_driver_ok  # a harness hook: queues set up, DRIVER_OK not yet set
        self._init_inflate()
        self._init_stats()

    def negotiated_has(self, feature: Feature) -> bool:
        return has(self.negotiated, feature)

    # -- initialization (§3.1.1) --------------------------------------------------------------------
    @guarded
    def probe(self, dev: Any, os: GuestOS) -> bool:
        """Initialize the device; False if it refused our features (then status has FAILED)."""
        self.dev, self.os = dev, os
        dev.write_status(0)
        status = dev.read_status()  # RESET-DRV-1: the reset is complete once status reads 0
        if status != 0:
            raise PeerSpecViolation("RESET-DEV-1", f"status reads {status:#x} after a reset")
        if self.ok:
            self.remove()  # probed again while running: the reset made the device forget it all
        dev.write_status(DeviceStatus.ACKNOWLEDGE)
        dev.write_status(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER)
        offered = dev.read_device_features()
        accepted = self.choose_features(offered)
        dev.write_driver_features(accepted)
        status = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK
        dev.write_status(status)
        if not dev.read_status() & DeviceStatus.FEATURES_OK:  # INIT-DRV-4
            dev.write_status(status & ~DeviceStatus.FEATURES_OK | DeviceStatus.FAILED)  # INIT-DRV-6
            return False
        self.negotiated = accepted
        self.index_of = self.queue_indices(offered, accepted)
        for name, index in self.index_of.items():
            self._setup_queue(name, index)
        self.write_poison()
        self._setup_hinting()
        self._setup_stats()
        if self.before_driver_ok is not None:
            self.before_driver_ok(self)
        dev.write_status(status | DeviceStatus.DRIVER_OK)
        self.ok = True
        self._stats_driver_ok()
        return True

    def choose_features(self, offered: int) -> int:
        """The features to accept of ``offered``: ours, less any whose dependency we would break.

        Override point.
        """
        accepted = offered & self.features
        if not check_negotiation(offered, accepted).driver_valid:  # e.g. a dependency we would break
            accepted &= ~(F.VIRTIO_BALLOON_F_PAGE_REPORTING.mask | F.VIRTIO_BALLOON_F_PAGE_POISON.mask)
        if self.init_on_free and not has(accepted, F.VIRTIO_BALLOON_F_PAGE_POISON):
            accepted &= ~F.VIRTIO_BALLOON_F_PAGE_REPORTING.mask  # BAL-FB-DRV-3: a report may discard them
        return accepted

    def queue_indices(self, offered: int, accepted: int) -> dict[str, int]:
        """Each queue to set up and its index under :attr:`numbering` (AMB-VQ-NUMBERING).

        Override point: a profile with a queue of its own adds it.
        """
        return balloon_queue_indices(self.numbering, offered, accepted)

    def _scratch_page(self) -> int:
        return self._scratch_pages(1)

    def _scratch_pages(self, count: int) -> int:
        assert self.os is not None
        start = self.os.alloc_contiguous(count)
        self.owned.append((start, count))
        return start

    def _setup_queue(self, name: str, index: int) -> None:
        max_size = self.dev.queue_max_size(index)
        if max_size == 0:
            raise PeerSpecViolation("BAL-VQ-D1", f"{name} expected at queue index {index}, "
                                    "which does not exist")
        ring = ring_for(self.negotiated)  # split, or packed with VIRTIO_F_RING_PACKED
        if why := ring.size_problem(max_size):
            raise PeerSpecViolation(ring.size_req, f"queue {index} {why}")
        size = min(self.queue_size, max_size)
        nbytes = ring.queue_bytes(size)
        base = self._scratch_pages(-(-nbytes // BALLOON_PAGE_SIZE)) * BALLOON_PAGE_SIZE
        addrs = ring.place(base, size)
        assert self.os is not None
        indirect = self.negotiated_has(F.VIRTIO_F_INDIRECT_DESC)
        self.vqs[name] = ring.driver(self.os.mem, addrs, size, event_idx=self.negotiated_has(F.VIRTIO_F_EVENT_IDX),
                                     check_device_writes=True, scrub_used=True, indirect_desc=indirect,
                                     indirect_arena=self.indirect_arena(name) if indirect else None)
        self.dev.enable_queue(index, size, addrs)
        if name in PFN_QUEUES:
            self._setup_pfn_slots(name, size)

    def indirect_arena(self, name: str) -> IndirectArena | None:
        """Where queue ``name``'s indirect tables go, with VIRTIO_F_INDIRECT_DESC; None: this driver sends
        none (the reference's own buffers are direct). Override point."""
        return None

    def remove(self) -> None:
        """The driver goes away (unbound, or after a reset): every page it held goes back to the OS, those in
        buffers the device never returned too, and nothing of its queues or rounds is kept, so a later probe
        starts from scratch. The record of deflated pages given back (``released``) stays."""
        if self.os is None:
            return
        held = [*self.balloon, *self.pfns_in_flight]
        self.poison(held)  # they leave the balloon (BAL-PP-DRV-1)
        pages = self.os.pages
        for start, count in self.owned:
            pages.allocated &= ~(((1 << count) - 1) << start)
        for p in held:
            pages.allocated &= ~(1 << p)
        pages.hinted = pages.isolated = 0
        self.owned.clear()
        released = self.released
        self._init_inflate()
        self._init_stats()
        self.released = released
        self.vqs, self.index_of, self.hint, self.negotiated = {}, {}, None, 0
        self._config_dirty = True
        self.ok = False

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
        config_changed, self._config_dirty = self._config_dirty, False
        self._run_hinting(config_changed)
        self.resize()
        self.update_actual()

    def kick(self, name: str) -> None:
        """Publish what was added to queue ``name``; notify if the device asked (SPLIT-DRV-21).

        Override point.
        """
        if self.vqs[name].publish():
            self.dev.notify(self.index_of[name])

    def _harvest(self) -> None:
        for name, vq in self.vqs.items():
            if name == "free_page_vq":
                continue  # the hinting side reaps its own queue
            for used in vq.harvest():
                getattr(self, f"_used_{name}")(used)
