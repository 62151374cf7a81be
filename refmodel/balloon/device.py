"""The reference virtio-balloon device (§5.5), seen through a virtio transport. Sans-I/O.

Driver-facing calls (``write_status``, ``read_config``, ``enable_queue``, ``notify``, ...) are events
in; used-buffer and configuration-change interrupts are effects out (:meth:`take_interrupts`).
Host-facing calls (``set_target``, ``hint_start``, ``request_stats``, ...) are what a VMM does.
The device does its queue work only in :meth:`run`, so a test can place driver actions between a
buffer being made available and the device acting on it.

The device is deliberately the *strictest* peer the spec allows:

* every driver mistake it can see sets DEVICE_NEEDS_RESET, sends a configuration change notification
  when DRIVER_OK is set (STATUS-DEV-2, STATUS-DEV-3), raises :class:`PeerSpecViolation` and latches ERROR
  until the driver resets the device;
* it changes page contents at the latest moment the spec lets it (inflate: discard; deflate with
  MUST_TELL_HOST: fresh page before the ack; report: discard or ``poison_val``), and records each
  change in :attr:`touched` with the requirement a driver breaks if that page was in use.

:class:`BalloonDevice` holds the transport (features, status, config, queues, interrupts) and composes
one part per operation: :mod:`~refmodel.balloon.inflate`, :mod:`~refmodel.balloon.stats`,
:mod:`~refmodel.balloon.hinting`, :mod:`~refmodel.balloon.reporting`, :mod:`~refmodel.balloon.poison`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs

from refmodel.balloon.config import BalloonConfigSpace
from refmodel.balloon.constants import BALLOON_PAGE_SIZE, VIRTIO_BALLOON_PFN_SHIFT
from refmodel.balloon.hinting import HintingDevice
from refmodel.balloon.inflate import InflateDevice
from refmodel.balloon.poison import PoisonDevice
from refmodel.balloon.queues import BALLOON_QUEUES, QueueNumbering, balloon_queue_indices
from refmodel.balloon.reporting import ReportingDevice
from refmodel.balloon.stats import KNOWN_STAT_TAGS, StatsDevice
from refmodel.capabilities import Capability
from refmodel.errors import PeerSpecViolation, SpecViolation, Sticky, guarded
from refmodel.system.guest import bits
from refmodel.virtio.features import Feature, check_negotiation, has, mask_of
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.rings import PACKED, Ring, ring_for
from refmodel.virtio.status import STATUS_TRANSITIONS, DeviceStatusMachine, Role, StatusEvent
from refmodel.virtio.transport import Interrupts
from refmodel.virtio.virtq import QueueAddresses

F = Feature
DEFAULT_OFFER = mask_of([
    F.VIRTIO_F_VERSION_1, F.VIRTIO_F_EVENT_IDX, F.VIRTIO_F_INDIRECT_DESC,
    F.VIRTIO_BALLOON_F_MUST_TELL_HOST, F.VIRTIO_BALLOON_F_STATS_VQ, F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
    F.VIRTIO_BALLOON_F_FREE_PAGE_HINT, F.VIRTIO_BALLOON_F_PAGE_POISON, F.VIRTIO_BALLOON_F_PAGE_REPORTING,
])
#: Largest queue size per queue (QEMU: 1024 for free_page_vq, 128 for the rest; smaller here).
DEFAULT_QUEUE_MAX = {q.name: 64 for q in BALLOON_QUEUES} | {"reporting_vq": 32}
#: The queues :meth:`BalloonDevice.run` serves chain by chain, deflateq first (AMB-OP-QUEUE-ORDER): without
#: MUST_TELL_HOST a driver may inflate a page again right after queueing its deflate; a pending deflate
#: always refers to an earlier inflate. free_page_vq is the hinting part's, served after these.
CHAIN_QUEUES = tuple(sorted((q.name for q in BALLOON_QUEUES if q.name != "free_page_vq"),
                            key=lambda name: name != "deflateq"))

__all__ = ["BalloonDevice", "CHAIN_QUEUES", "DEFAULT_OFFER", "DEFAULT_QUEUE_MAX", "KNOWN_STAT_TAGS", "Touch"]

#: The field :meth:`BalloonDevice.notify_config_change` names for DEVICE_NEEDS_RESET (STATUS-DEV-3).
NEEDS_RESET_FIELD = "device_status"


def needs_reset_on_breach(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A driver breach seen in ``fn`` asks for a reset before it is raised (STATUS-DEV-2)."""
    @functools.wraps(fn)
    def wrapper(self: BalloonDevice, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except PeerSpecViolation as e:
            self._enter_needs_reset(e)
            raise
    return wrapper


@attrs.frozen
class Touch:
    """The device changed ``pages``; a driver that was using one of them broke ``req_id``."""

    pages: int
    req_id: str
    why: str


class BalloonDevice(InflateDevice, StatsDevice, HintingDevice, ReportingDevice, PoisonDevice, Sticky):
    """One balloon device instance over ``mem`` (the guest's RAM, shared with the driver)."""

    #: Host-side controls and observations this device offers (the suite skips what is missing).
    capabilities = frozenset({Capability.HINTING, Capability.HINT_STOP, Capability.HINTED_PAGES,
                              Capability.STATS, Capability.PER_QUEUE_INTERRUPTS})

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
        self.target = 0
        #: The first driver breach since the device was made; a reset clears the latch, not this.
        self.breach: PeerSpecViolation | None = None
        self.reset_state()

    def _map_queues(self, negotiated: int) -> None:
        # Which transport index is which queue; an absent queue has no index (AMB-VQ-NUMBERING).
        self.index_of = balloon_queue_indices(self.numbering, self.offered, negotiated)
        self.name_of = {i: n for n, i in self.index_of.items()}

    def reset_state(self) -> None:
        """Everything a reset forgets (an override point: a profile adds its own state)."""
        self._map_queues(self.offered)
        self.status = DeviceStatusMachine(Role.DEVICE)
        self.config = BalloonConfigSpace(self.offered, Role.DEVICE)
        self.config.device_set("num_pages", self.target)
        self.driver_features = 0
        self.negotiated: int | None = None
        self.queues: dict[str, Any] = {}  # the negotiated ring's device-side queues (refmodel.virtio.rings)
        self.touched: list[Touch] = []
        self._irq_queues: set[int] = set()
        self.kicked_at: dict[str, int] = {}  # queue -> avail idx at its last available buffer notification
        self._irq_config = False
        self._reset_inflate()
        self._reset_stats()
        self._reset_hinting()
        self._reset_reporting()
        self._reset_poison()
        self._reset_error()

    def negotiated_has(self, feature: Feature) -> bool:
        return self.negotiated is not None and has(self.negotiated, feature)

    @property
    def ring(self) -> Ring:
        """The virtqueue layout negotiated: packed with VIRTIO_F_RING_PACKED, else split."""
        return ring_for(self.negotiated)

    @property
    def error(self) -> SpecViolation | None:
        """The latched violation; after a reset cleared the latch, still the first breach (a harness
        that reads it after a driver's step must not miss one the driver reset away)."""
        return self._error if self._error is not None else self.breach

    def _enter_needs_reset(self, cause: PeerSpecViolation) -> None:
        """The driver broke ``cause``: DEVICE_NEEDS_RESET (STATUS-DEV-2) and, with DRIVER_OK, a
        configuration change notification after it (STATUS-DEV-3). The latch stays until a reset."""
        if self.breach is None:
            self.breach = cause
        if (self.status.state, StatusEvent.SET_NEEDS_RESET) not in STATUS_TRANSITIONS:
            return  # nothing to reset yet (RESET, FEATURES_CHECK) or already asked (or FAILED)
        self.status.process(StatusEvent.SET_NEEDS_RESET)
        if self.status.driver_ok:
            self.notify_config_change(NEEDS_RESET_FIELD)

    # -- transport: features and status (§2.1, §2.2, §3.1) ---------------------------------------
    def read_device_features(self) -> int:
        return self.offered

    @needs_reset_on_breach
    @guarded
    def write_driver_features(self, value: int) -> None:
        if self.status.state.name != "DRIVER_LOADED":
            raise PeerSpecViolation("INIT-DRV-3" if self.negotiated is not None else "INIT-DRV-1",
                                    f"driver features written in status state {self.status.state.name}")
        self.driver_features = value

    def read_status(self) -> int:
        return self.status.status

    def write_status(self, value: int) -> None:
        if value == 0 and self._error is not None:
            self.reset_state()  # the way back from DEVICE_NEEDS_RESET (§2.1.2, §2.4) clears the latch
            return
        self._write_status(value)

    @needs_reset_on_breach
    @guarded
    def _write_status(self, value: int) -> None:
        events = self.status.driver_write(value)
        for ev in events:
            if ev is StatusEvent.RESET:
                self.reset_state()
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
                self._check_poison_written()
                self.config.driver_ok()
                self._start_hinting()

    # -- transport: config space (§2.5, §5.5.4) ----------------------------------------------------
    def config_generation(self) -> int:
        return self.config.generation

    @needs_reset_on_breach
    @guarded
    def read_config(self, offset: int, size: int) -> int:
        return self.config.driver_read(offset, size)

    @needs_reset_on_breach
    @guarded
    def write_config(self, offset: int, size: int, value: int) -> None:
        self.config.driver_write(offset, size, value)
        self._note_config_write(offset, size)

    def _config_changed(self, before: int, field: str) -> None:
        if self.config.generation != before and self.status.driver_ok:
            self.notify_config_change(field)

    def notify_config_change(self, field: str) -> None:
        """The device changed ``field``: a configuration change notification (NOTIFY-DEV-D1); for
        :data:`NEEDS_RESET_FIELD`, it set DEVICE_NEEDS_RESET (STATUS-DEV-3).

        Override point.
        """
        self._irq_config = True

    # -- transport: queues and interrupts (§2.7, §4.1.5.1.3) -----------------------------------------
    def queue_max_size(self, index: int) -> int:
        """0 when the device has no queue at ``index``."""
        name = self.name_of.get(index)
        return self.queue_max[name] if name is not None else 0

    @needs_reset_on_breach
    @guarded
    def enable_queue(self, index: int, size: int, addrs: QueueAddresses) -> None:
        name = self.name_of.get(index)
        if self.status.state.name != "FEATURES_OK":
            raise PeerSpecViolation("INIT-DRV-1", f"queue {index} set up in status state "
                                    f"{self.status.state.name}")
        if name is None or size > self.queue_max[name]:
            raise PeerSpecViolation("INIT-DRV-1", f"queue {index} of size {size}: the device offers "
                                    f"{self.queue_max_size(index)} entries there")
        self.queues[name] = self.make_queue(name, self.mem, addrs, size,
                                            event_idx=self.negotiated_has(F.VIRTIO_F_EVENT_IDX),
                                            indirect_desc=self.negotiated_has(F.VIRTIO_F_INDIRECT_DESC))

    def make_queue(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The device's side of queue ``name`` on the negotiated ring (:attr:`ring`), given the arguments
        its queue class takes (:class:`~refmodel.virtio.split.device.SplitQueueDevice` or
        :class:`~refmodel.virtio.packed.device.PackedQueueDevice`). A packed queue also checks that the
        driver leaves what it made available alone (PACKED-DRV-2, PACKED-DRV-D9): the strictest peer.

        Override point.
        """
        ring = self.ring
        if ring is PACKED:
            kwargs.setdefault("check_driver_writes", True)
        return ring.device(*args, **kwargs)

    @needs_reset_on_breach
    @guarded
    def notify(self, index: int) -> None:
        if not self.status.driver_ok:
            raise PeerSpecViolation("INIT-DRV-5", f"available buffer notification on queue {index} "
                                    "before DRIVER_OK")
        name = self.name_of.get(index)
        if name not in self.queues:
            raise PeerSpecViolation("INIT-DRV-5", f"notification for queue {index}, which is not enabled")
        q = self.queues[name]
        self.kicked_at[name] = q.avail_mark()  # how far the driver had made buffers available

    def signal_used(self, name: str) -> None:
        """A used buffer notification for queue ``name`` if the driver wants one now (§2.7.7.2)."""
        if self.queues[name].notify_needed():
            self._irq_queues.add(self.index_of[name])

    def take_interrupts(self) -> Interrupts:
        irq = Interrupts(frozenset(self._irq_queues), self._irq_config)
        self._irq_queues.clear()
        self._irq_config = False
        return irq

    # -- the device's own work ------------------------------------------------------------------------
    @needs_reset_on_breach
    @guarded
    def run(self) -> None:
        """Consume everything available on every queue (only after DRIVER_OK: STATUS-DEV-1)."""
        if not self.status.driver_ok:
            return
        for name in CHAIN_QUEUES:
            if name in self.queues:
                self.serve_queue(name)
        self._end_inflate_run()
        self._serve_hints()

    def serve_queue(self, name: str) -> None:
        """Hand each available chain of ``name`` to ``on_<name>``; return it with the used length that
        gives, or hold it if that is None."""
        q = self.queues[name]
        handler = getattr(self, f"on_{name}")
        while (chain := q.pop()) is not None:
            used = handler(chain)
            if used is not None:
                q.add_used(chain.head, used)
        q.set_avail_notifications(True)  # avail_event = next index: a kick-driven VMM needs the kick
        self.signal_used(name)

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
