"""What a quiet driver must have done (§5.5.6): the balloon at its target and ``actual`` matching it, a
stats buffer held, hinting rounds closed and their pages released, deflated pages poisoned."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.hinting import DeviceHintState
from refmodel.system.guest import bits
from refmodel.system.guest_os import poison_pattern
from refmodel.virtio.features import Feature

from conformance.machines.base import note, step
from conformance.machines.driver.operation import DriverOperation

SETTLE_CYCLES = 48


class DriverSettle(DriverOperation):
    @step()
    def settle(self) -> None:
        """Run until nothing changes, then check what a quiet driver must have done."""
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
                tuple(self._avail_idx(q) for q in ref.queues.values()))

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
        if self.has(Feature.VIRTIO_BALLOON_F_PAGE_POISON):
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
