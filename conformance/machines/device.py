"""A device under test, driven by the reference driver and compared with the model.

The device is reached only through its transport calls (:class:`~conformance.adapters.DeviceUnderTest`)
and the guest memory it shares with the reference driver. Every observation is checked: the used
rings by the reference driver's parsers, interrupts against the notification rules, the config space
against the hinting handshake, and the guest's pages against what the workload wrote.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from refmodel.balloon.device import KNOWN_STAT_TAGS
from refmodel.balloon.driver import CFG_CMD_ID, SUPPORTED, STATS_TAGS, BalloonDriver
from refmodel.balloon.config import CONFIG_FIELDS
from refmodel.virtio.constants import DeviceStatus
from refmodel.balloon.constants import (BALLOON_PAGE_SIZE, VIRTIO_BALLOON_CMD_ID_DONE,
    VIRTIO_BALLOON_CMD_ID_STOP)
from refmodel.virtio.features import Feature, check_negotiation, check_offer, has, names_of
from refmodel.balloon.queues import QueueNumbering
from refmodel.system.guest import bits
from refmodel.system.guest_os import GuestOS, poison_pattern
from refmodel.balloon.hinting import DriverHintState
from refmodel.virtio.split.layout import AVAIL_FLAGS, USED_IDX, used_event_offset
from refmodel.virtio.virtq import virtq_need_event

from conformance.interface import Capability, declared_capabilities
from conformance.checks import RING_DEVICE_CHECKS
from conformance.harness import Guarded, ImplementationError
from conformance.machines.base import GuestMachine, live, note, skip_if_ended, started

F = Feature
OPTIONAL = (F.VIRTIO_BALLOON_F_MUST_TELL_HOST, F.VIRTIO_BALLOON_F_STATS_VQ, F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
            F.VIRTIO_BALLOON_F_FREE_PAGE_HINT, F.VIRTIO_BALLOON_F_PAGE_POISON, F.VIRTIO_BALLOON_F_PAGE_REPORTING,
            F.VIRTIO_F_EVENT_IDX, F.VIRTIO_F_INDIRECT_DESC)
#: Stats entries in an odd order with a tag no device knows (BAL-ST-DEV-1, BAL-ST-DEV-2).
UNKNOWN_STAT_TAG = 0x7F
DEVICE_STATS_TAGS = (STATS_TAGS[3], UNKNOWN_STAT_TAG, *reversed(STATS_TAGS[:3]), *STATS_TAGS[4:])
N_PAGES = 160
CYCLES = st.integers(0, 3)  # device/driver cycles after a host action
OWED_LOOKS = 3  # interrupt collections an asynchronous device gets to deliver a due notification


class DeviceConformance(GuestMachine):
    """Subclass with ``factory = staticmethod(lambda mem: device)``; see :mod:`conformance.registry`."""

    # -- boot -------------------------------------------------------------------------------------
    @initialize(drop=st.frozensets(st.sampled_from(OPTIONAL), max_size=3), queue_size=st.sampled_from([2, 4, 8, 16]))
    def boot(self, drop: frozenset[Feature], queue_size: int) -> None:
        factory = type(self).factory
        if getattr(factory, "provides_memory", False):  # a VMM: its RAM is the guest memory
            raw = factory()
            self.os = GuestOS.over(raw.mem, reserved=getattr(raw, "reserved_pages", 0))
        else:
            self.os = GuestOS(N_PAGES)
            raw = factory(self.os.mem)
        self.caps = declared_capabilities(raw)
        self.per_queue_irq = Capability.PER_QUEUE_INTERRUPTS in self.caps
        self.numbering = getattr(raw, "numbering", QueueNumbering.COMPACT_BY_OFFERED)
        self.dev: Any = Guarded(raw, "device", self.timeout)
        note(f"device {type(raw).__name__}; driver declines {sorted(f.name for f in drop)}; queues of {queue_size}")
        with self.tolerate():
            self.offered = self.dev.read_device_features()
            self.R.features |= self.offered
            self._check_offer()
            self._check_config_before_features_ok()
            self.drop, self.queue_size = drop, queue_size
            self._probe()
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
                except ImplementationError as e:
                    self.R.check("CFG-DEV-1", False, f"reading {f.name} before FEATURES_OK: {e}")
        self.R.saw("CFG-DEV-1")

    def _probe(self) -> None:
        self.drv = BalloonDriver(features=SUPPORTED & ~sum(f.mask for f in self.drop), numbering=self.numbering,
                                 queue_size=self.queue_size, stats_tags=DEVICE_STATS_TAGS,
                                 before_driver_ok=self._before_driver_ok)
        accepted = self.offered & self.drv.features
        ok = self.drv.probe(self.dev, self.os)
        if check_negotiation(self.offered, accepted).driver_valid:
            self.R.check("FEAT-DEV-2", ok, f"FEATURES_OK refused for the valid subset {names_of(accepted)}")
        self.features = self.drv.negotiated
        self.R.saw("BAL-VQ-D1")
        self.R.saw("SPLIT-DEV-D4")
        self.last_signalled = {name: 0 for name in self.drv.vqs}
        self.owed: dict[str, tuple[int, int, int]] = {}  # queue -> (used idx then, now, looks so far)
        self.ids_since_stop: set[int] = set()
        self.stops_seen = 0
        self.current_id: int | None = None
        self.mark: dict[int, str] = {}  # page -> the device requirement that protects it now
        self.frozen: dict[int, tuple[str, bytes]] = {}  # free pages the device gave back, as it left them
        note(f"negotiated {names_of(self.features)}")

    def _before_driver_ok(self, drv: BalloonDriver) -> None:
        self.dev.run()
        irq = self.dev.take_interrupts()
        used = {n: self._used_idx(n) for n in drv.vqs}
        self.R.check("STATUS-DEV-1", not any(used.values()) and not irq.queues,
                     f"before DRIVER_OK: used idx {used}, interrupts for queues {sorted(irq.queues)}")

    # -- helpers ---------------------------------------------------------------------------------------
    def has(self, feature: Feature) -> bool:
        return has(self.features, feature)

    def _used_idx(self, name: str) -> int:
        vq = self.drv.vqs[name]
        return self.os.mem.read_u16(vq.addrs.used + USED_IDX)

    def _collect_interrupts(self) -> None:
        """Take the device's interrupts, check them against §2.7.7/2.7.10, deliver them to the driver."""
        irq = self.dev.take_interrupts()
        queues, config = getattr(irq, "queues", None), getattr(irq, "config", None)
        if not isinstance(queues, (set, frozenset)) or not isinstance(config, bool):
            raise ImplementationError("device.take_interrupts", f"returned {irq!r}")
        for name, vq in self.drv.vqs.items():
            new, old = self._used_idx(name), self.last_signalled[name]
            notified = self.drv.index_of[name] in queues
            if new == old:
                if name in self.owed and not self.per_queue_irq:
                    self._owed_check(name, vq, old, new, notified)
                continue
            if not self.per_queue_irq:  # e.g. INTx/ISR: "some queue" is all we learn, and maybe late
                self._owed_check(name, vq, old, new, notified)
                self.last_signalled[name] = new
                continue
            if vq.event_idx:
                event = self.os.mem.read_u16(vq.addrs.avail + used_event_offset(vq.queue_size))
                if virtq_need_event(event, new, old):
                    self.R.check("SPLIT-DEV-12", notified, f"{name}: used idx {old}->{new} crossed used_event "
                                 f"{event}, no notification")
                else:
                    self.R.check("SPLIT-DEV-13", not notified, f"{name}: notified though used idx {old}->{new} "
                                 f"did not cross used_event {event}")
            else:
                self.R.saw("SPLIT-DEV-8")  # used_event holds whatever used_notifications left there
                flags = self.os.mem.read_u16(vq.addrs.avail + AVAIL_FLAGS)
                if flags:
                    self.R.check("SPLIT-DEV-9", not notified, f"{name}: notified with avail flags {flags}")
                else:
                    self.R.check("SPLIT-DEV-10", notified, f"{name}: used idx {old}->{new} with avail flags 0, "
                                 "no notification")
            self.last_signalled[name] = new
        self.drv.interrupt(queues, config)
        self._pending_config = getattr(self, "_pending_config", False) or config

    def _owed_check(self, name: str, vq: Any, old: int, new: int, notified: bool) -> None:
        """An asynchronous device may signal after we looked: a notification it owes may come with the
        next collection; one still missing then is a failure."""
        req = "SPLIT-DEV-10" if not vq.event_idx else "SPLIT-DEV-12"
        owed = self.owed.pop(name, None)
        if notified:
            self.R.saw(req)
            return
        if owed is not None:
            first, _, looks = owed
            if looks >= OWED_LOOKS:
                self.R.check(req, False, f"{name}: used idx moved from {first} to {new} with a notification due "
                             f"and none came in {looks} looks")
            self.owed[name] = (first, new, looks + 1)
        elif new != old and self._notification_required(vq, new, old):
            self.owed[name] = (old, new, 1)

    def _notification_required(self, vq: Any, new: int, old: int) -> bool:
        if vq.event_idx:
            event = self.os.mem.read_u16(vq.addrs.avail + used_event_offset(vq.queue_size))
            return virtq_need_event(event, new, old)
        return not self.os.mem.read_u16(vq.addrs.avail + AVAIL_FLAGS)

    def _device_run(self) -> None:
        self.dev.run()
        self._collect_interrupts()
        self._check_hints()
        self._check_active_value()

    def _check_active_value(self) -> None:
        """BAL-FPH-D5: mid-round, the field still names the round (a polling driver would stop otherwise)."""
        hint = self.drv.hint
        if hint is None or self.current_id is None or hint.served != self.current_id:
            return
        if hint.state is not DriverHintState.HINTING:
            return  # the driver sent STOP: the device may now show STOP
        cid = self.dev.read_config(CFG_CMD_ID, 4)
        self.R.check("BAL-FPH-D5", cid == self.current_id, f"mid-round (the driver echoed {self.current_id} and "
                     f"is still hinting) free_page_hint_cmd_id reads {cid}")

    def _driver_run(self) -> None:
        for req in RING_DEVICE_CHECKS:
            self.R.saw(req)
        pages = self.os.pages
        hinted, isolated, released = pages.hinted, pages.isolated, len(self.drv.released)
        self.drv.run()
        for p in bits(hinted & ~pages.hinted):
            self._freeze(p, "BAL-FPH-DEV-5")
        poison = self.drv.poison_val if self.has(F.VIRTIO_BALLOON_F_PAGE_POISON) else None
        for p in bits(isolated & ~pages.isolated):
            if poison is not None:
                self.R.check("BAL-FPR-DEV-2", self.os.holds(p, poison_pattern(poison)),
                             f"reported page {p} does not hold poison_val {poison:#010x} after the ack")
            self._freeze(p, "BAL-FPR-DEV-D1")
        for p in self.drv.released[released:]:
            self._freeze(p, "BAL-OP-DEV-D1")
        if self.drv.hint is not None and self.drv.hint.stops_returned != self.stops_seen:
            self.stops_seen = self.drv.hint.stops_returned
            self.ids_since_stop.clear()  # BAL-FPH-DEV-2: the device has received a STOP

    def _freeze(self, page: int, req_id: str) -> None:
        """The device gave ``page`` back: from now on it must not change it (``req_id``)."""
        self.mark[page] = req_id
        self.frozen[page] = (req_id, self.os.mem.read(page * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE))

    def _check_hints(self) -> None:
        if Capability.HINTED_PAGES not in self.caps or self.drv.hint is None or self.current_id is None:
            return
        applied = self.dev.hinted_pages()
        allowed = self.drv.hint.sent_under.get(self.current_id, 0)
        stale = applied & ~allowed
        self.R.check("BAL-FPH-DEV-3", not stale, f"pages {bits(stale)[:8]} applied as hints, but they were not "
                     f"hinted under the current command ID {self.current_id}")

    def _config_op(self, op: str, *args: Any) -> int:
        """A host operation that changes config: the generation must move and the driver be told."""
        before = self.dev.config_generation()
        snapshot = [self.dev.read_config(f.offset, f.size) for f in self._fields()]
        getattr(self.dev, op)(*args)
        after = [self.dev.read_config(f.offset, f.size) for f in self._fields()]
        irq_before = getattr(self, "_pending_config", False)
        self._pending_config = False
        self._collect_interrupts()
        if snapshot != after:
            self.R.check("CFG-DEV-2", self.dev.config_generation() != before,
                         f"{op}: config changed {snapshot} -> {after}, generation stayed {before}")
            self.R.check("NOTIFY-DEV-D1", self._pending_config or irq_before,
                         f"{op}: config changed {snapshot} -> {after} without a configuration change notification")
        return after

    def _fields(self) -> list:
        return [f for f in CONFIG_FIELDS if f.feature is None or has(self.features, f.feature)]

    # -- rules: the device and the driver run -----------------------------------------------------------
    @precondition(started)
    @rule(rounds=st.integers(1, 3))
    @skip_if_ended
    def cycle(self, rounds: int) -> None:
        """The device does its work, interrupts reach the driver, the driver does its work."""
        with self.tolerate():
            self._cycles(rounds)
        note(f"cycle x{rounds}: balloon {len(self.drv.balloon)} pages, hinted {self.os.pages.hinted.bit_count()}")

    def _cycles(self, n: int) -> None:
        for _ in range(n):
            self._device_run()
            self._driver_run()

    @precondition(started)
    @rule(num_pages=st.integers(0, 40), cycles=CYCLES)
    @skip_if_ended
    def set_target(self, num_pages: int, cycles: int) -> None:
        with self.tolerate():
            self._config_op("set_target", num_pages)
            self._cycles(cycles)
        note(f"host sets num_pages = {num_pages}, then {cycles} cycle(s)")

    @precondition(started)
    @rule(name=st.sampled_from(["inflateq", "deflateq", "statsq", "free_page_vq", "reporting_vq"]),
          enabled=st.booleans())
    @skip_if_ended
    def used_notifications(self, name: str, enabled: bool) -> None:
        vq = self.drv.vqs.get(name)
        if vq is not None:
            # Entries the device used so far were judged under the old setting: the window restarts.
            self._collect_interrupts()
            self.last_signalled[name] = self._used_idx(name)
            self.owed.pop(name, None)
            vq.set_used_notifications(enabled)
            if not vq.event_idx:  # SPLIT-DEV-8: garbage in used_event must not matter
                self.os.mem.write_u16(vq.addrs.avail + used_event_offset(vq.queue_size), 0x5A5A)
        note(f"driver {'asks for' if enabled else 'suppresses'} used buffer notifications on {name}")

    @precondition(started)
    @rule(name=st.sampled_from(["inflateq", "deflateq", "statsq", "free_page_vq", "reporting_vq"]))
    @skip_if_ended
    def spurious_notify(self, name: str) -> None:
        """An available buffer notification with nothing new (SPLIT-DEV-21)."""
        with self.tolerate():
            if name in self.drv.vqs:
                self.dev.notify(self.drv.index_of[name])
                self.R.saw("SPLIT-DEV-21")
        note(f"driver sends a spurious notification on {name}")

    # -- the guest workload (rules in GuestMachine) --------------------------------------------------
    def _written(self, pages: list[int]) -> None:
        for page in pages:
            self.mark.pop(page, None)  # written after any earlier device ownership ended

    # -- rules: hinting ------------------------------------------------------------------------------------
    def _hinting(self) -> bool:
        return started(self) and self.has(F.VIRTIO_BALLOON_F_FREE_PAGE_HINT) and Capability.HINTING in self.caps

    @precondition(_hinting)
    @rule(cycles=CYCLES)
    @skip_if_ended
    def hint_start(self, cycles: int) -> None:
        with self.tolerate():
            self._config_op("hint_start")
            cid = self.dev.read_config(CFG_CMD_ID, 4)
            self.R.check("BAL-FPH-D1", cid >= 2, f"hint_start published command ID {cid}")
            self.R.check("BAL-FPH-DEV-2", cid not in self.ids_since_stop,
                         f"command ID {cid} reused before the driver's STOP")
            self.ids_since_stop.add(cid)
            self.current_id = cid
            self._cycles(cycles)
            note(f"host starts a hinting round: command ID {cid}, then {cycles} cycle(s)")

    @precondition(lambda self: self._hinting() and Capability.HINT_STOP in self.caps)
    @rule(cycles=CYCLES)
    @skip_if_ended
    def hint_stop(self, cycles: int) -> None:
        with self.tolerate():
            self._config_op("hint_stop")
            cid = self.dev.read_config(CFG_CMD_ID, 4)
            self.R.check("BAL-FPH-DEV-1", cid == VIRTIO_BALLOON_CMD_ID_STOP, f"after hint_stop the ID reads {cid}")
            self.current_id = None
            self._cycles(cycles)
            note(f"host stops hinting (STOP), then {cycles} cycle(s)")

    @precondition(_hinting)
    @rule(cycles=CYCLES)
    @skip_if_ended
    def hint_done(self, cycles: int) -> None:
        with self.tolerate():
            self._config_op("hint_done")
            cid = self.dev.read_config(CFG_CMD_ID, 4)
            if self.current_id is not None:  # a round ran: its pages must be handed back
                self.R.check("BAL-FPH-DEV-6", cid == VIRTIO_BALLOON_CMD_ID_DONE, f"after hint_done the ID reads {cid}")
            self.current_id = None
            self._cycles(cycles)
            note(f"host is done with the hints (DONE), then {cycles} cycle(s)")

    # -- rules: stats, reporting, memory pressure ---------------------------------------------------------
    @precondition(lambda self: started(self) and self.has(F.VIRTIO_BALLOON_F_STATS_VQ) and Capability.STATS in self.caps)
    @rule()
    @skip_if_ended
    def request_stats(self) -> None:
        stats: dict[int, int] = {}
        with self.tolerate():
            self.dev.request_stats()
            self._collect_interrupts()
            for _ in range(2):
                self._device_run()
                self._driver_run()
            stats = self.dev.host_stats()
            if stats:
                unknown = set(stats) - KNOWN_STAT_TAGS
                self.R.check("BAL-ST-DEV-1", not unknown, f"the device kept unknown stats tags {sorted(unknown)}")
                want = {t: v for t, v in self.drv.last_stats.items() if t in KNOWN_STAT_TAGS}
                self.R.check("BAL-ST-DEV-2", stats == want, f"host sees {stats}, the driver sent {want} "
                             "(in another order)")
            note(f"host asks for statistics: {stats}")

    @precondition(lambda self: started(self) and self.has(F.VIRTIO_BALLOON_F_PAGE_REPORTING))
    @rule()
    @skip_if_ended
    def report(self) -> None:
        n = 0
        with self.tolerate():
            n = self.drv.report()
        note(f"driver reports {n} free page(s)")

    @precondition(lambda self: started(self) and self.has(F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM))
    @rule(count=st.integers(1, 8))
    @skip_if_ended
    def oom(self, count: int) -> None:
        n = 0
        with self.tolerate():
            n = self.drv.oom(count)
        note(f"memory pressure: the driver deflates {n} page(s)")

    # -- rules: reset ------------------------------------------------------------------------------------------
    @precondition(started)
    @rule()
    @skip_if_ended
    def reset_and_reprobe(self) -> None:
        with self.tolerate():
            self.dev.write_status(0)
            status = self.dev.read_status()
            self.R.check("RESET-DEV-1", status == 0, f"status reads {status:#x} after writing 0")
            # Snapshot only now: work the device finished before the reset completed is legal.
            before = {n: self._used_idx(n) for n in self.drv.vqs}
            self.dev.run()
            irq = self.dev.take_interrupts()
            after = {n: self._used_idx(n) for n in self.drv.vqs}
            self.R.check("RESET-DEV-2", after == before and not irq,
                         f"after reset: used idx {before} -> {after}, interrupts {irq}")
            self.drv.remove()
            features = self.features
            self._probe()
            self.R.check("FEAT-DEV-4", self.features == features,
                         f"accepted {names_of(features)} before the reset, {names_of(self.features)} after")
        note("driver resets the device and probes again with the same features")

    # -- invariants --------------------------------------------------------------------------------------------
    @invariant()
    def workload_pages_intact(self) -> None:
        if not live(self):
            return
        with self.tolerate():
            for p in self.os.corrupted():
                req = self.mark.get(p, "BAL-OP-DEV-D1")
                self.R.check(req, False, f"workload page {p} changed under the guest")
            free = self.os.pages.free
            for p, (req, data) in list(self.frozen.items()):
                if not free >> p & 1:
                    del self.frozen[p]  # the guest or the driver took it: no longer the device's to leave alone
                elif self.os.mem.read(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) != data:
                    self.R.check(req, False, f"free page {p} changed after the device gave it back")
            for req in {"BAL-OP-DEV-D1", *self.mark.values()}:
                self.R.saw(req)
