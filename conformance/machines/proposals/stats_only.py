"""stats-only in the machines: the device keeps num_pages at most actual (PROP-SO-DEV-1); the driver sends
nothing on inflateq or deflateq even when a host asks (PROP-SO-DRV-1), and keeps its mode (PROP-SO-DRV-2)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from refmodel.balloon.config import CFG_ACTUAL, CFG_NUM_PAGES
from refmodel.balloon.proposals.bits import Proposal

from conformance.machines.base import CYCLES, note, step

P = Proposal.STATS_ONLY
DEVICE_CHECKS = {"PROP-SO-DEV-1": "set_target (stats-only): num_pages stays at most actual"}
DRIVER_CHECKS = {"PROP-SO-DRV-1": "reference device (stats-only): no buffer on inflateq or deflateq",
                 "PROP-SO-DRV-2": "reference device (stats-only): feature writes after DRIVER_OK"}


class DeviceMixin:
    def _config_op(self: Any, op: str, *args: Any) -> list[int]:
        after = super()._config_op(op, *args)  # type: ignore[misc]
        if op == "set_target" and self.proposal_has(P):
            num, actual = self.dev.read_config(CFG_NUM_PAGES, 4), self.dev.read_config(CFG_ACTUAL, 4)
            self.R.check("PROP-SO-DEV-1", num <= actual, f"the host asked for {args[0]} pages: num_pages reads "
                         f"{num}, above actual {actual}, for a driver that declared stats-only")
        return after


class DriverMixin:
    def _exercised(self: Any) -> None:
        super()._exercised()  # type: ignore[misc]
        if self.proposal_has(P):
            self.R.saw("PROP-SO-DRV-1")
            self.R.saw("PROP-SO-DRV-2")

    @step(needs=lambda self: self.proposal_has(P), num_pages=st.integers(1, 40), cycles=CYCLES)
    def stats_only_host_asks(self: Any, num_pages: int, cycles: int) -> None:
        """A host asks a stats-only guest for pages anyway (PROP-SO-DEV-1 is a SHOULD NOT): the driver
        must still send nothing (PROP-SO-DRV-1). Then the host takes the request back."""
        self.ref.asks_anyway = True
        try:
            self._host("set_target", num_pages, cycles=cycles)
        finally:
            self.ref.asks_anyway = False
        self._host("set_target", self.ref.config.get("actual"))
        note(f"host asks the stats-only guest for {num_pages} pages, {cycles} cycle(s), then takes it back")
