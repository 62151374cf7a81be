"""The device machine's state, shared by its mixins, and the helpers every requirement area uses."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.config import CONFIG_FIELDS, ConfigField
from refmodel.balloon.driver import BalloonDriver
from refmodel.balloon.queues import QueueNumbering
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.features import Feature, has
from refmodel.virtio.split.layout import USED_IDX

from conformance.interface import Capability
from conformance.machines.base import GuestMachine


class DeviceMachine(GuestMachine):
    """The device under test (``dev``, behind the Guarded proxy), the reference driver (``drv``) and the
    guest (``os``), with what each requirement area remembers between steps."""

    os: GuestOS
    dev: Any
    drv: BalloonDriver
    caps: frozenset[Capability]
    per_queue_irq: bool  # take_interrupts() names exactly the signalled queues
    numbering: QueueNumbering
    offered: int
    features: int  # negotiated
    drop: frozenset[Feature]
    queue_size: int
    # notifications
    last_signalled: dict[str, int]  # queue -> used idx at the last interrupt collection
    owed: dict[str, tuple[int, int, int]]  # queue -> (used idx then, now, looks so far)
    _pending_config: bool  # a configuration change notification not yet matched to a config change
    # hinting
    ids_since_stop: set[int]
    stops_seen: int
    current_id: int | None
    # pages
    mark: dict[int, str]  # page -> the device requirement that protects it now
    frozen: dict[int, tuple[str, bytes]]  # free pages the device gave back, as it left them

    def has(self, feature: Feature) -> bool:
        return has(self.features, feature)

    def _used_idx(self, name: str) -> int:
        vq = self.drv.vqs[name]
        return self.os.mem.read_u16(vq.addrs.used + USED_IDX)

    def _fields(self) -> list[ConfigField]:
        """The config fields the negotiated features make present."""
        return [f for f in CONFIG_FIELDS if f.feature is None or has(self.features, f.feature)]
