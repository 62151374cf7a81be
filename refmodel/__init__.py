"""Sans-I/O reference model of virtio-balloon and the split virtqueue it runs on.

Read top-down: ``errors`` (what can go wrong), ``constants`` and ``features`` (what is negotiated),
``status`` (the lifecycle table), ``config`` (§5.5.4), ``memory`` and ``layout`` (bytes),
``virtq`` / ``virtq_driver`` / ``virtq_device`` (§2.7), ``ambiguities`` (every choice the spec left open).
This package never imports ``conformance``, ``hypothesis`` or ``pytest``.
"""

from .ambiguities import AMBIGUITIES, Ambiguity
from .config import CONFIG_FIELDS, BalloonConfigSpace, VirtioBalloonConfig
from .constants import (VIRTIO_BALLOON_CMD_ID_DONE, VIRTIO_BALLOON_CMD_ID_STOP, DeviceStatus)
from .errors import (BrokenSide, LayoutError, LocalSpecViolation, MemoryAccessError, NotNegotiated,
                     PeerSpecViolation, SpecViolation, VirtioModelError)
from .features import (BALLOON_QUEUES, Feature, NegotiationVerdict, QueueNumbering, balloon_queue_indices,
                       check_negotiation, check_offer, mask_of, names_of)
from .layout import VirtqAvailHeader, VirtqDesc, VirtqUsedElem, VirtqUsedHeader
from .memory import GuestMemory
from .status import DeviceStatusMachine, Role, StatusEvent, StatusState
from .virtq import Buffer, Chain, QueueAddresses, UsedBuffer, virtq_need_event
from .virtq_device import SplitQueueDevice
from .virtq_driver import IndirectArena, QueueFull, SplitQueueDriver

__all__ = [
    "AMBIGUITIES", "Ambiguity", "BALLOON_QUEUES", "BalloonConfigSpace", "BrokenSide", "Buffer", "CONFIG_FIELDS",
    "Chain", "DeviceStatus", "DeviceStatusMachine", "Feature", "GuestMemory", "IndirectArena", "LayoutError",
    "LocalSpecViolation", "MemoryAccessError", "NegotiationVerdict", "NotNegotiated", "PeerSpecViolation",
    "QueueAddresses", "QueueFull", "QueueNumbering", "Role", "SpecViolation", "SplitQueueDevice",
    "SplitQueueDriver", "StatusEvent", "StatusState", "UsedBuffer", "VIRTIO_BALLOON_CMD_ID_DONE",
    "VIRTIO_BALLOON_CMD_ID_STOP", "VirtioBalloonConfig", "VirtioModelError", "VirtqAvailHeader", "VirtqDesc",
    "VirtqUsedElem", "VirtqUsedHeader", "balloon_queue_indices", "check_negotiation", "check_offer",
    "mask_of", "names_of", "virtq_need_event",
]
