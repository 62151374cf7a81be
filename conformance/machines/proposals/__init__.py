"""Proposal profiles in the balloon-level machines (issue 17): ``run --proposal NAME``.

A profile's run is the 1.4 machine with the profile's mixins on top (one module per profile, each with a
device-machine mixin, a driver-machine mixin and its check tables), the suite's driver or device made a
profile-mode one (:mod:`refmodel.balloon.proposals.reference`), and the profile's feature bit offered and
accepted beside the 1.4 ones. A device or driver under test that does not offer or accept the bit leaves
the profile's requirements not-applicable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from refmodel.balloon.proposals.bits import Proposal, offer
from refmodel.balloon.proposals.reference import device_class, driver_class, proposals_of

from conformance.machines.device.canary import CanaryDriver
from conformance.machines.driver.device import WatchedDevice
from conformance.machines.proposals import (bitmap_inflate, combined_vq, device_init_on_inflate,
                                            device_init_reported, hint_wait_on_ack, stats_only)

P = Proposal
MODULES = {P.STATS_ONLY: stats_only, P.HINT_WAIT_ON_ACK: hint_wait_on_ack,
           P.DEVICE_INIT_ON_INFLATE: device_init_on_inflate, P.DEVICE_INIT_REPORTED: device_init_reported,
           P.BITMAP_INFLATE_DEFLATE: bitmap_inflate, P.COMBINED_VQ: combined_vq}
#: Requirement ID -> where its check lives, per role (merged into the runner's tables for a profile run).
DEVICE_CHECKS: dict[str, str] = {k: v for m in MODULES.values() for k, v in m.DEVICE_CHECKS.items()}
DRIVER_CHECKS: dict[str, str] = {k: v for m in MODULES.values() for k, v in m.DRIVER_CHECKS.items()}


class ProposalDeviceMachine:
    """Under the device machine's mixins: the profile bits are kept out of the 1.4 offer checks."""

    proposals: tuple[Proposal, ...] = ()

    def _check_offer(self: Any) -> None:
        mine = offer(self.proposals)
        self.proposal_offered = self.offered & mine
        self.offered &= ~mine  # the 1.4 checks judge the 1.4 bits
        super()._check_offer()  # type: ignore[misc]

    def _probe(self: Any) -> None:
        super()._probe()  # type: ignore[misc]
        self.R.features |= self.drv.negotiated

    def proposal_has(self: Any, p: Proposal) -> bool:
        return bool(getattr(self, "drv", None)) and self.drv.proposal_has(p)


class ProposalDriverMachine:
    """Under the driver machine's mixins: what the reference device negotiated of the profile bits."""

    proposals: tuple[Proposal, ...] = ()

    def _check_negotiation(self: Any, offered: int, ok: bool) -> None:
        super()._check_negotiation(offered, ok)  # type: ignore[misc]
        self.R.features |= self.ref.proposal_negotiated

    def proposal_has(self: Any, p: Proposal) -> bool:
        return self.ref is not None and self.ref.proposal_has(p)


def machine(base: type, role: str, names: Iterable[str]) -> tuple[tuple[type, ...], dict[str, Any]]:
    """The bases and namespace of ``base`` (the role's machine) under the profiles ``names``."""
    ps = proposals_of(names)
    mods = [MODULES[p] for p in ps]
    if role == "device":
        harness = _harness(CanaryDriver, [m.CANARY for m in mods if getattr(m, "CANARY", None)])
        mixins = [m.DeviceMixin for m in mods]
        return (*mixins, ProposalDeviceMachine, base), {"proposals": ps,
                                                         "driver_class": driver_class(ps, harness)}
    harness = _harness(WatchedDevice, [m.PEER for m in mods if getattr(m, "PEER", None)])
    mixins = [m.DriverMixin for m in mods]
    return (*mixins, ProposalDriverMachine, base), {"proposals": ps, "device_class": device_class(ps, harness)}


def _harness(root: type, extras: list[type]) -> type:
    """The suite's own driver (or device) with each profile's additions to it."""
    if not extras:
        return root
    return type(f"{root.__name__}Plus", (*extras, root), {"__module__": __name__})
