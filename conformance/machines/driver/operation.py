"""Driver operation (§5.5.6): the reference device and the driver take turns, and the host acts on the
device. Every turn checks the driver's kicks and records what the reference device's checks covered."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from refmodel.virtio.features import Feature

from conformance.checks import PACKED_RING_DRIVER_CHECKS, RING_DRIVER_CHECKS
from conformance.machines.base import CYCLES, note, step
from conformance.machines.driver.base import DriverMachine


class DriverOperation(DriverMachine):
    #: The most pages one set_target step asks for; a route whose guest is larger raises it.
    set_target_max = 40

    def _cycle(self) -> None:
        self._device_run()
        irq = self.ref.take_interrupts()
        self._driver(self.drv.interrupt, irq.queues, irq.config)
        self._run_driver()
        self._check_kicks()
        self._exercised()

    def _run_driver(self) -> None:
        """The driver does its pending work (its ``run``)."""
        self._driver(self.drv.run)
        self._driver_ran()

    def _driver_ran(self) -> None:
        """Hook: the driver's ``run`` returned."""

    def _host(self, op: str, *args: Any, cycles: int = 0) -> None:
        """The host acts on the reference device, the driver hears of it, then ``cycles`` turns."""
        getattr(self.ref, op)(*args)
        self._host_did(op)
        irq = self.ref.take_interrupts()
        self._driver(self.drv.interrupt, irq.queues, irq.config)
        for _ in range(cycles):
            self._cycle()

    def _host_did(self, op: str) -> None:
        """Hook: the host just called ``op`` on the device."""

    def _publications(self) -> dict[str, tuple[int, int, bool]]:
        """Queues without EVENT_IDX whose driver published new available entries since the last check:
        name -> (seen, avail, announced). One snapshot: a guest that runs beside the suite may publish
        more while it is judged, and those entries are the next check's."""
        out = {}
        for name, q in self.ref.queues.items():
            if q.event_idx:
                continue
            avail = self._avail_idx(q)  # read before the kick mark: a kick recorded after it covers it
            seen = self.avail_seen.get(name, 0)
            if avail != seen:
                out[name] = (seen, avail, self._announced(self.ref.kicked_at.get(name), seen, avail))
        return out

    def _owed(self, name: str, seen: int) -> bool:
        """Whether new entries on ``name`` are owed a notification: not the stats buffer published before
        DRIVER_OK, where notifying is forbidden (INIT-DRV-5)."""
        return not (name == "statsq" and seen == 0 and self.ref.kicked_at.get(name) is None)

    def _unannounced(self, pubs: dict[str, tuple[int, int, bool]]) -> list[str]:
        """The queues in ``pubs`` owed a notification that has not come."""
        return [n for n, (seen, _, announced) in pubs.items() if not announced and self._owed(n, seen)]

    def _announced(self, kicked: int | None, seen: int, avail: int) -> bool:
        """The last notification came at or after ``avail`` was published (it postdates ``seen``)."""
        if kicked is None:
            return False
        if self.packed:  # positions count up without wrapping
            return kicked >= avail
        ahead, due = (kicked - seen) % 0x10000, (avail - seen) % 0x10000  # split: u16 avail idx
        return due <= ahead < 0x8000

    def _await_kicks(self, pubs: dict[str, tuple[int, int, bool]]) -> dict[str, tuple[int, int, bool]]:
        """Hook: the snapshot to judge, given the first one. A route whose driver runs beside the suite waits
        for kicks on their way and returns the last snapshot it took."""
        return pubs

    def _check_kicks(self) -> None:
        """SPLIT-DRV-21: without EVENT_IDX, used flags 0 (the reference device never sets NO_NOTIFY), every
        publication of new available entries is followed by a notification before the driver stops. Over
        packed rings the device's flags are RING_EVENT_FLAGS_ENABLE then, and the rule is PACKED-DRV-D10."""
        req = "PACKED-DRV-D10" if self.packed else "SPLIT-DRV-21"
        for name, (seen, avail, announced) in self._await_kicks(self._publications()).items():
            self.avail_seen[name] = avail
            if not self._owed(name, seen):
                continue
            self.R.check(req, announced,
                         f"{name}: {'available position' if self.packed else 'avail idx'} {seen}->{avail} with "
                         f"{'device flags ENABLE' if self.packed else 'used flags 0'} and no notification "
                         "after it")

    def _exercised(self) -> None:
        """The reference device checked every byte the driver sent: name what that traffic covered."""
        ref, saw = self.ref, self.R.saw
        ring = (*PACKED_RING_DRIVER_CHECKS, "PACKED-DRV-D12") if self.packed else \
            (*RING_DRIVER_CHECKS, "SPLIT-DRV-3", "SPLIT-DRV-18")
        for req in (*ring, "STATUS-DRV-1", "STATUS-DRV-2", "INIT-DRV-2", "INIT-DRV-3",
                    "INIT-DRV-5", "CFG-DRV-3", "BAL-CFG-D1", "BAL-CFG-D2"):
            saw(req)
        if ref.ballooned or self.balloon_moved:
            for req in ("BAL-OP-D1", "BAL-OP-DRV-10", "BAL-OP-DRV-4", "BAL-OP-DRV-6"):
                saw(req)
        if ref.stats_updates:
            for req in ("BAL-ST-DRV-1", "BAL-ST-DRV-5", "BAL-ST-DRV-8"):
                saw(req)
        if ref.hint is not None and ref.hint.echoed:
            for req in ("BAL-FPH-DRV-1", "BAL-FPH-DRV-2", "BAL-FPH-DRV-3", "BAL-FPH-D2"):
                saw(req)
        if ref.hint is not None and ref.hint.received_pages:
            saw("BAL-FPH-D3")  # hints taken as device-writable buffers inside memory (else SPLIT-DRV-D1)
        if self.has(Feature.VIRTIO_BALLOON_F_PAGE_POISON):
            saw("BAL-PP-DRV-2")
            saw("BAL-PP-DRV-3")
        if ref.reported:
            saw("BAL-FPR-DRV-5")
            if self.has(Feature.VIRTIO_BALLOON_F_PAGE_POISON):
                saw("BAL-FPR-DRV-2")

    @step(rounds=st.integers(1, 3))
    def cycle(self, rounds: int) -> None:
        for _ in range(rounds):
            self._cycle()
        note(f"cycle x{rounds}: balloon {self.ref.ballooned.bit_count()} pages, actual {self.ref.config.get('actual')}")

    @step(config=st.booleans())
    def spurious_interrupt(self, config: bool) -> None:
        """Interrupts for every queue (and maybe config) with nothing new (SPLIT-DRV-16)."""
        self._driver(self.drv.interrupt, frozenset(range(5)), config)
        self._run_driver()
        self.R.saw("SPLIT-DRV-16")
        note(f"spurious interrupt for every queue{' and config' if config else ''}")

    @step(num_pages=st.integers(0, set_target_max), cycles=CYCLES)
    def set_target(self, num_pages: int, cycles: int) -> None:
        self._host("set_target", num_pages, cycles=cycles)
        note(f"host sets num_pages = {num_pages}, then {cycles} cycle(s)")
