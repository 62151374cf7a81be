"""Profile ``device-init-reported``: oasis-tcs/virtio-spec issue #244 (Michael S. Tsirkin, 2026-05-03),
``VIRTIO_BALLOON_F_DEVICE_INIT_REPORTED``, proposed as bit 6 (see :mod:`.bits`).

The device says, through the used length of each reporting_vq element, that it initialized the reported
pages (zeros, or poison_val with PAGE_POISON). Our reading allows only 0 and the whole length
(``PROP-DIR-DEV-1``); the driver trusts nothing else (``PROP-DIR-DRV-1``).

What it buys: under 1.4 a guest that relies on free pages keeping their value (Linux's init_on_free=1,
page poisoning) must not report free pages unless PAGE_POISON is negotiated (``BAL-FB-DRV-3``; Linux's
``virtballoon_validate`` clears PAGE_REPORTING then). With the bit the guarantee extends to the
non-PAGE_POISON case: the driver keeps PAGE_REPORTING, and initializes again (zeros) the pages of any
report whose used length is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
from refmodel.balloon.proposals.bits import BITS, Proposal, offer  # noqa: E402
from refmodel.balloon.proposals.common import ProposalDevice, ProposalDriver  # noqa: E402
from refmodel.system.guest import bits, range_mask  # noqa: E402
from refmodel.system.guest_os import poison_pattern  # noqa: E402
from refmodel.virtio.features import Feature, check_negotiation, has  # noqa: E402
from refmodel.virtio.virtq import Chain, UsedBuffer  # noqa: E402

P = Proposal.DEVICE_INIT_REPORTED
F = Feature
#: What a device that does not initialize leaves in a reported page (without PAGE_POISON 1.4 allows anything).
HOST_STALE = bytes([0xA5]) * BALLOON_PAGE_SIZE


class InitReportedBalloonDevice(ProposalDevice):
    """The device: it discards reported pages (zeros) or fills them with poison_val, as 1.4's reference
    does, so each report is initialized and its used length is the whole length (PROP-DIR-DEV-1).

    ``initializes_reports`` False: a device that does not promise and returns 0 for every report (QEMU,
    for one, skips the discard while ballooning is inhibited). Without PAGE_POISON 1.4 lets it leave
    anything in a reported page; this one leaves :data:`HOST_STALE`, the worst a guest can meet."""

    initializes_reports = True

    def on_reporting_vq(self, chain: Chain) -> int | None:
        used = super().on_reporting_vq(chain)
        if not self.proposal_has(P):
            return used
        if not self.initializes_reports and self.poison_val is None:
            mask = 0
            for b in chain.writable + chain.readable:  # whole pages of guest memory: checked by the 1.4 part
                mask |= range_mask(b.addr // BALLOON_PAGE_SIZE, b.len // BALLOON_PAGE_SIZE)
            self._touch(mask, HOST_STALE, "BAL-FPR-DRV-3", "reported page left holding what the host had")
        return report_used_len(chain.writable_len, self.initializes_reports)


class InitReportedBalloonDriver(ProposalDriver):
    """The driver: reads each returned report's used length (PROP-DIR-DRV-1), checking a claim against the
    pages; ``initialized_reports`` counts the reports it may skip initializing.

    With ``init_on_free`` and no PAGE_POISON it keeps PAGE_REPORTING when the device offers the bit (1.4
    alone would make it drop PAGE_REPORTING, BAL-FB-DRV-3), and zeroes again the pages of each report
    whose used length is 0 before they go back to the free lists: ``pages_reinitialized`` counts them."""

    initialized_reports = 0
    reports_checked = 0
    pages_reinitialized = 0

    def choose_features(self, offered: int) -> int:
        accepted = super().choose_features(offered)
        reporting = F.VIRTIO_BALLOON_F_PAGE_REPORTING.mask
        if (self.init_on_free and offered & BITS[P].mask and self.features & offered & reporting
                and not accepted & reporting and not has(accepted, F.VIRTIO_BALLOON_F_PAGE_POISON)):
            mine = offer(self.proposals)
            keep = accepted | reporting
            if check_negotiation(offered & ~mine, keep & ~mine).driver_valid and self.wants(P, keep & ~mine):
                accepted = keep | BITS[P].mask  # #244: the device tells us which reports it initialized
        return accepted

    @property
    def relies_on_reports(self) -> bool:
        """Whether the guest keeps free pages initialized and only the profile's used length says a report
        kept them so (PAGE_REPORTING with init_on_free and without PAGE_POISON)."""
        return (self.init_on_free and self.proposal_has(P)
                and not self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON))

    def _reads_initialized(self, mask: int) -> bool:
        assert self.os is not None
        want = poison_pattern(self.poison_val) if self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON) \
            else bytes(BALLOON_PAGE_SIZE)
        return all(self.os.mem.read(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) == want for p in bits(mask))

    def _used_reporting_vq(self, used: UsedBuffer) -> None:
        if self.proposal_has(P):
            mask = int(used.token)  # type: ignore[call-overload]
            if reported_initialized(mask.bit_count() * BALLOON_PAGE_SIZE, used.len,
                                    lambda: self._reads_initialized(mask)):
                self.initialized_reports += 1
            elif self.relies_on_reports:
                self.reinitialize(mask)
            self.reports_checked += 1
        super()._used_reporting_vq(used)

    def reinitialize(self, mask: int) -> None:
        """The guest's init_on_free value (zeros) into pages the device did not say it initialized, before
        they leave isolation."""
        assert self.os is not None
        zeros = bytes(BALLOON_PAGE_SIZE)
        for p in bits(mask):
            self.os.fill(p, zeros)
        self.pages_reinitialized += mask.bit_count()


# -- what the profile buys, from the reference device and driver (bench/bench_proposals.py) -----------------

@dataclass(frozen=True)
class ReportingRun:
    """One guest reporting all its free memory on the reference device, as :func:`report_free_half` ran it."""

    reporting: bool      # the driver's negotiation kept PAGE_REPORTING
    free_pages: int      # free pages when reporting starts (half the guest)
    reported: int        # distinct pages the device took: the host can reclaim them
    reinitialized: int   # pages the driver zeroed again (reports returned with used length 0)
    wire_bytes: int      # ring bytes of the reports: descriptors, avail entries, used elements
    zeroed_free: bool    # every free page holds zeros at the end (init_on_free's promise kept)


def report_free_half(*, profile: bool, init_on_free: bool, device_initializes: bool = True,
                     n_pages: int = 1024, offered: int | None = None) -> ReportingRun:
    """Half of an ``n_pages`` guest in use, the rest reported until every free page went once (a reported
    page is kept out of later reports, as Linux's PageReported does), on a device that offers ``offered``
    (default: the reference offer without PAGE_POISON). ``profile``: the device offers the bit and the
    driver is the profile's; else both are 1.4's. The driver's own negotiation (``choose_features``)
    decides whether it reports at all."""
    from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice
    from refmodel.balloon.driver import BalloonDriver
    from refmodel.balloon.proposals.reference import device_class, driver_class
    from refmodel.system.guest_os import GuestOS
    from refmodel.virtio.split.layout import AVAIL_ELEM_SIZE, VIRTQ_DESC_SIZE, VIRTQ_USED_ELEM_SIZE

    if offered is None:
        offered = DEFAULT_OFFER & ~F.VIRTIO_BALLOON_F_PAGE_POISON.mask
    base_dev: type = device_class([P]) if profile else BalloonDevice
    drv_cls: type = driver_class([P]) if profile else BalloonDriver
    ring = {"descs": 0, "chains": 0}

    class Counting(base_dev):  # type: ignore[misc, valid-type]
        initializes_reports = device_initializes

        def on_reporting_vq(self, chain: Chain) -> int | None:
            ring["chains"] += 1
            ring["descs"] += len(chain.writable) + len(chain.readable)
            return super().on_reporting_vq(chain)

    os_ = GuestOS(n_pages)
    dev = Counting(os_.mem, offered)
    capacity = dev.queue_max["reporting_vq"]
    drv = drv_cls(init_on_free=init_on_free, report_pages=capacity, queue_size=capacity)
    if not drv.probe(dev, os_):
        raise RuntimeError("the reference driver and device did not agree on features")
    while os_.pages.free.bit_count() > n_pages // 2 and os_.workload_alloc_write() is not None:
        pass
    free = os_.pages.free.bit_count()
    parked = 0
    while drv.report():
        for _ in range(3):
            dev.run()
            irq = dev.take_interrupts()
            drv.interrupt(irq.queues, irq.config)
            drv.run()
        done = dev.reported & os_.pages.free
        if not done:
            break
        os_.pages.allocated |= done
        parked |= done
    os_.pages.allocated &= ~parked
    zeros = bytes(BALLOON_PAGE_SIZE)
    return ReportingRun(
        reporting=drv.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_REPORTING), free_pages=free,
        reported=dev.reported.bit_count(), reinitialized=getattr(drv, "pages_reinitialized", 0),
        wire_bytes=(ring["descs"] * VIRTQ_DESC_SIZE
                    + ring["chains"] * (AVAIL_ELEM_SIZE + VIRTQ_USED_ELEM_SIZE)),
        zeroed_free=all(os_.holds(p, zeros) for p in os_.free_pages()))
