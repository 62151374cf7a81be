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
