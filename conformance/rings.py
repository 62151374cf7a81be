"""Which ring's requirements a balloon-level run judges (``--ring``): the other ring's are not applicable.

A run over packed rings (:attr:`conformance.machines.base.GuestMachine.ring`) never reaches the split
ring's checks unless the driver under test declined VIRTIO_F_RING_PACKED; a split run never offers it, so
RSV-DRV-4 ("accept it if offered") cannot come up. Checks that never ran for that reason are
not-applicable rather than skipped; a check that ran keeps its verdict.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

#: Requirement-ID prefixes of each ring's own rules.
RING_PREFIX = {"split": "SPLIT-", "packed": "PACKED-"}
#: Requirements only a packed offer brings up.
PACKED_OFFER_ONLY = ("RSV-DRV-4",)


def ring_scope(cls: type, judged: Iterable[object]) -> tuple[object, ...]:
    """``judged`` (runner Verdicts) with the skipped checks of the ring not in play made not-applicable."""
    ring = getattr(cls, "ring", None)
    if ring not in RING_PREFIX or getattr(cls, "scope", ""):  # a virtqueue-level machine: its own scope
        return tuple(judged)
    out = []
    for v in judged:
        rid = v.requirement.id  # type: ignore[attr-defined]
        if v.verdict == "skipped":  # type: ignore[attr-defined]
            if ring == "packed" and rid.startswith(RING_PREFIX["split"]):
                v = attrs.evolve(v, reason="the run's queues are packed (--ring packed): no split ring",
                                 missing=())
            elif ring == "split" and rid in PACKED_OFFER_ONLY:
                v = attrs.evolve(v, reason="the run's reference device does not offer VIRTIO_F_RING_PACKED "
                                           "(run --ring packed)", missing=())
            else:
                out.append(v)
                continue
            v = attrs.evolve(v, verdict="not-applicable")
        out.append(v)
    return tuple(out)
