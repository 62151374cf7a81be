"""The reference virtio-balloon device (§5.5), seen through a virtio transport. Sans-I/O.

Driver-facing calls (``write_status``, ``read_config``, ``enable_queue``, ``notify``, ...) are events
in; used-buffer and configuration-change interrupts are effects out (:meth:`take_interrupts`).
Host-facing calls (``set_target``, ``hint_start``, ``request_stats``, ...) are what a VMM does.
The device does its queue work only in :meth:`run`, so a test can place driver actions between a
buffer being made available and the device acting on it.

The device is deliberately the *strictest* peer the spec allows:

* every driver mistake it can see raises :class:`PeerSpecViolation` and latches ERROR;
* it changes page contents at the latest moment the spec lets it (inflate: discard; deflate with
  MUST_TELL_HOST: fresh page before the ack; report: discard or ``poison_val``), and records each
  change in :attr:`touched` with the requirement a driver breaks if that page was in use.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs

from refmodel.capabilities import Capability
from refmodel.balloon.config import FIELDS_BY_NAME, BalloonConfigSpace
from refmodel.balloon.constants import (BALLOON_PAGE_SIZE, VIRTIO_BALLOON_PFN_SHIFT, VIRTIO_BALLOON_STAT_SIZE,
    BalloonStatTag)
from refmodel.errors import NotNegotiated, PeerSpecViolation, Sticky, guarded
from refmodel.virtio.features import Feature, check_negotiation, has, mask_of
from refmodel.balloon.queues import QueueNumbering, balloon_queue_indices
from refmodel.system.guest import bits, range_mask
from refmodel.system.guest_os import poison_pattern
from refmodel.balloon.hinting import FreePageHintDevice
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.status import DeviceStatusMachine, Role, StatusEvent
from refmodel.virtio.transport import Interrupts
from refmodel.virtio.virtq import Chain, QueueAddresses
from refmodel.virtio.split.device import SplitQueueDevice

F = Feature
DEFAULT_OFFER = mask_of([
    F.VIRTIO_F_VERSION_1, F.VIRTIO_F_EVENT_IDX, F.VIRTIO_F_INDIRECT_DESC,
    F.VIRTIO_BALLOON_F_MUST_TELL_HOST, F.VIRTIO_BALLOON_F_STATS_VQ, F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
    F.VIRTIO_BALLOON_F_FREE_PAGE_HINT, F.VIRTIO_BALLOON_F_PAGE_POISON, F.VIRTIO_BALLOON_F_PAGE_REPORTING,
])
#: Largest queue size per queue (QEMU: 1024 for free_page_vq, 128 for the rest; smaller here).
DEFAULT_QUEUE_MAX = {"inflateq": 64, "deflateq": 64, "statsq": 64, "free_page_vq": 64, "reporting_vq": 32}
_PFN = struct.Struct("<I")
_STAT = struct.Struct("<HQ")
KNOWN_STAT_TAGS = frozenset(int(t) for t in BalloonStatTag)


@attrs.frozen
class Touch:
    """The device changed ``pages``; a driver that was using one of them broke ``req_id``."""

    pages: int
    req_id: str
    why: str


class BalloonDevice(Sticky):
    """One balloon device instance over ``mem`` (the guest's RAM, shared with the driver)."""

    #: Host-side controls and observations this device offers (the suite skips what is missing).
    capabilities = frozenset({Capability.HINTING, Capability.HINT_STOP, Capability.HINTED_PAGES, Capability.STATS,
                              Capability.PER_QUEUE_INTERRUPTS})

    def __init__(self, mem: GuestMemory, offered: int = DEFAULT_OFFER, *,
                 queue_max: dict[str, int] | None = None,
                 numbering: QueueNumbering = QueueNumbering.COMPACT_BY_OFFERED, first_cmd_id: int = 2,
                 guest_in_use: Callable[[int], bool] | None = None) -> None:
        self.mem = mem
        #: Optional view into the guest (in-process harnesses have one): is this page in use right now?
        #: With it, a driver that gave away a page it still uses is named at once, not by the damage.
        self.guest_in_use = guest_in_use
        self.offered = offered
        self.numbering = numbering
        self.queue_max = dict(DEFAULT_QUEUE_MAX if queue_max is None else queue_max)
        self.first_cmd_id = first_cmd_id
        # PFNs are guest-physical: memory may start above 0 (vhost-user maps the guest's one region).
        self.n_pages = mem.end // BALLOON_PAGE_SIZE
        # Which transport index is which queue; an absent queue has no index (AMB-VQ-NUMBERING).
        self.target = 0
        self._reset_state()

    def _map_queues(self, negotiated: int) -> None:
        self.index_of = balloon_queue_indices(self.numbering, self.offered, negotiated)
        self.name_of = {i: n for n, i in self.index_of.items()}

    def _reset_state(self) -> None:
        self._map_queues(self.offered)
        self.status = DeviceStatusMachine(Role.DEVICE)
        self.config = BalloonConfigSpace(self.offered, Role.DEVICE)
        self.config.device_set("num_pages", self.target)
        self.driver_features = 0
        self.negotiated: int | None = None
        self.queues: dict[str, SplitQueueDevice] = {}
        self.hint: FreePageHintDevice | None = None
        self.hinted = 0  # pages the host may skip: hints accepted since the last hint_start
        self.ballooned = 0  # pages in the balloon (inflate acknowledged, deflate not)
        self.reported = 0  # pages reported and acknowledged since reset
        self.stats: dict[int, int] = {}
        self.stats_tags: frozenset[int] | None = None
        self.stats_updates = 0
        self.stats_held: Chain | None = None
        self._stats_requested = False
        self.poison_written = False
        self.touched: list[Touch] = []
        self._target_floor = self.target
        self._irq_queues: set[int] = set()
        self.kicked_at: dict[str, int] = {}  # queue -> avail idx at its last available buffer notification
        self._irq_config = False
        self._reset_error()

    # -- derived ---------------------------------------------------------------------------------
    def negotiated_has(self, feature: Feature) -> bool:
        return self.negotiated is not None and has(self.negotiated, feature)

    @property
    def poison_val(self) -> int | None:
        """The poison value when PAGE_POISON is negotiated, else None."""
        return self.config.get("poison_val") if self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON) else None

    # -- transport: features and status (§2.1, §2.2, §3.1) ---------------------------------------
    def read_device_features(self) -> int:
        return self.offered

    @guarded
    def write_driver_features(self, value: int) -> None:
        if self.status.state.name != "DRIVER_LOADED":
            raise PeerSpecViolation("INIT-DRV-3" if self.negotiated is not None else "INIT-DRV-1",
                                    f"driver features written in status state {self.status.state.name}")
        self.driver_features = value

    def read_status(self) -> int:
        return self.status.status

    @guarded
    def write_status(self, value: int) -> None:
        events = self.status.driver_write(value)
        for ev in events:
            if ev is StatusEvent.RESET:
                self._reset_state()
                return
            if ev is StatusEvent.SET_FEATURES_OK:
                verdict = check_negotiation(self.offered, self.driver_features)
                if verdict.driver_valid:
                    self.status.process(StatusEvent.ACCEPT_FEATURES)
                    self.negotiated = self.driver_features
                    self.config.features_ok(self.negotiated)
                    self._map_queues(self.negotiated)
                else:
                    self.status.process(StatusEvent.REJECT_FEATURES)
            elif ev is StatusEvent.SET_DRIVER_OK:
                if self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON) and not self.poison_written:
                    raise PeerSpecViolation("BAL-PP-DRV-2", "DRIVER_OK set before poison_val was written")
                self.config.driver_ok()
                if "free_page_vq" in self.queues:
                    self.hint = FreePageHintDevice(self.config, self.queues["free_page_vq"], self.n_pages,
                                                   self._apply_hint, first_id=self.first_cmd_id)

    # -- transport: config space (§2.5, §5.5.4) ----------------------------------------------------
    def config_generation(self) -> int:
        return self.config.generation

    @guarded
    def read_config(self, offset: int, size: int) -> int:
        return self.config.driver_read(offset, size)

    @guarded
    def write_config(self, offset: int, size: int, value: int) -> None:
        self.config.driver_write(offset, size, value)
        poison = FIELDS_BY_NAME["poison_val"]
        if offset < poison.offset + poison.size and poison.offset < offset + size:
            self.poison_written = True

    # -- transport: queues (§2.7, §4.1.5.1.3) ------------------------------------------------------
    def queue_max_size(self, index: int) -> int:
        """0 when the device has no queue at ``index``."""
        name = self.name_of.get(index)
        return self.queue_max[name] if name is not None else 0

    @guarded
    def enable_queue(self, index: int, size: int, addrs: QueueAddresses) -> None:
        name = self.name_of.get(index)
        if self.status.state.name != "FEATURES_OK":
            raise PeerSpecViolation("INIT-DRV-1", f"queue {index} set up in status state {self.status.state.name}")
        if name is None or size > self.queue_max[name]:
            raise PeerSpecViolation("INIT-DRV-1", f"queue {index} of size {size}: the device offers "
                                    f"{self.queue_max_size(index)} entries there")
        assert self.negotiated is not None
        self.queues[name] = SplitQueueDevice(self.mem, addrs, size,
                                             event_idx=has(self.negotiated, F.VIRTIO_F_EVENT_IDX),
                                             indirect_desc=has(self.negotiated, F.VIRTIO_F_INDIRECT_DESC))

    @guarded
    def notify(self, index: int) -> None:
        if not self.status.driver_ok:
            raise PeerSpecViolation("INIT-DRV-5", f"available buffer notification on queue {index} before DRIVER_OK")
        name = self.name_of.get(index)
        if name not in self.queues:
            raise PeerSpecViolation("INIT-DRV-5", f"notification for queue {index}, which is not enabled")
        q = self.queues[name]
        self.kicked_at[name] = self.mem.read_u16(q.addrs.avail + 2)  # avail idx the driver had published

    def take_interrupts(self) -> Interrupts:
        irq = Interrupts(frozenset(self._irq_queues), self._irq_config)
        self._irq_queues.clear()
        self._irq_config = False
        return irq

    # -- host side --------------------------------------------------------------------------------
    def _config_changed(self, before: int) -> None:
        if self.config.generation != before and self.status.driver_ok:
            self._irq_config = True  # NOTIFY-DEV-D1

    @guarded
    def set_target(self, num_pages: int) -> None:
        """The host asks for a balloon of ``num_pages`` 4 KiB pages."""
        if not 0 <= num_pages <= 0xFFFFFFFF:
            raise ValueError(f"num_pages {num_pages!r} does not fit le32")
        before = self.config.generation
        self.target = num_pages
        self._target_floor = min(self._target_floor, num_pages)
        self.config.device_set("num_pages", num_pages)
        self._config_changed(before)

    def _hint_side(self) -> FreePageHintDevice:
        if self.hint is None:
            raise NotNegotiated("VIRTIO_BALLOON_F_FREE_PAGE_HINT", "free page hinting (with DRIVER_OK)")
        return self.hint

    @guarded
    def hint_start(self) -> int:
        """Migration's AFTER_BITMAP_SYNC: forget earlier hints, publish a fresh command ID."""
        hint, before = self._hint_side(), self.config.generation
        self.hinted = 0
        cid = hint.start()
        self._config_changed(before)
        return cid

    @guarded
    def hint_stop(self) -> None:
        hint, before = self._hint_side(), self.config.generation
        hint.stop()
        self._config_changed(before)

    @guarded
    def hint_done(self) -> None:
        hint, before = self._hint_side(), self.config.generation
        hint.done()
        self._config_changed(before)

    def _apply_hint(self, pages: int) -> None:
        self.hinted |= pages

    @guarded
    def request_stats(self) -> bool:
        """Return the held stats buffer so the driver refills it (§5.5.6.3). False if none is held."""
        if self.stats_held is None:
            self._stats_requested = True
            return False
        q = self.queues["statsq"]
        q.add_used(self.stats_held.head, 0)
        self.stats_held = None
        self._signal("statsq")
        return True

    # -- host-side observations (what a VMM can see; the suite compares them with the model) -----------
    def hinted_pages(self) -> int:
        """Pages the host would skip in migration: hints accepted since the last hint_start."""
        return self.hinted

    def host_stats(self) -> dict[int, int]:
        return dict(self.stats)

    # -- the device's own work ------------------------------------------------------------------------
    @guarded
    def run(self) -> None:
        """Consume everything available on every queue (only after DRIVER_OK: STATUS-DEV-1)."""
        if not self.status.driver_ok:
            return
        # deflateq first (AMB-OP-QUEUE-ORDER): without MUST_TELL_HOST a driver may inflate a page again
        # right after queueing its deflate; a pending deflate always refers to an earlier inflate.
        for name in ("deflateq", "inflateq", "statsq", "reporting_vq"):
            q = self.queues.get(name)
            if q is None:
                continue
            handler = getattr(self, f"_on_{name}")
            while (chain := q.pop()) is not None:
                used = handler(chain)
                if used is not None:
                    q.add_used(chain.head, used)
            q.set_avail_notifications(True)  # avail_event = next index: a kick-driven VMM needs the kick
            self._signal(name)
        # Deflates made available from now on were decided under the current target at the lowest.
        self._target_floor = self.target
        if self.hint is not None:
            before = self.config.generation
            self.hint.process()
            self.queues["free_page_vq"].set_avail_notifications(True)  # a driver STOP ending the round publishes STOP (AMB-FPH-ROUND-END)
            self._config_changed(before)
            self._signal("free_page_vq")

    def _signal(self, name: str) -> None:
        if self.queues[name].notify_needed():
            self._irq_queues.add(self.index_of[name])

    def _pfns_untrusted(self, chain: Chain, queue: str) -> list[int]:
        if chain.writable or chain.readable_len % _PFN.size:
            raise PeerSpecViolation("BAL-OP-D1", f"{queue} buffer of {chain.readable_len} readable and "
                                    f"{chain.writable_len} writable bytes is not an le32 PFN array")
        data = chain.read_all(self.mem)
        pfns = [p for (p,) in _PFN.iter_unpack(data)]
        for p in pfns:
            if not self.mem.contains(p << VIRTIO_BALLOON_PFN_SHIFT, BALLOON_PAGE_SIZE):
                raise PeerSpecViolation("BAL-OP-D1", f"{queue} PFN {p:#x} is outside guest memory")
        return pfns

    def _touch(self, pages: int, fill: bytes | None, req_id: str, why: str) -> None:
        if self.guest_in_use is not None:
            for p in bits(pages):
                if self.guest_in_use(p):
                    raise PeerSpecViolation(req_id, f"page {p} is in use by the guest: {why}")
        for p in bits(pages):
            addr = p << VIRTIO_BALLOON_PFN_SHIFT
            if fill is None:
                self.mem.fill(addr, BALLOON_PAGE_SIZE, 0)
            else:
                self.mem.write(addr, fill)
        self.touched.append(Touch(pages, req_id, why))

    def _on_inflateq(self, chain: Chain) -> int:
        mask = 0
        for p in self._pfns_untrusted(chain, "inflateq"):
            if self.ballooned >> p & 1:
                raise PeerSpecViolation("BAL-OP-DRV-6", f"inflate of PFN {p:#x}, already in the balloon: the "
                                        "driver took a balloon page back without a deflate request")
            mask |= 1 << p
        self.ballooned |= mask
        self._touch(mask, None, "BAL-OP-DRV-9", "inflated page discarded before the inflate ack")
        return 0

    def _on_deflateq(self, chain: Chain) -> int:
        mask = 0
        for p in self._pfns_untrusted(chain, "deflateq"):
            if not self.ballooned >> p & 1:
                raise PeerSpecViolation("BAL-OP-DRV-10", f"deflate of PFN {p:#x}, which is not in the balloon")
            mask |= 1 << p
        remaining = (self.ballooned & ~mask).bit_count()
        if not self.negotiated_has(F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM) and remaining < self._target_floor:
            raise PeerSpecViolation("BAL-OP-DRV-4", f"deflate to {remaining} pages while num_pages has been "
                                    f"at least {self._target_floor}")
        self.ballooned &= ~mask
        if self.negotiated_has(F.VIRTIO_BALLOON_F_MUST_TELL_HOST):
            # BAL-OP-DEV-2: with MUST_TELL_HOST the page is the device's until this ack.
            self._touch(mask, None, "BAL-OP-DRV-7", "deflated page replaced by a fresh one before the ack")
        return 0

    def _on_statsq(self, chain: Chain) -> int | None:
        if self.stats_held is not None:
            raise PeerSpecViolation("BAL-ST-DRV-1", "a second statsq buffer while the device holds one")
        n = chain.readable_len
        if chain.writable or n % VIRTIO_BALLOON_STAT_SIZE:
            raise PeerSpecViolation("BAL-ST-DRV-5", f"stats buffer of {n} readable, {chain.writable_len} "
                                    f"writable bytes is not a whole number of 10-byte entries")
        entries = [_STAT.unpack_from(chain.read_all(self.mem), o) for o in range(0, n, _STAT.size)]
        tags = frozenset(t for t, _ in entries)
        if self.stats_tags is not None and tags != self.stats_tags:
            raise PeerSpecViolation("BAL-ST-DRV-8", f"stats tags {sorted(tags)} differ from the first buffer's "
                                    f"{sorted(self.stats_tags)}")
        self.stats_tags = tags
        # BAL-ST-DEV-1 / -2: unknown tags are ignored; order does not matter.
        self.stats = {t: v for t, v in entries if t in KNOWN_STAT_TAGS}
        self.stats_updates += 1
        if self._stats_requested:
            self._stats_requested = False
            return 0
        self.stats_held = chain
        return None  # held until the host asks for fresh statistics

    def _on_reporting_vq(self, chain: Chain) -> int:
        mask = 0
        for b in chain.writable + chain.readable:  # AMB-REPORT-DIRECTION: Linux uses in-buffers
            if b.addr % BALLOON_PAGE_SIZE or b.len % BALLOON_PAGE_SIZE or not self.mem.contains(b.addr, b.len):
                raise PeerSpecViolation("BAL-FPR-DRV-5", f"report buffer [{b.addr:#x}, +{b.len}) is not whole "
                                        "pages of guest memory")
            mask |= range_mask(b.addr // BALLOON_PAGE_SIZE, b.len // BALLOON_PAGE_SIZE)
        poison = self.poison_val
        fill = None
        if poison is not None:
            fill = poison_pattern(poison)
            for p in bits(mask):
                if self.guest_in_use is not None and self.guest_in_use(p):
                    raise PeerSpecViolation("BAL-FPR-DRV-3", f"reported page {p} is in use by the guest before "
                                            "the report was acknowledged")
                if self.mem.read(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) != fill:
                    raise PeerSpecViolation("BAL-FPR-DRV-2", f"reported page {p} does not hold poison_val "
                                            f"{poison:#010x}")
        self.reported |= mask
        self._touch(mask, fill, "BAL-FPR-DRV-3", "reported page discarded before the report ack")
        return 0

