"""The guest's pages, as the model guest shows them (§5.5.6.1, §5.5.6.5, §5.5.6.6, §5.5.6.7).

Each page's history (:class:`~refmodel.system.provenance.PageHistory`: inflated, deflated, written, freed,
hinted, reported, ...) says which rule protects it when it changes, so a change is charged to that rule:

* the device changes a page the driver had already given back to the guest: the rule of that change
  (before the deflate ack BAL-OP-DRV-7, before the inflate ack BAL-OP-DRV-9, before the report ack
  BAL-FPR-DRV-3), at once;
* a deflated page goes back to the guest: with PAGE_POISON it holds poison_val (BAL-PP-DRV-1) at that
  moment; what the guest writes there later is its own business;
* a hinted page goes back before DONE: the driver initialized it (BAL-FPH-DRV-9);
* a workload page changes: the rule of the device change that hit it after the workload wrote it.
"""

from __future__ import annotations

from typing import Any

from refmodel.balloon.constants import VIRTIO_BALLOON_CMD_ID_DONE
from refmodel.system.guest import bits
from refmodel.system.guest_os import poison_pattern
from refmodel.system.provenance import Origin
from refmodel.virtio.features import Feature

from conformance.harness import ImplementationError
from conformance.machines.base import PICK, live_invariant, note, step
from conformance.machines.driver.base import DriverMachine, Pages
from conformance.machines.driver.device import discard_fill


