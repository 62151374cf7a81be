"""combined-inflate-deflate-vq in the machines. Device: the suite's driver sends only well-formed combined
buffers (exchanges included), so a device that rejects one, or later finds a page in or out of its balloon
that the exchange moved, did not apply it whole (PROP-CMB-DEV-1). Driver: the reference device parses
every combined buffer and refuses inflateq and deflateq once the bit is negotiated (PROP-CMB-DRV-1 to -3).
The queue sits after the 1.4 ones under each numbering (``AMB-PROP-CMB-INDEX``,
:func:`refmodel.balloon.proposals.combined_vq.combined_index`)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from refmodel.balloon.proposals.bits import Proposal
from refmodel.balloon.proposals.combined_vq import QUEUE, CombinedReferenceDriver
from refmodel.errors import PeerSpecViolation

from conformance.machines.base import CYCLES, note, step
from conformance.machines.device.canary import CanaryDriver

P = Proposal.COMBINED_VQ
DEVICE_CHECKS = {"PROP-CMB-DEV-1": "cycle (combined queue): the suite's exchanges are applied whole"}
DRIVER_CHECKS = {r: "reference device (combined queue): combined buffer parser and the 1.4 queues refused"
                 for r in ("PROP-CMB-DRV-1", "PROP-CMB-DRV-2", "PROP-CMB-DRV-3")}
#: What a device may blame on a balloon buffer: with the combined queue, each says it misread one.
_BALLOON_RULES = ("PROP-CMB-DRV-", "BAL-OP-")


class CANARY(CanaryDriver):
    """The suite's driver remembers each combined buffer it wrote, as it does PFN arrays (SPLIT-DEV-3)."""

    def send_combined(self, inflate: list[int], deflate: list[int]) -> int:
        slot = self._slots[QUEUE][-1]  # the buffer send_combined takes
        head = CombinedReferenceDriver.send_combined(self, inflate, deflate)  # type: ignore[arg-type]
        self.readable[slot] = self.vqs[QUEUE].mem.read(slot, 8 + 4 * (len(inflate) + len(deflate)))
        return head


class DeviceMixin:
    def _device_run(self: Any) -> None:
        combined = self.proposal_has(P)
        try:
            super()._device_run()  # type: ignore[misc]
        except PeerSpecViolation as e:
            if combined and e.role == "driver" and e.req_id.startswith(_BALLOON_RULES):
                raise PeerSpecViolation("PROP-CMB-DEV-1", f"the device rejected one of the suite's "
                                        f"well-formed combined buffers, blaming {e.req_id}: {e.detail}") from e
            raise

    def _after_driver_run(self: Any) -> None:
        super()._after_driver_run()  # type: ignore[misc]
        if self.proposal_has(P) and self.drv.exchanges_used:
            self.R.saw("PROP-CMB-DEV-1")  # an exchange came back: the device took it whole

    @step(needs=lambda self: self.proposal_has(P) and self.drv.balloon, count=st.integers(1, 8),
          cycles=CYCLES)
    def combined_exchange(self: Any, count: int, cycles: int) -> None:
        """Balloon compaction: the guest exchanges balloon pages for fresh ones, one buffer a batch."""
        held = self._held_pages()
        n = self.drv.exchange(count)
        self._given_back(held)
        self._cycles(cycles)
        note(f"the driver exchanges {n} balloon page(s) for fresh ones, then {cycles} cycle(s)")


class DriverMixin:
    def _exercised(self: Any) -> None:
        super()._exercised()  # type: ignore[misc]
        if self.proposal_has(P) and (self.ref.ballooned or self.balloon_moved):
            for req in DRIVER_CHECKS:
                self.R.saw(req)

    @step(needs=lambda self: self.proposal_has(P) and callable(getattr(self.drv, "exchange", None)),
          count=st.integers(1, 8), cycles=CYCLES)
    def combined_exchange(self: Any, count: int, cycles: int) -> None:
        """The guest compacts its balloon (a driver with ``exchange``): each buffer inflates and deflates."""
        n = self._driver(self.drv.exchange, count)
        for _ in range(cycles):
            self._cycle()
        note(f"the driver exchanges {n} balloon page(s), then {cycles} cycle(s)")
