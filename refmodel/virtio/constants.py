"""Numbers the spec defines, spelled as the spec spells them. Each group cites its section."""

from __future__ import annotations

from enum import IntEnum, IntFlag

# §5.5.1
VIRTIO_ID_BALLOON = 5


class DeviceStatus(IntFlag):
    """§2.1 device status bits."""

    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    DEVICE_NEEDS_RESET = 64
    FAILED = 128


# §2.7.5 descriptor flags
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
# §2.7.6 / §2.7.8 ring flags
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1

# §2.7: "Queue Size value is always a power of 2. The maximum Queue Size value is 32768."
VIRTQ_MAX_SIZE = 32768
# §2.7.5.2: chains are limited to 2^32 bytes in total.
VIRTQ_MAX_CHAIN_BYTES = 1 << 32

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
