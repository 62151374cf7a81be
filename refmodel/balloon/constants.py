"""Numbers §5.5 defines for the balloon, spelled as the spec spells them. Each group cites its section."""

from __future__ import annotations

from enum import IntEnum

# §5.5.1
VIRTIO_ID_BALLOON = 5

# §5.5.6.5 reserved command IDs
VIRTIO_BALLOON_CMD_ID_STOP = 0
VIRTIO_BALLOON_CMD_ID_DONE = 1
# §5.5.6: PFNs are "divided by 4096", independent of the guest page size.
VIRTIO_BALLOON_PFN_SHIFT = 12
BALLOON_PAGE_SIZE = 1 << VIRTIO_BALLOON_PFN_SHIFT


class BalloonStatTag(IntEnum):
    """§5.5.6.4 memory statistics tags."""

    VIRTIO_BALLOON_S_SWAP_IN = 0
    VIRTIO_BALLOON_S_SWAP_OUT = 1
    VIRTIO_BALLOON_S_MAJFLT = 2
    VIRTIO_BALLOON_S_MINFLT = 3
    VIRTIO_BALLOON_S_MEMFREE = 4
    VIRTIO_BALLOON_S_MEMTOT = 5
    VIRTIO_BALLOON_S_AVAIL = 6
    VIRTIO_BALLOON_S_CACHES = 7
    VIRTIO_BALLOON_S_HTLB_PGALLOC = 8
    VIRTIO_BALLOON_S_HTLB_PGFAIL = 9


# §5.5.6.3: "an array of 10-byte entries" (le16 tag, le64 val, packed)
VIRTIO_BALLOON_STAT_SIZE = 10
