"""What every proposal profile's reference device and driver share: the profile's feature bits are offered
and accepted beside the 1.4 ones, but kept out of 1.4 negotiation, so everything 1.4 (its checks, queue
numbering, config layout) sees the features it knows and a profile only adds to it.

Each profile module subclasses :class:`ProposalDevice` and :class:`ProposalDriver`;
:mod:`.reference` composes the selected ones into one device class and one driver class.
"""

from __future__ import annotations

from refmodel.balloon.device import BalloonDevice, needs_reset_on_breach
from refmodel.balloon.driver import BalloonDriver
from refmodel.balloon.proposals.bits import BITS, Proposal, offer
from refmodel.errors import guarded
from refmodel.virtio.features import Feature


class ProposalDevice(BalloonDevice):
    """The reference device, offering the bits of ``proposals`` (a class attribute set by composition)."""

    proposals: tuple[Proposal, ...] = ()

    def reset_state(self) -> None:
        self.proposal_written = 0  # the profile bits of the driver's last feature write
        super().reset_state()

    @property
    def proposal_offer(self) -> int:
        return offer(self.proposals)  # PROP-BIT-DEV-1: two proposals on one bit is our mistake

    @property
    def proposal_negotiated(self) -> int:
        return self.proposal_written if self.negotiated is not None else 0

    def proposal_has(self, p: Proposal) -> bool:
        return bool(self.proposal_negotiated & BITS[p].mask)

    def read_device_features(self) -> int:
        return super().read_device_features() | self.proposal_offer

    @needs_reset_on_breach
    @guarded
    def write_driver_features(self, value: int) -> None:
        mine = self.proposal_offer
        self.check_proposal_features(value & mine, value & ~mine)
        super().write_driver_features(value & ~mine)
        self.proposal_written = value & mine

    def check_proposal_features(self, proposal: int, base: int) -> None:
        """A profile's rules on what the driver accepts (``proposal``: its profile bits). Override point."""


class ProposalDriver(BalloonDriver):
    """The reference driver, accepting the bits of ``proposals`` when offered with what they need."""

    proposals: tuple[Proposal, ...] = ()

    def choose_features(self, offered: int) -> int:
        accepted = super().choose_features(offered)
        for p in self.proposals:
            if offered & BITS[p].mask and self.wants(p, accepted):
                accepted |= BITS[p].mask
        return accepted

    def wants(self, p: Proposal, accepted: int) -> bool:
        """Whether to accept ``p``'s bit given the 1.4 features ``accepted``. Override point."""
        return all(accepted & Feature[n].mask for n in BITS[p].needs)

    def proposal_has(self, p: Proposal) -> bool:
        return bool(self.negotiated & BITS[p].mask)
