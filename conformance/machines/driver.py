"""A driver under test, hosted on the reference device and compared with the model.

The reference device is the strictest peer the spec allows: every driver mistake it can see raises
the driver's requirement (status, features, config, rings, PFN arrays, stats, hinting, reporting),
and it changes page contents at the latest moment the spec permits, so a driver that hands a page
back too early shows up as a corrupted workload page, attributed to the rule it broke.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.features import Feature, check_negotiation, has, names_of
from refmodel.system.guest import bits
from refmodel.system.guest_os import GuestOS, poison_pattern
from refmodel.balloon.hinting import DeviceHintState

from conformance.interface import Capability, declared_capabilities
from conformance.checks import RING_DRIVER_CHECKS
from conformance.machines.device import OPTIONAL
from conformance.harness import Guarded, ImplementationError
from conformance.machines.base import GuestMachine, live, note, skip_if_ended, started

F = Feature
N_PAGES = 128
SETTLE_CYCLES = 48
CYCLES = st.integers(0, 3)  # device/driver cycles after a host action
#: Negotiation rules that bind the driver (FEAT-DRV-*, RSV-DRV-1, BAL-FB-DRV-1).
UNDEFINED_BIT = 1 << 23  # a balloon-range bit the spec does not define (FEAT-DRV-4)
DRIVER_NEGOTIATION = ("FEAT-DRV-1", "FEAT-DRV-2", "FEAT-DRV-3", "RSV-DRV-1", "BAL-FB-DRV-1")


class DriverConformance(GuestMachine):
    """Subclass with ``factory = staticmethod(lambda: driver)``; see :mod:`conformance.registry`."""

    #: Unchanged cycles in a row that count as quiet (a driver on its own clock needs more than one).
    settle_stable = 1

    @initialize(drop=st.frozensets(st.sampled_from(OPTIONAL), max_size=3), queue_max=st.sampled_from([4, 8, 16, 64]),
                undefined_bit=st.booleans())
    def boot(self, drop: frozenset[Feature], queue_max: int, undefined_bit: bool) -> None:
        self.os = GuestOS(N_PAGES)
        offered = DEFAULT_OFFER & ~sum(f.mask for f in drop) | (UNDEFINED_BIT if undefined_bit else 0)
        names = ("inflateq", "deflateq", "statsq", "free_page_vq", "reporting_vq")
        self.ref = BalloonDevice(self.os.mem, offered, queue_max={n: queue_max for n in names},
                                 guest_in_use=self.os.workload.__contains__)
        raw = type(self).factory()
        self.caps = declared_capabilities(raw)
        self.drv: Any = Guarded(raw, "driver", self.timeout)
        note(f"driver {type(raw).__name__}; device offers {names_of(offered)}; queues of {queue_max}")
        self.left_balloon = 0
        self.done_pending = False
        self.avail_seen: dict[str, int] = {}
        with self.tolerate():
            ok = self._step(self.drv.probe, self.ref, self.os)
            self._check_negotiation(offered, ok)
            self.booted = ok
            self.R.saw("INIT-DRV-1")

    def _check_negotiation(self, offered: int, ok: bool) -> None:
        accepted = self.ref.driver_features
        verdict = check_negotiation(offered, accepted)
        breaches = {b.req_id: b.detail for b in verdict.breaches}
        for req in DRIVER_NEGOTIATION:
            self.R.check(req, req not in breaches, breaches.get(req, ""))
        if offered & UNDEFINED_BIT:
            self.R.check("FEAT-DRV-4", ok or not verdict.driver_valid, "the driver gave up on a device offering an "
                         "undefined feature bit")
        if not ok:
            self.R.check("INIT-DRV-4", self.ref.status.state.name != "FEATURES_OK" or not verdict.driver_valid,
                         "the driver gave up although the device kept FEATURES_OK")
        self.features = self.ref.negotiated or 0
        self.R.features |= self.features
        note(f"negotiated {names_of(self.features)}")

    # -- helpers ---------------------------------------------------------------------------------------
    def has(self, feature: Feature) -> bool:
        return has(self.features, feature)

    def _step(self, fn: Any, *args: Any) -> Any:
        """Call the driver; a violation the reference device latched is the driver's, even if swallowed."""
        try:
            return fn(*args)
        except ImplementationError:
            if getattr(self.ref, "error", None) is not None:
                raise self.ref.error from None
            raise
        finally:
            if getattr(self.ref, "error", None) is not None:
                err = self.ref.error
                raise PeerSpecViolation(err.req_id, err.detail)

    def _cycle(self) -> None:
        before = self.ref.ballooned
        self._step(self.ref.run)  # a breach latched while the device served a real driver's kick shows here
        irq = self.ref.take_interrupts()
        self._step(self.drv.interrupt, irq.queues, irq.config)
        self._step(self.drv.run)
        self.left_balloon |= before & ~self.ref.ballooned
        self._check_kicks()
        self._exercised()

    def _check_kicks(self) -> None:
        """SPLIT-DRV-21: without EVENT_IDX, used flags 0 (the reference device never sets NO_NOTIFY), every
        publication of new available entries is followed by a notification before the driver stops."""
        for name, q in self.ref.queues.items():
            if q.event_idx:
                continue
            avail = self.ref.mem.read_u16(q.addrs.avail + 2)
            seen = self.avail_seen.get(name, 0)
            if avail == seen:
                continue
            self.avail_seen[name] = avail
            if name == "statsq" and seen == 0 and self.ref.kicked_at.get(name) is None:
                continue  # published before DRIVER_OK, where notifying is forbidden (INIT-DRV-5)
            self.R.check("SPLIT-DRV-21", self.ref.kicked_at.get(name) == avail,
                         f"{name}: avail idx {seen}->{avail} with used flags 0 and no notification after it")

    def _exercised(self) -> None:
        """The reference device checked every byte the driver sent: name what that traffic covered."""
        ref, saw = self.ref, self.R.saw
        for req in (*RING_DRIVER_CHECKS, "STATUS-DRV-1", "STATUS-DRV-2", "INIT-DRV-2", "INIT-DRV-3",
                    "INIT-DRV-5", "CFG-DRV-3", "BAL-CFG-D1", "BAL-CFG-D2"):
            saw(req)
        if ref.ballooned or self.left_balloon:
            for req in ("BAL-OP-D1", "BAL-OP-DRV-10", "BAL-OP-DRV-4", "BAL-OP-DRV-6"):
                saw(req)
        if ref.stats_updates:
            for req in ("BAL-ST-DRV-1", "BAL-ST-DRV-5", "BAL-ST-DRV-8"):
                saw(req)
        if ref.hint is not None and ref.hint.echoed:
            for req in ("BAL-FPH-DRV-1", "BAL-FPH-DRV-2", "BAL-FPH-DRV-3", "BAL-FPH-D2"):
                saw(req)
        if self.has(F.VIRTIO_BALLOON_F_PAGE_POISON):
            saw("BAL-PP-DRV-2")
            saw("BAL-PP-DRV-3")
        if ref.reported:
            saw("BAL-FPR-DRV-5")
            if self.has(F.VIRTIO_BALLOON_F_PAGE_POISON):
                saw("BAL-FPR-DRV-2")

    def _host(self, op: str, *args: Any, cycles: int = 0) -> None:
        with self.tolerate():
            getattr(self.ref, op)(*args)
            irq = self.ref.take_interrupts()
            self._step(self.drv.interrupt, irq.queues, irq.config)
            for _ in range(cycles):
                self._cycle()

    # -- rules --------------------------------------------------------------------------------------------
    @precondition(started)
    @rule(rounds=st.integers(1, 3))
    @skip_if_ended
    def cycle(self, rounds: int) -> None:
        with self.tolerate():
            for _ in range(rounds):
                self._cycle()
        note(f"cycle x{rounds}: balloon {self.ref.ballooned.bit_count()} pages, actual {self.ref.config.get('actual')}")

    @precondition(started)
    @rule(config=st.booleans())
    @skip_if_ended
    def spurious_interrupt(self, config: bool) -> None:
        """Interrupts for every queue (and maybe config) with nothing new (SPLIT-DRV-16)."""
        with self.tolerate():
            self._step(self.drv.interrupt, frozenset(range(5)), config)
            self._step(self.drv.run)
            self.R.saw("SPLIT-DRV-16")
        note(f"spurious interrupt for every queue{' and config' if config else ''}")

    @precondition(started)
    @rule(num_pages=st.integers(0, 40), cycles=CYCLES)
    @skip_if_ended
    def set_target(self, num_pages: int, cycles: int) -> None:
        self._host("set_target", num_pages, cycles=cycles)
        note(f"host sets num_pages = {num_pages}, then {cycles} cycle(s)")


    def _hinting(self) -> bool:
        return started(self) and self.has(F.VIRTIO_BALLOON_F_FREE_PAGE_HINT)

    @precondition(_hinting)
    @rule(cycles=CYCLES)
    @skip_if_ended
    def hint_start(self, cycles: int) -> None:
        self._host("hint_start", cycles=cycles)
        note(f"host publishes command ID {self.ref.hint.cmd_id if self.ref.hint else None}, {cycles} cycle(s)")

    @precondition(_hinting)
    @rule(cycles=CYCLES)
    @skip_if_ended
    def hint_stop(self, cycles: int) -> None:
        self._host("hint_stop", cycles=cycles)
        note(f"host publishes STOP, {cycles} cycle(s)")

    @precondition(_hinting)
    @rule(cycles=CYCLES)
    @skip_if_ended
    def hint_done(self, cycles: int) -> None:
        self._host("hint_done", cycles=cycles)
        self.done_pending = True
        note(f"host publishes DONE, {cycles} cycle(s)")

    @precondition(lambda self: started(self) and self.has(F.VIRTIO_BALLOON_F_STATS_VQ))
    @rule()
    @skip_if_ended
    def request_stats(self) -> None:
        with self.tolerate():
            returned = self.ref.request_stats()
            irq = self.ref.take_interrupts()
            self._step(self.drv.interrupt, irq.queues, irq.config)
            if returned:
                updates = self.ref.stats_updates
                for _ in range(3):
                    self._cycle()
                self.R.check("BAL-ST-DRV-3", self.ref.stats_updates > updates,
                             "the device returned the stats buffer and the driver never made another available")
                self.R.check("BAL-ST-DRV-4", bool(self.ref.stats_tags), "stats buffer without entries")
        note("host asks for statistics")

    @precondition(lambda self: started(self) and self.has(F.VIRTIO_BALLOON_F_PAGE_REPORTING) and Capability.REPORT in self.caps)
    @rule()
    @skip_if_ended
    def report(self) -> None:
        n = 0
        with self.tolerate():
            n = self._step(self.drv.report)
        note(f"driver reports {n} free page(s)")

    @precondition(lambda self: started(self) and Capability.OOM in self.caps)
    @rule(count=st.integers(1, 8))
    @skip_if_ended
    def oom(self, count: int) -> None:
        n = 0
        with self.tolerate():
            n = self._step(self.drv.oom, count)
        note(f"memory pressure: the driver gives back {n} page(s)")

    @precondition(started)
    @rule()
    @skip_if_ended
    def settle(self) -> None:
        """Run until nothing changes, then check what a quiet driver must have done."""
        with self.tolerate():
            last, stable = None, 0
            for _ in range(SETTLE_CYCLES):
                self._cycle()
                state = self._settle_state()
                stable = stable + 1 if state == last else 0
                if stable >= self.settle_stable:
                    break
                last = state
            self._quiet_checks()
        note(f"settled: balloon {self.ref.ballooned.bit_count()} of target {self.ref.target}")

    def _settle_state(self) -> tuple[Any, ...]:
        """What must stop changing for the driver to count as quiet."""
        ref = self.ref
        return (ref.ballooned, ref.config.get("actual"), ref.stats_updates, self.os.pages.hinted,
                self.os.pages.isolated, ref.hint.state if ref.hint else None,
                tuple(ref.mem.read_u16(q.addrs.avail + 2) for q in ref.queues.values()))

    def _quiet_checks(self) -> None:
        ref = self.ref
        n = ref.ballooned.bit_count()
        actual = ref.config.get("actual")
        self.R.check("BAL-OP-DRV-11", actual == n, f"actual reads {actual}, the balloon holds {n} pages")
        short = ref.target - n
        if short > 0:
            free = self._free_pages()
            self.R.check("BAL-OP-DRV-1", free < short, f"balloon {n} below num_pages {ref.target} with {free} pages free")
        elif ref.target:
            self.R.saw("BAL-OP-DRV-1")  # the driver reached a non-zero target
        if "statsq" in ref.queues:
            self.R.check("BAL-ST-DRV-2", ref.stats_held is not None, "no stats buffer available to the device")
        if ref.hint is not None:
            self.R.check("BAL-FPH-DRV-6", ref.hint.state is not DeviceHintState.ACTIVE,
                         "the driver stopped supplying pages without sending STOP")
            if self.done_pending and ref.hint.state is DeviceHintState.DONE:
                self._check_hints_released()
                self.done_pending = False
        self._guest_quiet_checks()

    def _free_pages(self) -> int:
        """Pages the guest could still give the balloon."""
        return self.os.pages.free.bit_count()

    def _check_hints_released(self) -> None:
        hinted = self.os.pages.hinted
        self.R.check("BAL-FPH-DRV-10", not hinted, f"{hinted.bit_count()} hinted page(s) still held after DONE")

    def _guest_quiet_checks(self) -> None:
        """Checks that read the model guest's pages (a real guest overrides or drops them)."""
        ref, pages = self.ref, self.os.pages
        if self.has(F.VIRTIO_BALLOON_F_PAGE_POISON):
            fill = poison_pattern(ref.config.get("poison_val"))
            for p in bits(self.left_balloon & pages.free):
                if not self.os.holds(p, fill):
                    last = next((t for t in reversed(ref.touched) if t.pages >> p & 1), None)
                    if last is not None and last.req_id == "BAL-OP-DRV-7":
                        self.R.check(last.req_id, False, f"deflated page {p}: {last.why}, after the driver "
                                     "had already released it")
                    self.R.check("BAL-PP-DRV-1", False, f"deflated page {p} not set to poison_val")
                self.R.saw("BAL-PP-DRV-1")
        self.left_balloon = 0

    # -- invariants --------------------------------------------------------------------------------------------
    @invariant()
    def observe_hinting_choices(self) -> None:
        """Where the spec is silent, record what the driver does (the proposal's PROP-FPH-8 and -7): the
        report keeps each property that held in every example."""
        hint = getattr(getattr(self, "ref", None), "hint", None)
        if hint is None:
            return
        if hint.whole_page_hints or hint.part_page_hints:
            self.R.narrow("hint_buffers", {"whole 4 KiB pages"} if not hint.part_page_hints else set())
        if hint.device_ended_rounds and not hint.stop_owed:
            self.R.narrow("round_ended_by_device",
                          {"driver sends STOP"} if hint.stops_after_device_end == hint.device_ended_rounds
                          else set())

    @invariant()
    def workload_pages_intact(self) -> None:
        if not live(self):
            return
        with self.tolerate():
            for p in self.os.corrupted():
                for touch in reversed(self.ref.touched):
                    if touch.pages >> p & 1:
                        self.R.check(touch.req_id, False, f"workload page {p}: {touch.why}")
                raise ImplementationError("driver", f"workload page {p} changed, and not by the device")
            for req in {t.req_id for t in self.ref.touched}:
                self.R.saw(req)
