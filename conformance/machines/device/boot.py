"""Device boot and negotiation (§3.1.1, §2.2, §6): what the device offers, config before FEATURES_OK,
FEATURES_OK for every valid subset, and nothing used before DRIVER_OK."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize

from refmodel.balloon.config import CONFIG_FIELDS
from refmodel.balloon.driver import STATS_TAGS, SUPPORTED, BalloonDriver
from refmodel.balloon.queues import QueueNumbering
from refmodel.system.guest_os import GuestOS
from refmodel.system.provenance import PageHistory
from refmodel.virtio.constants import DeviceStatus
from refmodel.virtio.features import Feature, check_negotiation, check_offer, has, names_of
from refmodel.virtio.rings import ring_for

from conformance.harness import Guarded, ImplementationError, ImplementationGone
from conformance.interface import (Capability, DeclaresNumbering, DeviceUnderTest, InterfaceError,
                                   LagsInterrupts, OwnsGuestMemory, VmmFactory, check_implementation)
from conformance.machines.base import OPTIONAL, note
from conformance.machines.device.canary import CanaryDriver
from conformance.machines.device.base import DeviceMachine

N_PAGES = 160
#: Stats entries in an odd order with a tag no device knows (BAL-ST-DEV-1, BAL-ST-DEV-2).
UNKNOWN_STAT_TAG = 0x7F
DEVICE_STATS_TAGS = (STATS_TAGS[3], UNKNOWN_STAT_TAG, *reversed(STATS_TAGS[:3]), *STATS_TAGS[4:])


def make_device(factory: Any) -> tuple[Any, GuestOS]:
    """The raw device under test and the guest whose memory it shares."""
    if isinstance(factory, VmmFactory) and factory.provides_memory:  # a VMM: its RAM is the guest memory
        raw = factory()
        if not isinstance(raw, OwnsGuestMemory):
            raise InterfaceError(f"device {type(raw).__name__} comes from a VmmFactory but has no mem and "
                                 "reserved_pages (OwnsGuestMemory)")
        return raw, GuestOS.over(raw.mem, reserved=raw.reserved_pages)
    os = GuestOS(N_PAGES)
    return factory(os.mem), os


def queue_numbering(raw: Any) -> QueueNumbering:
    """How the device numbers the balloon queues (DeclaresNumbering); QEMU's reading if it does not say."""
    if not isinstance(raw, DeclaresNumbering):
        return QueueNumbering.COMPACT_BY_OFFERED
    if not isinstance(raw.numbering, QueueNumbering):
        raise InterfaceError(f"device {type(raw).__name__}: numbering must be a QueueNumbering, got "
                             f"{raw.numbering!r}")
    return raw.numbering


class DeviceBoot(DeviceMachine):
    #: The suite's driver (a proposal profile's machine puts its own driver here).
    driver_class: Any = CanaryDriver

    @initialize(drop=st.frozensets(st.sampled_from(OPTIONAL), max_size=3), queue_size=st.sampled_from([2, 4, 8, 16]))
    def boot(self, drop: frozenset[Feature], queue_size: int) -> None:
        raw, self.os = make_device(type(self).factory)
        self.caps = check_implementation(raw, DeviceUnderTest, "device")
        self.per_queue_irq = Capability.PER_QUEUE_INTERRUPTS in self.caps
        self.irq_lag = isinstance(raw, LagsInterrupts) and raw.interrupts_lag is True
        self.numbering = queue_numbering(raw)
        self.dev = Guarded(raw, "device", self.timeout)
        self._pending_config = False
        note(f"device {type(raw).__name__}; driver declines {sorted(f.name for f in drop)}; queues of {queue_size}")
        self.offered = 0
        with self.tolerate():
            self.offered = self.dev.read_device_features()
            self.R.features |= self.offered
            if self.ring == "packed" and not has(self.offered, Feature.VIRTIO_F_RING_PACKED):
                raise InterfaceError("the device does not offer VIRTIO_F_RING_PACKED (bit 34), which --ring "
                                     "packed needs")
            self._check_offer()
            self._check_config_before_features_ok()
            self.drop, self.queue_size = drop, queue_size
            self._probe()
        # Booted even when a known deviation ended the boot (QEMU's timing decides whether one does): the
        # rules stay the same as in a replay without it, and their bodies are skipped (see machines.base.step).
        self.booted = True

    def _check_offer(self) -> None:
        breaches = {b.req_id: b.detail for b in check_offer(self.offered).breaches}
        for req in ("FEAT-DEV-1", "FEAT-DEV-3", "RSV-DEV-1"):
            self.R.check(req, req not in breaches, breaches.get(req, ""))

    def _check_config_before_features_ok(self) -> None:
        self.dev.write_status(0)
        self.dev.write_status(DeviceStatus.ACKNOWLEDGE)
        self.dev.write_status(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER)
        for f in CONFIG_FIELDS:
            if f.feature is None or has(self.offered, f.feature):
                try:
                    self.dev.read_config(f.offset, f.size)
                except ImplementationGone:
                    raise  # a crash or a hang is an error of this step, not a refusal to be read
                except ImplementationError as e:
                    self.R.check("CFG-DEV-1", False, f"reading {f.name} before FEATURES_OK: {e}")
        self.R.saw("CFG-DEV-1")

    def _probe(self) -> None:
        """A fresh reference driver probes the device; every area's bookkeeping starts over."""
        features = SUPPORTED & ~sum(f.mask for f in self.drop)
        if self.ring != "packed":  # a split run keeps split rings even if the device offers packed ones
            features &= ~Feature.VIRTIO_F_RING_PACKED.mask
        self.drv = self.driver_class(features=features, numbering=self.numbering,
                                 queue_size=self.queue_size, stats_tags=DEVICE_STATS_TAGS,
                                 before_driver_ok=self._before_driver_ok)
        accepted = self.offered & self.drv.features
        ok = self.drv.probe(self.dev, self.os)
        if check_negotiation(self.offered, accepted).driver_valid:
            self.R.check("FEAT-DEV-2", ok, f"FEATURES_OK refused for the valid subset {names_of(accepted)}")
        self.features = self.drv.negotiated
        self.R.saw("BAL-VQ-D1")
        self.R.saw(ring_for(self.features).size_req)  # SPLIT-DEV-D4 or PACKED-DEV-D1
        self.last_signalled = {name: 0 for name in self.drv.vqs}
        self.notified_at = {name: 0 for name in self.drv.vqs}
        self.owed = {}
        self.moved_last = False
        self.stray_flag = set()
        self.ids_since_stop = set()
        self.stops_seen = 0
        self.current_id = None
        self.applied_at_end = None
        self.history = PageHistory()
        self.reused = set()
        self.frozen = {}
        self.used_seen = {}
        note(f"negotiated {names_of(self.features)}")

    def _before_driver_ok(self, drv: BalloonDriver) -> None:
        self.dev.run()
        irq = self.dev.take_interrupts()
        used = {n: self._used_idx(n) for n in drv.vqs}
        self.R.check("STATUS-DEV-1", not any(used.values()) and not irq.queues,
                     f"before DRIVER_OK: used idx {used}, interrupts for queues {sorted(irq.queues)}")
