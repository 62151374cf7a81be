"""Moments where a driver's page handling is most fragile (§5.5.6.1, §5.5.6.6, §5.5.6.7), each one rule, so
that finding a driver that gets them wrong does not wait on a lucky sequence of single steps:

* the balloon grows, shrinks, and the guest takes the deflated pages at once (BAL-OP-DRV-7, BAL-PP-DRV-1);
* the driver reports free pages and the guest allocates at once (BAL-FPR-DRV-3);
* a hinting round left to run its course, to the end of free memory (BAL-FPH-DRV-6, -10);
* the balloon grown to the last pages of guest memory (the PFN bounds, PROP-BMP-DRV-3), then maybe emptied.
"""

from __future__ import annotations

from hypothesis import strategies as st

from refmodel.virtio.features import Feature

from conformance.interface import Capability
from conformance.machines.base import note, step
from conformance.machines.driver.hinting import DriverHinting
from conformance.machines.driver.reporting import DriverReportingAndOom
from conformance.machines.driver.settle import DriverSettle

#: Cycles the balloon gets to reach its target before it is asked to shrink.
GROW_CYCLES = 12
#: Cycles the balloon gets to take (or give back) nearly all of the guest's free memory.
FILL_CYCLES = 40


class DriverMoments(DriverHinting, DriverSettle, DriverReportingAndOom):
    @step(grow=st.integers(4, 40), keep=st.integers(0, 3), count=st.integers(1, 8), top=st.booleans())
    def deflate_then_reuse(self, grow: int, keep: int, count: int, top: bool) -> None:
        """The guest allocates right after the driver's deflate turn, before the device has taken the deflate
        (with MUST_TELL_HOST the pages must still be the balloon's)."""
        self._host("set_target", grow)
        for _ in range(GROW_CYCLES):
            if self.ref.ballooned.bit_count() >= grow:
                break
            self._cycle()
        self._host("set_target", keep, cycles=1)  # one turn: the driver sends its deflates
        self.workload_alloc_write(count, top)
        self._cycle()
        note(f"balloon to {grow} pages, then down to {keep}; the guest allocates {count} page(s) at once")

    @step(spare=st.integers(0, 4), back=st.booleans())
    def balloon_to_memory_end(self, spare: int, back: bool) -> None:
        """The host asks for every free page of the guest but ``spare``: the driver allocates lowest first,
        so only a balloon this large reaches the last pages of memory, in buffers whose lowest PFN is far
        from page 0: a PFN or bitmap bound that is off near the end of memory shows here. The host raises
        num_pages set_target_max pages at a time, as the set_target step asks, so each driver turn
        has no more to send than set_target gives it; then maybe back to empty."""
        target = max(0, self.ref.ballooned.bit_count() + self._free_pages() - spare)
        asked = -1
        for _ in range(FILL_CYCLES):
            have = self.ref.ballooned.bit_count()
            if have >= target:
                break
            if have >= asked:
                asked = min(target, have + self.set_target_max)
                self._host("set_target", asked)
            self._cycle()
        top = self.ref.ballooned.bit_length() - 1
        if back:
            self._host("set_target", 0)
            for _ in range(FILL_CYCLES):
                if not self.ref.ballooned:
                    break
                self._cycle()
        note(f"balloon to {target} pages (all free memory but {spare}; its highest page {top})"
             + (f", then back to {self.ref.ballooned.bit_count()}" if back else ""))

    @step(needs=lambda self: self.has(Feature.VIRTIO_BALLOON_F_PAGE_REPORTING)
          and Capability.REPORT in self.caps, count=st.integers(1, 8))
    def report_then_reuse(self, count: int) -> None:
        """The guest allocates from the top while the report is still with the device."""
        n = self._driver(self.drv.report)
        self.workload_alloc_write(count, True)  # from the top, where the reported pages are
        self._cycle()
        note(f"the driver reports {n} page(s); the guest allocates {count} at once")

    @step(needs=DriverHinting._hinting, done=st.booleans())
    def hint_round(self, done: bool) -> None:
        """A round left to run its course: the driver hints until it finds no free page, then sends STOP
        (BAL-FPH-DRV-6); then maybe DONE, and settle checks what the driver left."""
        self._host("hint_start")
        self.settle()
        if done:
            self.hint_done(0)  # the rule: a machine may check more around DONE (the Linux one does)
            self.settle()
        note(f"a hinting round to its end{', then DONE' if done else ''}")
