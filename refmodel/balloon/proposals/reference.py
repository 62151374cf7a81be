"""The reference device and driver under a set of proposal profiles: the selected profiles' classes
composed over :class:`~.common.ProposalDevice` / :class:`~.common.ProposalDriver`, optionally under a
harness class (the suite's watched device or canary driver) that comes first.

Every profile runs; :class:`ProfileNotRunnable` refuses unknown names and two profiles on one bit.
"""

from __future__ import annotations

from collections.abc import Iterable

from refmodel.balloon.proposals.bitmap_inflate import BitmapReferenceDevice, BitmapReferenceDriver
from refmodel.balloon.proposals.bits import Proposal, offer
from refmodel.balloon.proposals.combined_vq import CombinedReferenceDevice, CombinedReferenceDriver
from refmodel.balloon.proposals.common import ProposalDevice, ProposalDriver
from refmodel.balloon.proposals.device_init_on_inflate import InitOnInflateBalloonDevice, InitOnInflateBalloonDriver
from refmodel.balloon.proposals.device_init_reported import InitReportedBalloonDevice, InitReportedBalloonDriver
from refmodel.balloon.proposals.hint_wait_on_ack import WaitOnAckBalloonDevice, WaitOnAckBalloonDriver
from refmodel.balloon.proposals.stats_only import StatsOnlyBalloonDevice, StatsOnlyBalloonDriver

P = Proposal
DEVICES: dict[Proposal, type[ProposalDevice]] = {
    P.HINT_WAIT_ON_ACK: WaitOnAckBalloonDevice, P.DEVICE_INIT_ON_INFLATE: InitOnInflateBalloonDevice,
    P.DEVICE_INIT_REPORTED: InitReportedBalloonDevice, P.STATS_ONLY: StatsOnlyBalloonDevice,
    P.BITMAP_INFLATE_DEFLATE: BitmapReferenceDevice, P.COMBINED_VQ: CombinedReferenceDevice}
DRIVERS: dict[Proposal, type[ProposalDriver]] = {
    P.HINT_WAIT_ON_ACK: WaitOnAckBalloonDriver, P.DEVICE_INIT_ON_INFLATE: InitOnInflateBalloonDriver,
    P.DEVICE_INIT_REPORTED: InitReportedBalloonDriver, P.STATS_ONLY: StatsOnlyBalloonDriver,
    P.BITMAP_INFLATE_DEFLATE: BitmapReferenceDriver, P.COMBINED_VQ: CombinedReferenceDriver}
#: Profiles whose reference device and driver run (all of them, since the combined queue got an index).
RUNNABLE = tuple(p for p in Proposal if p in DEVICES)


class ProfileNotRunnable(ValueError):
    """A profile that cannot run (one line: which, and why)."""


def proposals_of(names: Iterable[str | Proposal]) -> tuple[Proposal, ...]:
    """The proposals named, in a fixed order; refuses unknown ones, ones that cannot run, and two on one bit
    (PROP-BIT-DEV-1)."""
    out = []
    for n in names:
        try:
            p = n if isinstance(n, Proposal) else Proposal(n)
        except ValueError:
            raise ProfileNotRunnable(f"{n!r}: not a proposal profile (one of: "
                                     f"{', '.join(q.value for q in RUNNABLE)})") from None
        if p not in DEVICES:
            raise ProfileNotRunnable(f"{p.value}: modelled but not runnable: it has no reference device")
        out.append(p)
    ps = tuple(p for p in Proposal if p in out)
    try:
        offer(ps)
    except Exception as e:  # noqa: BLE001 - LocalSpecViolation, re-said as one line
        raise ProfileNotRunnable(f"{' and '.join(p.value for p in ps)}: {e}") from None
    return ps


def _compose(kind: str, table: dict, root: type, proposals: Iterable[str | Proposal],
             harness: type | None) -> type:
    ps = proposals_of(proposals)
    bases = (*((harness,) if harness is not None else ()), *(table[p] for p in ps)) or (root,)
    if harness is not None and not ps:
        bases = (harness, root)
    name = (harness.__name__ if harness is not None else "") + "".join(
        p.name.title().replace("_", "") for p in ps) + kind
    return type(name, bases, {"proposals": ps, "__module__": __name__,
                              "__doc__": f"{kind} under {', '.join(p.value for p in ps) or 'no profile'}"})


def device_class(proposals: Iterable[str | Proposal], harness: type | None = None) -> type:
    return _compose("Device", DEVICES, ProposalDevice, proposals, harness)


def driver_class(proposals: Iterable[str | Proposal], harness: type | None = None) -> type:
    return _compose("Driver", DRIVERS, ProposalDriver, proposals, harness)
