"""Which balloon virtqueues exist, at which index (§5.5.2), under the three queue-numbering
interpretations in use (ambiguity ``AMB-VQ-NUMBERING``)."""

from __future__ import annotations

import enum

import attrs

from refmodel.virtio.features import Feature, has

class QueueNumbering(enum.Enum):
    """How absent optional queues affect the index of later ones (ambiguity ``AMB-VQ-NUMBERING``).

    ``FIXED``: the §5.5.2 list read literally; indices 0-4 never move.
    ``COMPACT_BY_OFFERED``: absent queues are dropped and later ones shift down, judged by the device's
    offered features (QEMU, Firecracker, crosvm since 2025).
    ``COMPACT_BY_NEGOTIATED``: the same, judged by negotiated features (Linux's ``find_vqs``).
    """

    FIXED = "fixed"
    COMPACT_BY_OFFERED = "compact-by-offered"
    COMPACT_BY_NEGOTIATED = "compact-by-negotiated"


@attrs.frozen
class QueueSpec:
    name: str
    spec_index: int
    feature: Feature | None


#: §5.5.2, in spec order.
BALLOON_QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec("inflateq", 0, None),
    QueueSpec("deflateq", 1, None),
    QueueSpec("statsq", 2, Feature.VIRTIO_BALLOON_F_STATS_VQ),
    QueueSpec("free_page_vq", 3, Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT),
    QueueSpec("reporting_vq", 4, Feature.VIRTIO_BALLOON_F_PAGE_REPORTING),
)


def balloon_queue_indices(numbering: QueueNumbering, offered: int, negotiated: int) -> dict[str, int]:
    """Map each balloon queue the driver may use to its transport index.

    A queue is usable only if its feature is negotiated, under every interpretation. What differs is
    which absent queues still occupy an index.
    """
    out: dict[str, int] = {}
    next_index = 0
    for q in BALLOON_QUEUES:
        usable = q.feature is None or has(negotiated, q.feature)
        if numbering is QueueNumbering.FIXED:
            index = q.spec_index
        else:
            basis = offered if numbering is QueueNumbering.COMPACT_BY_OFFERED else negotiated
            if q.feature is not None and not has(basis, q.feature):
                continue
            index = next_index
            next_index += 1
        if usable:
            out[q.name] = index
    return out


def numberings_agree(offered: int, negotiated: int) -> bool:
    """True when all three interpretations give the same queue indices (then none can be blamed)."""
    maps = {n: tuple(sorted(balloon_queue_indices(n, offered, negotiated).items())) for n in QueueNumbering}
    return len(set(maps.values())) == 1
