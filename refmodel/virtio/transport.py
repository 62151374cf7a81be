"""What a driver calls on a device: the virtio transport (§4.1, virtio over PCI), in model form.

One method per register access a driver makes through the common configuration structure, the
device-specific configuration and the notification area (§4.1.4), plus :meth:`Transport.take_interrupts`
for what the device signalled (§4.1.4.5, the ISR, or one MSI-X vector per queue). The reference driver
(:mod:`refmodel.balloon.driver`) talks to any object with these methods: the reference device, a C
library, QEMU over qtest, or a vhost-user backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import attrs

from refmodel.virtio.virtq import QueueAddresses


def _queue_set(queues: Iterable[int]) -> frozenset[int]:
    return frozenset(queues)


@attrs.frozen
class Interrupts:
    """What the device signalled since the last :meth:`Transport.take_interrupts`.

    ``queues``: used-buffer notifications, by queue index (§2.7.7.2). ``config``: a configuration change
    notification (§4.1.4.5).
    """

    queues: frozenset[int] = attrs.field(default=frozenset(), converter=_queue_set)
    config: bool = False

    def __bool__(self) -> bool:
        return bool(self.queues or self.config)


@runtime_checkable
class Transport(Protocol):
    """The driver-facing side of a device (§4.1.4). Offsets and sizes are in bytes."""

    def read_device_features(self) -> int:
        """All 64 ``device_feature`` bits (§4.1.4.3: both ``device_feature_select`` windows)."""
        ...

    def write_driver_features(self, value: int) -> None:
        """All 64 ``driver_feature`` bits the driver accepts (§2.2, §4.1.4.3)."""
        ...

    def read_status(self) -> int:
        """``device_status`` (§2.1)."""
        ...

    def write_status(self, value: int) -> None:
        """``device_status`` (§2.1); 0 resets the device (§2.4)."""
        ...

    def config_generation(self) -> int:
        """``config_generation`` (§2.5.1, §4.1.4.3)."""
        ...

    def read_config(self, offset: int, size: int) -> int:
        """A little-endian read of the device-specific configuration (§2.5, §4.1.4.6)."""
        ...

    def write_config(self, offset: int, size: int, value: int) -> None:
        """A little-endian write of the device-specific configuration (§2.5, §4.1.4.6)."""
        ...

    def queue_max_size(self, index: int) -> int:
        """``queue_size`` as the device reads it before the driver writes it: the maximum, 0 if absent."""
        ...

    def enable_queue(self, index: int, size: int, addrs: QueueAddresses) -> None:
        """``queue_size``, ``queue_desc``/``driver``/``device`` and ``queue_enable`` = 1 (§4.1.5.1.3)."""
        ...

    def notify(self, index: int) -> None:
        """An available buffer notification for queue ``index`` (§4.1.5.2)."""
        ...

    def take_interrupts(self) -> Interrupts:
        """Used-buffer and configuration-change notifications since the last call (§4.1.5.3, §4.1.5.4)."""
        ...
