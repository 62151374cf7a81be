"""Device-independent numbers (§2), spelled as the spec spells them. Each group cites its section."""

from __future__ import annotations

from enum import IntFlag

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
