"""Profile ``device-init-reported``: oasis-tcs/virtio-spec issue #244 (Michael S. Tsirkin, 2026-05-03),
``VIRTIO_BALLOON_F_DEVICE_INIT_REPORTED``, proposed as bit 6 (see :mod:`.bits`).

The device says, through the used length of each reporting_vq element, that it initialized the reported
pages (zeros, or poison_val with PAGE_POISON). Our reading allows only 0 and the whole length
(``PROP-DIR-DEV-1``); the driver trusts nothing else (``PROP-DIR-DRV-1``).
"""

from __future__ import annotations

from collections.abc import Callable

from refmodel.errors import PeerSpecViolation


def report_used_len(length: int, initialized: bool) -> int:
    """The device side of #244 (``PROP-DIR-DEV-1``): the whole length if every page was initialized."""
    return length if initialized else 0


def reported_initialized(length: int, used_len: int,
                         reads_initialized: Callable[[], bool] | None = None) -> bool:
    """The driver's reading of one returned reporting_vq element (``PROP-DIR-DRV-1``), checked."""
    if used_len not in (0, length):
        raise PeerSpecViolation("PROP-DIR-DEV-1", f"used length {used_len} for a {length}-byte report: "
                                "neither 0 nor the whole length")
    if used_len and reads_initialized is not None and not reads_initialized():
        raise PeerSpecViolation("PROP-DIR-DEV-1", "report marked initialized but its pages hold other data")
    return used_len == length and length > 0


# -- the reference device and driver under the profile (composed by refmodel.balloon.proposals.reference) --

from refmodel.balloon.constants import BALLOON_PAGE_SIZE  # noqa: E402 - after the profile's own model
from refmodel.balloon.proposals.bits import Proposal  # noqa: E402
from refmodel.balloon.proposals.common import ProposalDevice, ProposalDriver  # noqa: E402
from refmodel.system.guest import bits  # noqa: E402
from refmodel.system.guest_os import poison_pattern  # noqa: E402
from refmodel.virtio.features import Feature  # noqa: E402
from refmodel.virtio.virtq import Chain, UsedBuffer  # noqa: E402

P = Proposal.DEVICE_INIT_REPORTED


class InitReportedBalloonDevice(ProposalDevice):
    """The device: it discards reported pages (zeros) or fills them with poison_val, as 1.4's reference
    does, so each report is initialized and its used length is the whole length (PROP-DIR-DEV-1)."""

    def on_reporting_vq(self, chain: Chain) -> int | None:
        used = super().on_reporting_vq(chain)
        return report_used_len(chain.writable_len, True) if self.proposal_has(P) else used


class InitReportedBalloonDriver(ProposalDriver):
    """The driver: reads each returned report's used length (PROP-DIR-DRV-1), checking a claim against the
    pages; ``initialized_reports`` counts the reports it may skip initializing."""

    initialized_reports = 0
    reports_checked = 0

    def _reads_initialized(self, mask: int) -> bool:
        assert self.os is not None
        want = poison_pattern(self.poison_val) if self.negotiated_has(Feature.VIRTIO_BALLOON_F_PAGE_POISON) \
            else bytes(BALLOON_PAGE_SIZE)
        return all(self.os.mem.read(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) == want for p in bits(mask))

    def _used_reporting_vq(self, used: UsedBuffer) -> None:
        if self.proposal_has(P):
            mask = int(used.token)  # type: ignore[call-overload]
            if reported_initialized(mask.bit_count() * BALLOON_PAGE_SIZE, used.len,
                                    lambda: self._reads_initialized(mask)):
                self.initialized_reports += 1
            self.reports_checked += 1
        super()._used_reporting_vq(used)
