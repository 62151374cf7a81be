"""Free page hinting, driver side (§5.5.6.5): the host starts, stops and ends rounds; the reference device
checks the driver's echoes and hints, and the driver's choices where the spec is silent are observed."""

from __future__ import annotations

from hypothesis.stateful import invariant

from refmodel.virtio.features import Feature

from conformance.machines.base import CYCLES, note, step
from conformance.machines.driver.operation import DriverOperation


class DriverHinting(DriverOperation):
    def _hinting(self) -> bool:
        return self.has(Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT)

    @step(when=_hinting, cycles=CYCLES)
    def hint_start(self, cycles: int) -> None:
        self._host("hint_start", cycles=cycles)
        note(f"host publishes command ID {self.ref.hint.cmd_id if self.ref.hint else None}, {cycles} cycle(s)")

    @step(when=_hinting, cycles=CYCLES)
    def hint_stop(self, cycles: int) -> None:
        self._host("hint_stop", cycles=cycles)
        note(f"host publishes STOP, {cycles} cycle(s)")

    @step(when=_hinting, cycles=CYCLES)
    def hint_done(self, cycles: int) -> None:
        self._host("hint_done", cycles=cycles)
        self.done_pending = True
        note(f"host publishes DONE, {cycles} cycle(s)")

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
