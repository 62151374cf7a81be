"""Profile ``hint-wait-on-ack``: ``VIRTIO_BALLOON_F_HINT_WAIT_ON_ACK`` (bit 6), after the RFC
"virtio_balloon: Support wait on ACK for hinting" (Jack Thomson, LKML, 2026-01-19), carried for
Firecracker guests in e2b-dev/fc-kernels PR #19 and advertised by e2b-dev/firecracker PR #14.

Without it (virtio 1.4) hinting is lock-free: a hinted page may be reused the moment the allocator wants
it (``BAL-FPH-DRV-7``), so a host may only *skip* hinted pages, never change them. With it the driver
keeps each hinted page until the device has used the buffer that hints it (``PROP-HWA-DRV-1``); only
then does the page join the list the shrinker and DONE give back. A host may then discard the range
before it uses the buffer (``PROP-HWA-DEV-3``), which is what Firecracker does at once, provided nothing
happens to the pages after the use (``PROP-HWA-DEV-1``).
"""

from __future__ import annotations

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.hinting import FreePageHintDriver
from refmodel.balloon.proposals.bits import BITS, Proposal
from refmodel.errors import LocalSpecViolation, PeerSpecViolation, guarded
from refmodel.system.guest import bits, range_mask
from refmodel.virtio.features import Feature

HINT_WAIT_ON_ACK = BITS[Proposal.HINT_WAIT_ON_ACK].mask


def check_accepted(features: int) -> None:
    """The device's check of the driver's accepted features (``PROP-HWA-DRV-2``)."""
    if features & HINT_WAIT_ON_ACK and not features & Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT.mask:
        raise PeerSpecViolation("PROP-HWA-DRV-2", "HINT_WAIT_ON_ACK accepted without FREE_PAGE_HINT")


class WaitOnAckDriver(FreePageHintDriver):
    """The hinting driver of the RFC: each hint buffer carries its pages as its token; a page is ``acked``
    (reusable, on free_page_list) once its buffer is used. DONE releases acked pages at once and the
    rest as their buffers come back."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.in_flight = 0  # pages whose hint buffer the device has not used yet
        self.acked = 0  # hinted pages the device has acknowledged: the shrinker and DONE may take these
        self.release_on_ack = 0  # DONE came while these were in flight
        self.acks = 0
        self.acked_ever = 0  # every page whose hint buffer the device has used

    def _reap(self) -> None:
        for used in self.vq.harvest():
            token = used.token
            if isinstance(token, tuple) and token[0] == "hint":
                self.acks += 1
                self.acked_ever |= token[1]
                self.in_flight &= ~token[1]
                if late := token[1] & self.release_on_ack:
                    self.release_on_ack &= ~late
                    self.guest.release_hinted(late)
                self.acked |= token[1] & ~late
            elif isinstance(token, tuple) and token[0] == "id":
                self._id_free.append(token[1])
            elif token == "stop":
                self.stops_returned += 1
        self._flush()

    @guarded
    def reap(self) -> int:
        """The used-buffer interrupt: collect ACKs. Returns the hinted pages now reusable."""
        self._reap()
        return self.acked.bit_count()

    def release_after_done(self, pages: int) -> None:
        """DONE: acked pages go back now, pages in flight when their buffer is used (``PROP-HWA-DRV-1``)."""
        self.release_on_ack |= pages & self.in_flight
        self.guest.release_hinted(pages & ~self.in_flight)
        self.acked &= ~pages

    def reclaim(self, page: int) -> None:
        """The guest's allocator takes a hinted page before DONE (the shrinker), initializing it."""
        if not self.acked >> page & 1:
            raise LocalSpecViolation("PROP-HWA-DRV-1", f"page {page} reused before its hint buffer was used")
        self.acked &= ~(1 << page)
        self.guest.reuse_hinted(page)

    @guarded
    def shrink(self, count: int) -> int:
        """As :meth:`FreePageHintDriver.shrink`, from acked pages only."""
        pages = bits(self.acked & self.guest.hinted)[:max(count, 0)]
        for p in pages:
            self.vq.mem.fill(self.guest.page_addr(p), BALLOON_PAGE_SIZE, 0)
        mask = sum(1 << p for p in pages)
        self.acked &= ~mask
        self.guest.release_hinted(mask)
        return len(pages)

    @guarded
    def hint_one(self) -> bool:
        """As :meth:`FreePageHintDriver.hint_one`; ACKs are collected first, in every state (after DONE the
        pages still in flight come back only as their buffers are used)."""
        self._reap()
        return super().hint_one()

    def _add_hint(self, start: int, order: int, mask: int) -> None:
        """As :meth:`FreePageHintDriver._add_hint`; the buffer's token names its pages, held until used."""
        self.vq.add(writable=[(self.guest.page_addr(start), BALLOON_PAGE_SIZE << order)],
                    token=("hint", mask))
        self.in_flight |= mask


# -- the reference device and driver under the profile (composed by refmodel.balloon.proposals.reference) --

from typing import Any  # noqa: E402 - after the profile's own model

from refmodel.balloon.proposals.common import ProposalDevice, ProposalDriver  # noqa: E402

P = Proposal.HINT_WAIT_ON_ACK


class WaitOnAckBalloonDevice(ProposalDevice):
    """The device: judges the driver's acceptance (PROP-HWA-DRV-2). It uses every hint buffer in the turn it
    sees it, whatever the ID (PROP-HWA-DEV-2, as the 1.4 reference does), and changes no hinted page
    (it takes PROP-HWA-DEV-3's permission to discard only as a test peer: ``discard_before_use``)."""

    discard_before_use = False

    def check_proposal_features(self, proposal: int, base: int) -> None:
        check_accepted(proposal | base)
        super().check_proposal_features(proposal, base)

    def apply_hint(self, pages: int) -> None:
        super().apply_hint(pages)
        if self.discard_before_use and self.proposal_has(P):  # PROP-HWA-DEV-3: before the buffer is used
            self._touch(pages, None, "PROP-HWA-DRV-1", "hinted page discarded before its buffer was used")


class WaitOnAckBalloonDriver(ProposalDriver):
    """The driver: with the bit negotiated its hinting side is :class:`WaitOnAckDriver`."""

    wait_on_ack_class: type[FreePageHintDriver] = WaitOnAckDriver

    def make_hint_driver(self, *args: Any, **kwargs: Any) -> FreePageHintDriver:
        if self.proposal_has(P):
            return self.wait_on_ack_class(*args, **kwargs)
        return super().make_hint_driver(*args, **kwargs)
