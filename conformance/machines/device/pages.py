"""Pages the device must leave alone. Which requirement a change breaks follows the page's history
(:class:`~refmodel.system.provenance.PageHistory`), not what the page is now: a page hinted, released
after DONE and then written by the guest is still a previously hinted page (BAL-FPH-DEV-5); one the
guest wrote while hinted must keep the write (BAL-FPH-D4); deflated pages (BAL-OP-DEV-D1) and reported
ones (BAL-FPR-DEV-D1) are protected once the device gave them back, and a page the device was never
given always (BAL-OP-DEV-D1)."""

from __future__ import annotations

import attrs
from hypothesis import strategies as st

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.system.guest import bits
from refmodel.system.guest_os import poison_pattern
from refmodel.system.provenance import NEVER_GIVEN, Origin
from refmodel.virtio.features import Feature

from conformance.machines.base import live_invariant, note, step
from conformance.machines.device.base import DeviceMachine


@attrs.frozen
class Held:
    """What the driver held before it ran: its hinted and isolated pages, its balloon, its deflates."""

    hinted: int
    isolated: int
    balloon: frozenset[int]
    released: int  # deflated pages given back to the OS so far


class DevicePages(DeviceMachine):
    def _written(self, pages: list[int]) -> None:
        self.history.tick()
        self.history.record(pages, Origin.WRITTEN)

    @step(pick=st.integers(0, 1 << 16))
    def workload_free(self, pick: int) -> None:
        """The guest frees a workload page; the page's history records it. An index as the argument, not
        a draw from data(): a printed trace replays as is. No precondition on the workload: with an
        asynchronous device, whether the guest holds a page (one it took back from hinting, say) can
        differ between a run and its replay, which a precondition must not."""
        pages = sorted(self.os.workload)  # may differ between replays of an asynchronous implementation,
        if not pages:
            note("workload frees nothing: it holds no page")
            return
        page = pages[pick % len(pages)]  # so the argument is an index, not a member
        self.os.workload_free(page)
        self.history.record([page], Origin.FREED)
        note(f"workload frees page {page}")

    def _held_pages(self) -> Held:
        """Before the driver runs (or reports, or deflates under pressure)."""
        self.history.tick()
        pages = self.os.pages
        return Held(pages.hinted, pages.isolated, frozenset(self.drv.balloon), len(self.drv.released))

    def _given_back(self, held: Held) -> None:
        """After the driver ran: record what moved, and freeze the pages the device has just given back."""
        pages, history = self.os.pages, self.history
        if self.drv.hint is not None and (new := pages.hinted & ~held.hinted):
            history.record(bits(new), Origin.HINTED, round=self.drv.hint.served)
        for p in bits(held.hinted & ~pages.hinted):  # the driver saw DONE
            last = history.last(p)
            history.record([p], Origin.HINT_RELEASED,
                           round=last.round if last is not None and last.origin is Origin.HINTED else None)
            self._freeze(p)
        history.record(bits(pages.isolated & ~held.isolated), Origin.REPORTED)
        poison = self.drv.poison_val if self.has(Feature.VIRTIO_BALLOON_F_PAGE_POISON) else None
        for p in bits(held.isolated & ~pages.isolated):
            # A page the driver took again in the same turn (an inflation after the ack: the device may
            # discard it) is no longer the device's to leave holding poison_val.
            if poison is not None and pages.free >> p & 1:
                self.R.check("BAL-FPR-DEV-2", self.os.holds(p, poison_pattern(poison)),
                             f"reported page {p} does not hold poison_val {poison:#010x} after the ack")
            history.record([p], Origin.REPORT_ACKED)
            self._freeze(p)
        history.record(sorted(set(self.drv.balloon) - held.balloon), Origin.INFLATED)
        for p in self.drv.released[held.released:]:
            history.record([p], Origin.DEFLATED)
            self._freeze(p)

    def _freeze(self, page: int) -> None:
        """The device gave ``page`` back: from now on it must leave it as it is."""
        self.frozen[page] = self.os.mem.read(page * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)

    def _protector(self, page: int) -> str:
        return self.history.protector(page) or NEVER_GIVEN

    def _changed(self, page: int, what: str) -> None:
        self.R.check(self._protector(page), False, f"{what} page {page} changed; its history: "
                     f"{self.history.describe(page)}")

    @live_invariant()
    def workload_pages_intact(self) -> None:
        for p in self.os.corrupted():
            self._changed(p, "workload")
        free = self.os.pages.free
        for p, data in list(self.frozen.items()):
            if not free >> p & 1:
                del self.frozen[p]  # the guest or the driver took it: no longer the device's to leave alone
            elif self.os.mem.read(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) != data:
                self._changed(p, "free")
        # Each page checked intact exercised the requirement protecting it.
        for req in {NEVER_GIVEN, *(self._protector(p) for p in [*self.frozen, *self.os.workload])}:
            self.R.saw(req)
