"""Profile ``stats-only``: Amit Shah's ask in the 2016 seed thread (2016-04-25): "a guest driver indicates
it's not going to participate in ballooning activity (ie a guest will ignore any ballooning requests
from the host), but use the driver just for stats-sharing purposes". No text or bit exists upstream.

Our reading: the driver declares the mode by accepting ``VIRTIO_BALLOON_F_STATS_ONLY`` (a placeholder
bit, :mod:`.bits`), so the host learns it at FEATURES_OK; inflateq and deflateq keep their indices but
stay empty (``PROP-SO-DRV-1``); the mode does not change after DRIVER_OK (``PROP-SO-DRV-2``); the host
does not ask for pages (``PROP-SO-DEV-1``); statistics, hinting and reporting go on.
"""

from __future__ import annotations

from refmodel.balloon.proposals.bits import BITS, Proposal
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.errors import LocalSpecViolation, PeerSpecViolation

STATS_ONLY = BITS[Proposal.STATS_ONLY].mask
_BALLOON_QUEUES = ("inflateq", "deflateq")


class StatsOnlyDevice:
    """The host's side of the mode: what it learned at FEATURES_OK, and what it then refuses."""

    def __init__(self) -> None:
        self.stats_only: bool | None = None  # None until FEATURES_OK
        self.live = False  # DRIVER_OK seen

    def features_ok(self, accepted: int) -> None:
        """FEATURES_OK: the mode is what the driver accepted. After DRIVER_OK a different mode is a change."""
        mode = bool(accepted & STATS_ONLY)
        if self.live and mode != self.stats_only:
            name = "stats-only" if mode else "ballooning"
            raise PeerSpecViolation("PROP-SO-DRV-2", f"mode changed to {name} after DRIVER_OK")
        self.stats_only = mode

    def driver_ok(self) -> None:
        self.live = True

    def buffer_on(self, queue: str) -> None:
        """A buffer the driver made available on ``queue``."""
        if self.stats_only and queue in _BALLOON_QUEUES:
            raise PeerSpecViolation("PROP-SO-DRV-1",
                                    f"a buffer on {queue} from a driver that declared stats-only")

    def set_num_pages(self, num_pages: int, actual: int) -> int:
        """The host's target; a stats-only guest is never asked for pages (``PROP-SO-DEV-1``)."""
        if self.stats_only and num_pages > actual:
            raise LocalSpecViolation("PROP-SO-DEV-1", f"num_pages {num_pages} above actual {actual} "
                                     "for a stats-only driver")
        return num_pages


def pages_kept(guest_pages: int, target_pages: int, *, stats_only: bool) -> int:
    """Pages the guest keeps when the host asks for ``target_pages``: all of them in stats-only mode."""
    return guest_pages if stats_only else max(guest_pages - target_pages, 0)


def mib(pages: int) -> float:
    return pages * BALLOON_PAGE_SIZE / (1 << 20)


# -- the reference device and driver under the profile (composed by refmodel.balloon.proposals.reference) --

from refmodel.balloon.device import needs_reset_on_breach  # noqa: E402 - after the profile's own model
from refmodel.balloon.proposals.common import ProposalDevice, ProposalDriver  # noqa: E402
from refmodel.errors import guarded  # noqa: E402
from refmodel.virtio.virtq import Chain  # noqa: E402

P = Proposal.STATS_ONLY


class StatsOnlyBalloonDevice(ProposalDevice):
    """The device: refuses balloon buffers and a mode change (PROP-SO-DRV-1, -2); keeps num_pages at most
    actual (PROP-SO-DEV-1) unless ``asks_anyway`` (a test peer: the rule is a SHOULD NOT)."""

    asks_anyway = False

    def check_proposal_features(self, proposal: int, base: int) -> None:
        if self.status.driver_ok and self.proposal_offer & STATS_ONLY:
            was, now = self.proposal_has(P), bool(proposal & STATS_ONLY)
            if was != now:
                raise PeerSpecViolation("PROP-SO-DRV-2", f"mode changed to {'stats-only' if now else 'ballooning'} "
                                        "after DRIVER_OK")
        super().check_proposal_features(proposal, base)

    def _refuse(self, queue: str) -> None:
        if self.proposal_has(P):
            raise PeerSpecViolation("PROP-SO-DRV-1", f"a buffer on {queue} from a driver that declared stats-only")

    def on_inflateq(self, chain: Chain) -> int | None:
        self._refuse("inflateq")
        return super().on_inflateq(chain)

    def on_deflateq(self, chain: Chain) -> int | None:
        self._refuse("deflateq")
        return super().on_deflateq(chain)

    def _capped(self, num_pages: int) -> int:
        if self.asks_anyway or not self.proposal_has(P):
            return num_pages
        return min(num_pages, self.config.get("actual"))

    @guarded
    def set_target(self, num_pages: int) -> None:
        super().set_target(self._capped(num_pages))

    @needs_reset_on_breach
    @guarded
    def _write_status(self, value: int) -> None:
        super()._write_status(value)
        if self.proposal_has(P) and self._capped(self.target) != self.target:
            self.target = self._capped(self.target)  # a target set before the driver said so
            self.config.device_set("num_pages", self.target)


class StatsOnlyBalloonDriver(ProposalDriver):
    """The driver: declares the mode (with STATS_VQ, so the device is still of use) and never inflates."""

    def resize(self) -> None:
        if not self.proposal_has(P):
            super().resize()