class DriverPages(DriverMachine):
    deflated_unreleased: int  # pages the device deflated that the driver has not given back yet
    given_back_at: dict[int, int]  # page -> history step at which the driver last gave it back to the guest
    touch_log: list[tuple[int, Any]]  # (history step, Touch): the device's page changes since it was made

    def _device_forgot(self) -> None:
        super()._device_forgot()
        self.deflated_unreleased = 0
        self.touch_log = []
        self.given_back_at = getattr(self, "given_back_at", {})  # pages outlive a device reset

    def _poison(self) -> bytes | None:
        """The fill of a poisoned page, with PAGE_POISON; else None."""
        if not self.has(Feature.VIRTIO_BALLOON_F_PAGE_POISON):
            return None
        return poison_pattern(self.ref.config.get("poison_val"))

    # -- the workload ------------------------------------------------------------------------------------
    def _written(self, pages: list[int]) -> None:
        self.history.tick()
        self.history.record(pages, Origin.WRITTEN)

    @step(needs=lambda self: self.os.workload, pick=PICK)
    def workload_free(self, pick: int) -> None:
        pages = sorted(self.os.workload)
        page = pages[pick % len(pages)]  # an index, not a member: the list is known only at run time
        self.os.workload_free(page)
        self.history.tick()
        self.history.record([page], Origin.FREED)
        note(f"workload frees page {page}")

    # -- the device's turn ---------------------------------------------------------------------------------
    def _after_device(self, before: Pages | None, after: Pages | None, touched: list[Any],
                      hints: list[Any]) -> None:
        super()._after_device(before, after, touched, hints)
        if before is None or after is None:
            return
        inflated, deflated = after.ballooned & ~before.ballooned, before.ballooned & ~after.ballooned
        self.history.record(bits(inflated), Origin.INFLATED)
        self.history.record(bits(deflated), Origin.DEFLATED)
        self.deflated_unreleased = (self.deflated_unreleased | deflated) & ~inflated
        for t in touched:
            self.touch_log.append((self.history.step, t))
            for p in bits(t.pages & after.free):  # the driver had let go of it: the device's change is its
                self.R.check(t.req_id, False, f"page {p}: {t.why}, after the driver had given it back to the "
                             f"guest ({self.history.describe(p)})")

    # -- the driver's turn -----------------------------------------------------------------------------------
    def _after_driver(self, before: Pages | None, after: Pages | None) -> None:
        super()._after_driver(before, after)
        if before is None or after is None:
            return
        # Back with the guest: free, or taken from the free lists for a hint or a report in the same call.
        given_back = after.free | after.hinted | after.isolated
        given_back &= ~(before.free | before.hinted | before.isolated)
        for p in bits(given_back):
            self.given_back_at[p] = self.history.step
        # Unbound or reset: its balloon and its hints are gone with the device, not given back by it.
        reset = after.resets != before.resets or self.unbinding
        if not reset:
            self._check_deflated_poisoned(given_back & (before.ballooned | self.deflated_unreleased))
        self.deflated_unreleased &= ~given_back
        round_id = self.ref.hint.cmd_id if self.ref.hint is not None else None
        self.history.record(bits(after.hinted & ~before.hinted), Origin.HINTED, round=round_id)
        left = before.hinted & ~after.hinted
        if round_id == VIRTIO_BALLOON_CMD_ID_DONE or reset:
            self.history.record(bits(left), Origin.HINT_RELEASED)
        else:
            self._check_hinted_initialized(left)
            self.history.record(bits(left), Origin.HINT_REUSED)
        self.ref.discarded &= ~left
        self.history.record(bits(after.isolated & ~before.isolated), Origin.REPORTED)
        self.history.record(bits(before.isolated & ~after.isolated), Origin.REPORT_ACKED)

    def _check_deflated_poisoned(self, pages: int) -> None:
        """BAL-PP-DRV-1: a deflated page holds poison_val when the guest gets it back."""
        fill = self._poison()
        if fill is None or not pages:
            return
        self.R.saw("BAL-PP-DRV-1")
        for p in bits(pages):
            if not self.os.holds(p, fill):
                self.R.check("BAL-PP-DRV-1", False, f"deflated page {p} given back to the guest without "
                             f"poison_val ({self.history.describe(p)})")

    def _check_hinted_initialized(self, pages: int) -> None:
        """BAL-FPH-DRV-9: a hinted page the device overwrote, given back before DONE, was initialized."""
        judged = pages & self.ref.discarded
        if not judged:
            return
        fill = discard_fill(self.ref.config.get("poison_val"))
        self.R.saw("BAL-FPH-DRV-9")
        for p in bits(judged):
            if self.os.holds(p, fill):
                self.R.check("BAL-FPH-DRV-9", False, f"hinted page {p} released before DONE still holds what "
                             "the device left in it: the driver did not initialize it "
                             f"({self.history.describe(p)})")

    # -- what a quiet driver leaves --------------------------------------------------------------------------
    def _guest_quiet_checks(self) -> None:
        self._check_deflated_pages()

    def _check_deflated_pages(self) -> None:
        """At settle: every free page last deflated still holds poison_val; if not, the change is charged to
        the device change that came after the driver gave it back, or else to BAL-PP-DRV-1."""
        fill = self._poison()
        if fill is None:
            return
        for p in bits(self.os.pages.free):
            if not self.history.untouched_since(p, Origin.DEFLATED):
                continue
            self.R.saw("BAL-PP-DRV-1")
            if self.os.holds(p, fill):
                continue
            after = self.given_back_at.get(p, -1)
            for at, t in reversed(self.touch_log):
                if at > after and t.pages >> p & 1:
                    self.R.check(t.req_id, False, f"deflated page {p}: {t.why}, after the driver had "
                                 "given it back to the guest")
            self.R.check("BAL-PP-DRV-1", False, f"deflated page {p} no longer holds poison_val "
                         f"({self.history.describe(p)})")

    def _last_written(self, page: int) -> int:
        marks = [m.step for m in self.history.history(page) if m.origin is Origin.WRITTEN]
        return marks[-1] if marks else -1

    @live_invariant()
    def workload_pages_intact(self) -> None:
        for p in self.os.corrupted():
            written = self._last_written(p)
            for at, t in reversed(self.touch_log):
                if at >= written and t.pages >> p & 1:
                    self.R.check(t.req_id, False, f"workload page {p}: {t.why}")
            raise ImplementationError("driver", f"workload page {p} changed, and not by the device "
                                      f"({self.history.describe(p)})")
        for req in {t.req_id for _, t in self.touch_log}:
            self.R.saw(req)
