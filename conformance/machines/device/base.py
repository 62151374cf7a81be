"""The device machine's state, shared by its mixins, and the helpers every requirement area uses."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.config import CONFIG_FIELDS, ConfigField
from refmodel.balloon.queues import QueueNumbering
from refmodel.system.guest_os import GuestOS
from refmodel.system.provenance import PageHistory
from refmodel.virtio.features import Feature, has

from conformance.interface import Capability
from conformance.machines.base import GuestMachine
from conformance.machines.device.canary import CanaryDriver


class DeviceMachine(GuestMachine):
    """The device under test (``dev``, behind the Guarded proxy), the reference driver (``drv``) and the
    guest (``os``), with what each requirement area remembers between steps."""

    os: GuestOS
    dev: Any
    drv: CanaryDriver
    caps: frozenset[Capability]
    per_queue_irq: bool  # take_interrupts() names exactly the signalled queues
    irq_lag: bool  # the device may signal after its used idx moved (LagsInterrupts: QEMU)
    numbering: QueueNumbering
    offered: int
    features: int  # negotiated
    drop: frozenset[Feature]
    queue_size: int
    # notifications
    last_signalled: dict[str, int]  # queue -> used idx at the last interrupt collection
    notified_at: dict[str, int]  # queue -> used idx when its last notification was seen
    owed: dict[str, tuple[int, int, int]]  # queue -> (used idx then, now, looks so far)
    moved_last: bool  # the last interrupt collection saw some queue's used idx move
    _pending_config: bool  # a configuration change notification not yet matched to a config change
    stray_flag: set[str]  # queues whose avail flags carry NO_INTERRUPT under EVENT_IDX (SPLIT-DEV-11)
    # hinting
    ids_since_stop: set[int]
    stops_seen: int
    current_id: int | None
    applied_at_end: int | None  # pages the device had applied when the last round ended (STOP or DONE)
    # pages
    history: PageHistory  # where each page has been: names the requirement that protects it now
    reused: set[int]  # hinted pages the guest took back and wrote since the last DONE
    frozen: dict[int, bytes]  # free pages the device gave back, as it left them
    used_seen: dict[str, int]  # queue -> used idx up to which used lengths were checked (SPLIT-DEV-15)

    def has(self, feature: Feature) -> bool:
        return has(self.features, feature)

    def _want_feature(self, feature: Feature, on: bool) -> None:
        """Re-probe so that ``feature`` is negotiated (``on``) or not, as far as the device offers it
        (the reset area provides it)."""
        raise NotImplementedError

    def _used_idx(self, name: str) -> int:
        """How far the device has used ``name``: the used idx (split) or used position (packed)."""
        return self.drv.vqs[name].used_mark()

    @property
    def packed(self) -> bool:
        """The queues of this probe are packed (VIRTIO_F_RING_PACKED negotiated)."""
        return self.has(Feature.VIRTIO_F_RING_PACKED)

    def _fields(self) -> list[ConfigField]:
        """The config fields the negotiated features make present."""
        return [f for f in CONFIG_FIELDS if f.feature is None or has(self.features, f.feature)]
