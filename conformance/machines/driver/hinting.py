"""Free page hinting, driver side (§5.5.6.5): the host starts, stops and ends rounds; the reference device
checks the driver's echoes and hints, and the machine judges what the device saw on free_page_vq:

* BAL-FPH-DRV-4: a driver that echoed the round's ID supplies pages before its own STOP, if the guest had
  a free aligned block of the smallest size it has hinted (one page before its first hint); at settle, it
  leaves no published ID unanswered;
* BAL-FPH-DRV-5: once the driver has run after the host's STOP or DONE, it makes no more hints available
  until it echoes a new ID (hints already queued when the field changed are fine);
* the driver's choices where the spec is silent are observed (PROP-FPH-7, PROP-FPH-8).

The rules aim at the moments a round is fragile: STOP or DONE while hints are still in the ring, and
memory pressure before DONE (the driver gives hinted pages back, BAL-FPH-DRV-7/-9).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import invariant

from refmodel.balloon.constants import VIRTIO_BALLOON_CMD_ID_STOP
from refmodel.balloon.hinting import DeviceHintState
from refmodel.virtio.features import Feature

from conformance.machines.base import CYCLES, note, step
from conformance.machines.driver.base import Pages
from conformance.machines.driver.device import HintChain
from conformance.machines.driver.operation import DriverOperation

DS = DeviceHintState


class DriverHinting(DriverOperation):
    #: The driver's runs after the host's STOP or DONE in which it may still add hints (it reads the field
    #: in the first one; a driver on its own clock needs more).
    hint_grace_runs = 1
    #: Whether the driver can be told the guest reclaims memory (a ``shrink(count)`` method).
    shrinks = False

    closed_from: int | None  # free_page_vq chains from this one on may not be hints (BAL-FPH-DRV-5)
    closed_by: str  # what closed them: "STOP" or "DONE"
    grace_runs: int | None  # driver runs left before hints close
    round_hints: int | None  # hints in the round the driver echoed into, while the device has it ACTIVE
    free_at: deque[tuple[int, int]]  # (chains on free_page_vq after a driver call, free pages before it)
    hint_block: int  # the fewest whole pages the driver has hinted in one buffer (0: none yet)

    def _hinting(self) -> bool:
        return self.has(Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT)

    def _device_forgot(self) -> None:
        super()._device_forgot()
        self.closed_from, self.closed_by, self.grace_runs, self.round_hints = None, "", None, None
        self.free_at = deque(maxlen=64)
        self.hint_block = getattr(self, "hint_block", 0)  # the driver's habit outlives a reset

    def _host_did(self, op: str) -> None:
        super()._host_did(op)
        if op in ("hint_stop", "hint_done"):
            self.closed_by = "DONE" if op == "hint_done" else "STOP"
            if self.closed_from is None:
                self.grace_runs = self.hint_grace_runs
            self.done_pending |= op == "hint_done"
        elif op == "hint_start":
            self.closed_from = self.grace_runs = None
        if op.startswith("hint_"):
            self.round_hints = None  # the host ended any round in progress

    def _made_available(self) -> int | None:
        q = self.ref.queues.get("free_page_vq") if self.ref is not None else None
        return q.made_available() if q is not None else None

    def _after_driver(self, before: Pages | None, after: Pages | None) -> None:
        super()._after_driver(before, after)
        made = self._made_available()
        if made is not None and before is not None and (not self.free_at or self.free_at[-1][0] != made):
            self.free_at.append((made, before.free))

    def _driver_ran(self) -> None:
        super()._driver_ran()
        if self.grace_runs is None:
            return
        self.grace_runs -= 1
        if self.grace_runs <= 0:
            self.grace_runs, self.closed_from = None, self._made_available()
            if self.closed_from is not None:
                self.R.saw("BAL-FPH-DRV-5")  # from here on every hint the device takes is judged

    def _after_device(self, before: Pages | None, after: Pages | None, touched: list[Any],
                      hints: list[HintChain]) -> None:
        super()._after_device(before, after, touched, hints)
        for h in hints:
            if h.cmd is not None and h.cmd >= 2:
                if self.closed_from is not None and h.ordinal >= self.closed_from:
                    self.closed_from = None  # a new round's echo: hints are welcome again
                self.round_hints = 0 if h.state is DS.REQUESTED and h.cmd == h.cmd_id else None
            elif h.cmd == VIRTIO_BALLOON_CMD_ID_STOP:
                if self.round_hints is not None and h.state is DS.ACTIVE:
                    self._judge_round(h)
                self.round_hints = None
            elif h.hint:
                self._judge_hint(h)

    def _judge_hint(self, h: HintChain) -> None:
        if self.closed_from is not None:
            self.R.check("BAL-FPH-DRV-5", h.ordinal < self.closed_from, f"a hint (chain {h.ordinal} on "
                         "free_page_vq) made available after the driver had run with free_page_hint_cmd_id "
                         f"at {self.closed_by}")
        if self.round_hints is not None:
            self.round_hints += 1
        if n := h.pages.bit_count():
            self.hint_block = min(self.hint_block or n, n)

    def _judge_round(self, stop: HintChain) -> None:
        """The driver's STOP ends the round it echoed into: did it supply a page while it could?"""
        free = next((f for made, f in self.free_at if made > stop.ordinal), None)
        if free is None:
            return  # no view of the guest's free pages when the STOP went out
        block = self.hint_block or 1
        whole = (1 << block) - 1
        could = any(free >> start & whole == whole for start in range(0, free.bit_length(), block))
        self.R.check("BAL-FPH-DRV-4", bool(self.round_hints) or not could, f"the driver echoed command ID "
                     f"{stop.cmd_id}, then sent STOP without supplying a page while the guest had "
                     f"{free.bit_count()} free, {block}-page aligned blocks among them")

    # -- the host's controls ---------------------------------------------------------------------------------
    @step(needs=_hinting, cycles=CYCLES)
    def hint_start(self, cycles: int) -> None:
        self._host("hint_start", cycles=cycles)
        note(f"host publishes command ID {self.ref.hint.cmd_id if self.ref.hint else None}, {cycles} cycle(s)")

    @step(needs=_hinting, cycles=CYCLES)
    def hint_stop(self, cycles: int) -> None:
        self._host("hint_stop", cycles=cycles)
        note(f"host publishes STOP, {cycles} cycle(s)")

    @step(needs=_hinting, cycles=CYCLES)
    def hint_done(self, cycles: int) -> None:
        self._host("hint_done", cycles=cycles)
        note(f"host publishes DONE, {cycles} cycle(s)")

    @step(needs=_hinting, end=st.sampled_from(["hint_stop", "hint_done"]), lead=st.integers(1, 3),
          cycles=CYCLES)
    def hint_race(self, end: str, lead: int, cycles: int) -> None:
        """A round ends while the driver's hints are still in the ring: the host publishes STOP or DONE right
        after the driver's turn, before the device has taken what it made available."""
        self._host("hint_start")
        for _ in range(lead):
            self._cycle()
        q = self.ref.queues.get("free_page_vq")
        in_ring = q.made_available() - q.popped if q is not None else 0
        self._host(end, cycles=cycles)
        note(f"host starts a round, {lead} cycle(s), then {end} with {in_ring} chain(s) still in the ring, "
             f"{cycles} cycle(s)")

    # -- memory pressure before DONE -------------------------------------------------------------------------
    @step(needs=lambda self: self._hinting() and self.shrinks, count=st.integers(1, 8))
    def shrink(self, count: int) -> None:
        """The guest reclaims memory: the driver may give hinted pages back before DONE (BAL-FPH-DRV-7), and
        must initialize them (BAL-FPH-DRV-9)."""
        n = self._driver(self.drv.shrink, count)
        note(f"the guest reclaims memory: the driver gives back {n} hinted page(s)")

    @step(needs=lambda self: self._hinting() and self.shrinks, lead=st.integers(2, 4), count=st.integers(1, 8))
    def hint_then_shrink(self, lead: int, count: int) -> None:
        """A round runs until the device has applied hints, then the guest needs memory before DONE."""
        self._host("hint_start")
        for _ in range(lead):
            self._cycle()
        self.shrink(count)
        self._cycle()

    @invariant()
    def observe_hinting_choices(self) -> None:
        """Where the spec is silent, record what the driver does (the proposal's PROP-FPH-8 and -7): the
        report keeps each property that held in every example."""
        hint = self.ref.hint if self.ref is not None else None
        if hint is None:
            return
        if hint.whole_page_hints or hint.part_page_hints:
            self.R.narrow("hint_buffers", {"whole 4 KiB pages"} if not hint.part_page_hints else set())
        if hint.device_ended_rounds and not hint.stop_owed:
            self.R.narrow("round_ended_by_device",
                          {"driver sends STOP"} if hint.stops_after_device_end == hint.device_ended_rounds
                          else set())
