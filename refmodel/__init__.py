"""Sans-I/O reference model of virtio-balloon and the virtqueues it runs on.

The subpackages follow the spec's layers; read them top-down:

- ``errors`` (what can go wrong) and ``ambiguities`` (every choice the spec left open);
- ``virtio`` (§2–§4): ``features`` (negotiation), ``status`` (the lifecycle table), ``memory``,
  ``transport`` (what a driver calls on a device), ``virtq`` (buffers and chains), and ``split`` (§2.7:
  ``layout``, ``driver``, ``device``);
- ``balloon`` (§5.5): ``constants``, ``config``, ``queues``, one module per operation (``inflate``,
  ``stats``, ``hinting``, ``reporting``, ``poison``), the ``device`` and ``driver`` that compose them, and
  the 2016 ``seed2016`` protocol;
- ``system``: guest pages (``guest``), the guest OS, the migration host, whole scenarios.

This package never imports ``conformance``, ``hypothesis`` or ``pytest``.
"""

from refmodel.ambiguities import AMBIGUITIES, Ambiguity
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.driver import BalloonDriver
from refmodel.capabilities import Capability
from refmodel.virtio.transport import Interrupts, Transport
from refmodel.balloon.config import CONFIG_FIELDS, BalloonConfigSpace, VirtioBalloonConfig
from refmodel.virtio.constants import DeviceStatus
from refmodel.balloon.constants import VIRTIO_BALLOON_CMD_ID_DONE, VIRTIO_BALLOON_CMD_ID_STOP
from refmodel.errors import (BrokenSide, LayoutError, LocalSpecViolation, MemoryAccessError, NotNegotiated,
                     PeerSpecViolation, SpecViolation, VirtioModelError)
from refmodel.virtio.features import (Feature, NegotiationVerdict, check_negotiation, check_offer, mask_of,
    names_of)
from refmodel.balloon.queues import BALLOON_QUEUES, QueueNumbering, balloon_queue_indices
from refmodel.virtio.split.layout import VirtqAvailHeader, VirtqDesc, VirtqUsedElem, VirtqUsedHeader
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.status import DeviceStatusMachine, Role, StatusEvent, StatusState
from refmodel.virtio.virtq import Buffer, Chain, QueueAddresses, UsedBuffer, virtq_need_event
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import IndirectArena, QueueFull, SplitQueueDriver

__all__ = [
    "AMBIGUITIES", "Ambiguity", "BALLOON_QUEUES", "BalloonConfigSpace", "BalloonDevice", "BalloonDriver", "Capability",
    "Interrupts", "Transport", "BrokenSide", "Buffer", "CONFIG_FIELDS",
    "Chain", "DeviceStatus", "DeviceStatusMachine", "Feature", "GuestMemory", "IndirectArena", "LayoutError",
    "LocalSpecViolation", "MemoryAccessError", "NegotiationVerdict", "NotNegotiated", "PeerSpecViolation",
    "QueueAddresses", "QueueFull", "QueueNumbering", "Role", "SpecViolation", "SplitQueueDevice",
    "SplitQueueDriver", "StatusEvent", "StatusState", "UsedBuffer", "VIRTIO_BALLOON_CMD_ID_DONE",
    "VIRTIO_BALLOON_CMD_ID_STOP", "VirtioBalloonConfig", "VirtioModelError", "VirtqAvailHeader", "VirtqDesc",
    "VirtqUsedElem", "VirtqUsedHeader", "balloon_queue_indices", "check_negotiation", "check_offer",
    "mask_of", "names_of", "virtq_need_event",
]
