"""What a quiet driver must have done (§5.5.6): the balloon at its target and ``actual`` matching it, a
stats buffer held, hinting rounds closed and their pages released, deflated pages poisoned."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.hinting import DeviceHintState

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
            if ref.hint.issued:
                self.R.check("BAL-FPH-DRV-4", ref.hint.state is not DeviceHintState.REQUESTED,
                             f"the driver went quiet with free_page_hint_cmd_id at {ref.hint.cmd_id}, never "
                             "echoing it or supplying a page")
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
