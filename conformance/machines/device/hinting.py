"""Free page hinting, device side (§5.5.6.5): command IDs, STOP and DONE, and which hints the host
applies."""

from __future__ import annotations

from refmodel.balloon.constants import VIRTIO_BALLOON_CMD_ID_DONE, VIRTIO_BALLOON_CMD_ID_STOP
from refmodel.balloon.driver import CFG_CMD_ID
from refmodel.balloon.hinting import DriverHintState
from refmodel.system.guest import bits
from refmodel.system.provenance import Origin
from refmodel.virtio.features import Feature

from conformance.interface import Capability
from conformance.machines.base import CYCLES, note, step
from conformance.machines.device.operation import DeviceOperation


class DeviceHinting(DeviceOperation):
    def _hinting(self) -> bool:
        return self.has(Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT) and Capability.HINTING in self.caps

    def _after_device_run(self) -> None:
        super()._after_device_run()
        self._check_hints()
        self._check_active_value()

    def _after_driver_run(self) -> None:
        super()._after_driver_run()
        if self.drv.hint is not None and self.drv.hint.stops_returned != self.stops_seen:
            self.stops_seen = self.drv.hint.stops_returned
            self.ids_since_stop.clear()  # BAL-FPH-DEV-2: the device has received a STOP

    def _check_hints(self) -> None:
        """After every device turn: the hints the host applied were all sent under the current command ID,
        and none was applied once the round ended (no hint matches STOP or DONE)."""
        if Capability.HINTED_PAGES not in self.caps or self.drv.hint is None:
            return
        applied = self.dev.hinted_pages()
        if self.current_id is None:
            if self.applied_at_end is None:
                return  # no round has ended since the reset
            late = applied & ~self.applied_at_end
            self.R.check("BAL-FPH-DEV-3", not late, f"pages {bits(late)[:8]} applied as hints after the "
                         "round ended: the field reads STOP or DONE, which no hint matches")
            return
        allowed = self.drv.hint.sent_under.get(self.current_id, 0)
        stale = applied & ~allowed
        self.R.check("BAL-FPH-DEV-3", not stale, f"pages {bits(stale)[:8]} applied as hints, but they were not "
                     f"hinted under the current command ID {self.current_id}")

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

    def _round_ended(self, done: bool) -> None:
        """The host published STOP or DONE: what the device applied so far is all it may have applied.
        After DONE every page hinted before is protected (BAL-FPH-DEV-5), those the guest took back too."""
        self.current_id = None
        if Capability.HINTED_PAGES in self.caps:
            self.applied_at_end = self.dev.hinted_pages()
        if done:
            for p in sorted(self.reused):
                last = next((m for m in reversed(self.history.history(p)) if m.origin is Origin.HINTED), None)
                self.history.record([p], Origin.HINT_RELEASED, round=None if last is None else last.round)
            self.reused.clear()

    @step(needs=_hinting, cycles=CYCLES)
    def hint_start(self, cycles: int) -> None:
        self._config_op("hint_start")
        cid = self.dev.read_config(CFG_CMD_ID, 4)
        self.R.check("BAL-FPH-D1", cid >= 2, f"hint_start published command ID {cid}")
        self.R.check("BAL-FPH-DEV-2", cid not in self.ids_since_stop,
                     f"command ID {cid} reused before the driver's STOP")
        self.ids_since_stop.add(cid)
        self.current_id = cid
        self._cycles(cycles)
        note(f"host starts a hinting round: command ID {cid}, then {cycles} cycle(s)")

    @step(needs=lambda self: self._hinting() and Capability.HINT_STOP in self.caps, cycles=CYCLES)
    def hint_stop(self, cycles: int) -> None:
        self._config_op("hint_stop")
        cid = self.dev.read_config(CFG_CMD_ID, 4)
        self.R.check("BAL-FPH-DEV-1", cid == VIRTIO_BALLOON_CMD_ID_STOP, f"after hint_stop the ID reads {cid}")
        self._round_ended(done=False)
        self._cycles(cycles)
        note(f"host stops hinting (STOP), then {cycles} cycle(s)")

    @step(needs=_hinting, cycles=CYCLES)
    def hint_done(self, cycles: int) -> None:
        self._config_op("hint_done")
        cid = self.dev.read_config(CFG_CMD_ID, 4)
        if self.current_id is not None:  # a round ran: its pages must be handed back
            self.R.check("BAL-FPH-DEV-6", cid == VIRTIO_BALLOON_CMD_ID_DONE, f"after hint_done the ID reads {cid}")
        self._round_ended(done=cid == VIRTIO_BALLOON_CMD_ID_DONE)
        self._cycles(cycles)
        note(f"host is done with the hints (DONE), then {cycles} cycle(s)")
