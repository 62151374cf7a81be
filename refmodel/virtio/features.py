"""Feature bits and the rules of negotiation as data (§2.2, §6).

:func:`check_offer` / :func:`check_negotiation`: is this offer / this negotiation valid, and if not,
which requirements does it break? Every rule is a row of :data:`NEGOTIATION_RULES`. Which balloon
queues exist at which index is :mod:`refmodel.balloon.queues`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs


class Feature(enum.IntEnum):
    """Feature bit numbers: balloon (§5.5.3) and the device-independent ones used here (§6)."""

    VIRTIO_BALLOON_F_MUST_TELL_HOST = 0
    VIRTIO_BALLOON_F_STATS_VQ = 1
    VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 2
    VIRTIO_BALLOON_F_FREE_PAGE_HINT = 3
    VIRTIO_BALLOON_F_PAGE_POISON = 4
    VIRTIO_BALLOON_F_PAGE_REPORTING = 5
    VIRTIO_F_INDIRECT_DESC = 28
    VIRTIO_F_EVENT_IDX = 29
    VIRTIO_F_VERSION_1 = 32
    VIRTIO_F_ACCESS_PLATFORM = 33
    VIRTIO_F_RING_PACKED = 34
    VIRTIO_F_IN_ORDER = 35
    VIRTIO_F_RING_RESET = 40

    @property
    def mask(self) -> int:
        return 1 << self.value

    def __repr__(self) -> str:  # valid Python, so printed reproducers run as is
        return f"Feature.{self.name}"


#: Every bit a balloon device or driver may offer or accept (§2.2, §5.5.3, §6).
KNOWN_FEATURES = frozenset(Feature)
KNOWN_MASK = sum(f.mask for f in Feature)
BALLOON_FEATURES = frozenset(f for f in Feature if f.value < 24)


def mask_of(features: Iterable[Feature | str]) -> int:
    """Bitmask of feature names or members."""
    m = 0
    for f in features:
        m |= (Feature[f] if isinstance(f, str) else f).mask
    return m


def names_of(mask: int) -> tuple[str, ...]:
    """Names of the known bits in ``mask``, then ``bit<N>`` for unknown ones."""
    out = [f.name for f in Feature if mask & f.mask]
    out += [f"bit{n}" for n in range(mask.bit_length()) if mask >> n & 1 and not (KNOWN_MASK >> n & 1)]
    return tuple(out)


def has(mask: int, feature: Feature) -> bool:
    return bool(mask & feature.mask)


# --- rules -----------------------------------------------------------------------------------------
# Rule kinds. Each row says what it checks and which requirement a breach breaks.


@attrs.frozen
class OnlyOffered:
    """The driver accepts only offered bits."""

    req_id: str = "FEAT-DRV-1"


@attrs.frozen
class NoUnknown:
    """``who`` offers/accepts no bit outside :data:`KNOWN_FEATURES`."""

    who: str
    req_id: str


@attrs.frozen
class Requires:
    """``feature`` may be offered/accepted only together with ``needs``."""

    feature: Feature
    needs: Feature
    who: str
    req_id: str


@attrs.frozen
class AcceptIfOffered:
    """The driver accepts ``feature`` whenever it is offered (MUST or SHOULD, per the requirement)."""

    feature: Feature
    req_id: str


@attrs.frozen
class MustOffer:
    """The device offers ``feature``."""

    feature: Feature
    req_id: str


@attrs.frozen
class RequiresIfDriverExpectsContents:
    """§5.5.3.1: a driver expecting free pages to keep a value accepts ``feature`` only with ``needs``."""

    feature: Feature
    needs: Feature
    req_id: str


Rule = OnlyOffered | NoUnknown | Requires | AcceptIfOffered | MustOffer | RequiresIfDriverExpectsContents

#: Dependencies between bits. The spec defines none among the bits modelled here; the table is kept
#: so a dependency (e.g. one from a future proposal) is one row, checked for both roles.
FEATURE_DEPENDENCIES: tuple[tuple[Feature, Feature], ...] = ()

NEGOTIATION_RULES: tuple[Rule, ...] = (
    MustOffer(Feature.VIRTIO_F_VERSION_1, "RSV-DEV-1"),
    NoUnknown("device", "FEAT-DEV-3"),
    *(Requires(f, n, "device", "FEAT-DEV-1") for f, n in FEATURE_DEPENDENCIES),
    OnlyOffered(),
    NoUnknown("driver", "FEAT-DRV-3"),
    *(Requires(f, n, "driver", "FEAT-DRV-2") for f, n in FEATURE_DEPENDENCIES),
    AcceptIfOffered(Feature.VIRTIO_F_VERSION_1, "RSV-DRV-1"),
    AcceptIfOffered(Feature.VIRTIO_BALLOON_F_MUST_TELL_HOST, "BAL-FB-DRV-1"),
    AcceptIfOffered(Feature.VIRTIO_F_RING_PACKED, "RSV-DRV-4"),
    RequiresIfDriverExpectsContents(
        Feature.VIRTIO_BALLOON_F_PAGE_REPORTING, Feature.VIRTIO_BALLOON_F_PAGE_POISON, "BAL-FB-DRV-3"
    ),
)


@attrs.frozen
class Breach:
    """One rule broken by one side."""

    req_id: str
    role: str
    keyword: str
    detail: str

    @property
    def is_mandatory(self) -> bool:
        return self.keyword in ("MUST", "MUST NOT")


@attrs.frozen
class NegotiationVerdict:
    """The result of checking an offer and an acceptance. ``valid`` ignores SHOULD-level advice."""

    offered: int
    accepted: int
    breaches: tuple[Breach, ...]

    @property
    def valid(self) -> bool:
        return not any(b.is_mandatory for b in self.breaches)

    @property
    def driver_valid(self) -> bool:
        """No mandatory rule binding the driver is broken (what a device judges FEATURES_OK by)."""
        return not any(b.is_mandatory and b.role == "driver" for b in self.breaches)

    @property
    def advisories(self) -> tuple[Breach, ...]:
        return tuple(b for b in self.breaches if not b.is_mandatory)

    @property
    def violations(self) -> tuple[Breach, ...]:
        return tuple(b for b in self.breaches if b.is_mandatory)


def _breach(req_id: str, detail: str) -> Breach:
    from spec.catalogue import requirement

    r = requirement(req_id)
    return Breach(req_id, r.role, r.keyword, detail)


def _apply(rule: Rule, offered: int, accepted: int | None, expects_contents: bool) -> Breach | None:
    match rule:
        case MustOffer(feature, req_id):
            if not offered & feature.mask:
                return _breach(req_id, f"{feature.name} not offered")
        case NoUnknown("device", req_id):
            if extra := offered & ~KNOWN_MASK:
                return _breach(req_id, f"device offers undefined bits {names_of(extra)}")
        case Requires(feature, needs, "device", req_id):
            if offered & feature.mask and not offered & needs.mask:
                return _breach(req_id, f"{feature.name} offered without {needs.name}")
        case _ if accepted is None:
            return None
        case OnlyOffered(req_id):
            if extra := accepted & ~offered:
                return _breach(req_id, f"driver accepted {names_of(extra)} which were not offered")
        case NoUnknown("driver", req_id):
            if extra := accepted & ~KNOWN_MASK:
                return _breach(req_id, f"driver accepted undefined bits {names_of(extra)}")
        case Requires(feature, needs, "driver", req_id):
            if accepted & feature.mask and not accepted & needs.mask:
                return _breach(req_id, f"{feature.name} accepted without {needs.name}")
        case AcceptIfOffered(feature, req_id):
            if offered & feature.mask and not accepted & feature.mask:
                return _breach(req_id, f"{feature.name} offered but not accepted")
        case RequiresIfDriverExpectsContents(feature, needs, req_id):
            if expects_contents and accepted & feature.mask and not accepted & needs.mask:
                return _breach(req_id, f"{feature.name} accepted without {needs.name} by a driver "
                                       "that expects free pages to keep their contents")
    return None


def check_offer(offered: int) -> NegotiationVerdict:
    """Check the device's offer alone (the device-side rules)."""
    breaches = [b for r in NEGOTIATION_RULES if (b := _apply(r, offered, None, False))]
    return NegotiationVerdict(offered, 0, tuple(breaches))


def check_negotiation(offered: int, accepted: int, *, driver_expects_contents: bool = False
                      ) -> NegotiationVerdict:
    """Check an offer and the driver's acceptance against every rule of :data:`NEGOTIATION_RULES`.

    ``driver_expects_contents`` says the driver expects free pages to keep an initialized value (page
    poisoning or init-on-free in the guest), which §5.5.3.1 makes the condition of ``BAL-FB-DRV-3``.
    """
    breaches = [b for r in NEGOTIATION_RULES if (b := _apply(r, offered, accepted, driver_expects_contents))]
    return NegotiationVerdict(offered, accepted, tuple(breaches))
