"""hint-wait-on-ack in the machines. Device: nothing changes a hinted page once its buffer is used
(PROP-HWA-DEV-1: such a page is protected by it from then on, so a later change is named by it), and
every hint buffer made available is used in the device's turn (PROP-HWA-DEV-2). Driver: the bit only
with FREE_PAGE_HINT (PROP-HWA-DRV-2, judged by the reference device at the feature write)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from refmodel.balloon.proposals.bits import BITS, Proposal
from refmodel.balloon.proposals.hint_wait_on_ack import WaitOnAckDriver
from refmodel.balloon.hinting import FreePageHintDriver
from refmodel.system.guest import bits
from refmodel.system.provenance import Origin
from refmodel.virtio.split.layout import AVAIL_IDX

from conformance.machines.base import note, step
from conformance.machines.device.canary import CanaryDriver, RecordingHintDriver

P = Proposal.HINT_WAIT_ON_ACK
DEVICE_CHECKS = {"PROP-HWA-DEV-1": "invariant (hint-wait-on-ack): acknowledged hinted pages intact",
                 "PROP-HWA-DEV-2": "cycle (hint-wait-on-ack): every hint buffer used in the device's turn"}
DRIVER_CHECKS = {"PROP-HWA-DRV-2": "reference device (hint-wait-on-ack): the driver's feature write"}


class RecordingWaitOnAck(RecordingHintDriver, WaitOnAckDriver):
    """The RFC's hinting driver, noting its out-buffers as the suite's driver does (SPLIT-DEV-3)."""


class CANARY(CanaryDriver):
    def make_hint_driver(self, *args: Any, **kwargs: Any) -> FreePageHintDriver:
        if self.proposal_has(P):  # type: ignore[attr-defined]
            return RecordingWaitOnAck(*args, readable=self.readable, **kwargs)
        return super().make_hint_driver(*args, **kwargs)


class DeviceMixin:
    def _acked(self: Any) -> int:
        hint = self.drv.hint if self.proposal_has(P) else None
        return hint.acked_ever if isinstance(hint, WaitOnAckDriver) else 0

    def _protector(self: Any, page: int) -> str:
        if self._acked() >> page & 1:
            return "PROP-HWA-DEV-1"
        return super()._protector(page)  # type: ignore[misc]

    def _after_device_run(self: Any) -> None:
        vq = self.drv.vqs.get("free_page_vq") if self.proposal_has(P) else None
        if vq is not None and not getattr(self, "packed", False):
            avail, used = self.os.mem.read_u16(vq.addrs.avail + AVAIL_IDX), self._used_idx("free_page_vq")
            self.R.check("PROP-HWA-DEV-2", avail == used, f"free_page_vq: avail idx {avail}, used idx {used} "
                         "after the device's turn: it holds buffers a waiting driver needs back")
        super()._after_device_run()  # type: ignore[misc]

    @step(needs=lambda self: self._hinting() and self.proposal_has(P), pick=st.integers(0, 1 << 16),
          device_turns=st.integers(1, 2))
    def guest_reclaims_acked(self: Any, pick: int, device_turns: int) -> None:
        """Mid-round the guest takes back a hinted page whose buffer the device used, and writes it: the
        RFC's shrinker path, which PROP-HWA-DEV-1 makes safe."""
        self._round_with_hints(1)
        hint = self.drv.hint
        hint.reap()
        acked = bits(hint.acked & self.os.pages.hinted)
        if not acked:
            note("no hinted page is acknowledged yet: the guest has none to take back")
            return
        page = acked[pick % len(acked)]
        hint.reclaim(page)
        self.os.workload_write(page)
        self.history.tick()
        self.history.record([page], Origin.HINT_REUSED)
        self.reused.add(page)
        self._cycles(device_turns)
        note(f"the guest takes back acknowledged hinted page {page} and writes it, then {device_turns} cycle(s)")


class DriverMixin:
    def _check_negotiation(self: Any, offered: int, ok: bool) -> None:
        super()._check_negotiation(offered, ok)  # type: ignore[misc]
        if self.ref.proposal_offer & BITS[P].mask and ok:
            self.R.saw("PROP-HWA-DRV-2")
