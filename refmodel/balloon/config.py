"""The balloon device configuration space (§5.5.4) and the generation counter (§2.5).

:data:`CONFIG_FIELDS` says, for each field, its offset, the feature that makes it exist and which role
may write it. :class:`BalloonConfigSpace` enforces those rules for driver accesses and bumps the
generation on every device-side change, so a driver read loop (:meth:`read_consistent`) can detect a
torn multi-field read.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Callable
from typing import TypeVar

import attrs

from refmodel.errors import LocalSpecViolation, PeerSpecViolation, SpecViolation
from refmodel.virtio.features import Feature, has
from refmodel.virtio.status import Role

T = TypeVar("T")


class VirtioBalloonConfig(ctypes.LittleEndianStructure):
    """§5.5.4 ``struct virtio_balloon_config`` (little-endian even for legacy: BAL-CFG-LEG-1)."""

    __slots__ = ()
    _fields_ = [("num_pages", ctypes.c_uint32), ("actual", ctypes.c_uint32),
                ("free_page_hint_cmd_id", ctypes.c_uint32), ("poison_val", ctypes.c_uint32)]


CONFIG_SIZE = ctypes.sizeof(VirtioBalloonConfig)  # 16


class Writer(enum.Enum):
    DEVICE = "device"
    DRIVER = "driver"


@attrs.frozen
class ConfigField:
    name: str
    offset: int
    size: int
    feature: Feature | None  # None: always present
    writer: Writer
    driver_write_req: str | None  # requirement a driver write breaks, if the driver may not write


CONFIG_FIELDS: tuple[ConfigField, ...] = (
    ConfigField("num_pages", VirtioBalloonConfig.num_pages.offset, 4, None, Writer.DEVICE, "BAL-CFG-D2"),
    ConfigField("actual", VirtioBalloonConfig.actual.offset, 4, None, Writer.DRIVER, None),
    ConfigField("free_page_hint_cmd_id", VirtioBalloonConfig.free_page_hint_cmd_id.offset, 4,
                Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT, Writer.DEVICE, "BAL-CFG-D1"),
    ConfigField("poison_val", VirtioBalloonConfig.poison_val.offset, 4,
                Feature.VIRTIO_BALLOON_F_PAGE_POISON, Writer.DRIVER, None),
)
FIELDS_BY_NAME = {f.name: f for f in CONFIG_FIELDS}
#: Offsets of the le32 fields, for read_config and write_config calls.
CFG_NUM_PAGES = FIELDS_BY_NAME["num_pages"].offset
CFG_ACTUAL = FIELDS_BY_NAME["actual"].offset
CFG_CMD_ID = FIELDS_BY_NAME["free_page_hint_cmd_id"].offset
CFG_POISON = FIELDS_BY_NAME["poison_val"].offset


def field_at(offset: int) -> ConfigField | None:
    for f in CONFIG_FIELDS:
        if f.offset <= offset < f.offset + f.size:
            return f
    return None


class ConfigPhase(enum.Enum):
    """What the status lifecycle allows for config accesses."""

    NEGOTIATING = "before FEATURES_OK"  # reads of offered fields only, no writes (INIT-DRV-2)
    SETUP = "FEATURES_OK, before DRIVER_OK"
    LIVE = "DRIVER_OK"


class BalloonConfigSpace:
    """The 16-byte config space shared by the roles, with access rules and a generation counter.

    ``local_role`` picks which violations are ours (:class:`LocalSpecViolation`) and which the peer's.
    """

    def __init__(self, offered: int, local_role: Role) -> None:
        self._cfg = VirtioBalloonConfig()
        self.offered = offered
        self.negotiated: int | None = None
        self.phase = ConfigPhase.NEGOTIATING
        self.generation = 0
        self.local_role = local_role

    # -- lifecycle -----------------------------------------------------------------------------------
    def features_ok(self, negotiated: int) -> None:
        self.negotiated = negotiated
        self.phase = ConfigPhase.SETUP

    def driver_ok(self) -> None:
        self.phase = ConfigPhase.LIVE

    def reset(self) -> None:
        """§2.4: the device returns to its initial config; the generation moves on."""
        ctypes.memset(ctypes.addressof(self._cfg), 0, CONFIG_SIZE)
        self.negotiated = None
        self.phase = ConfigPhase.NEGOTIATING
        self.generation += 1

    # -- rules ---------------------------------------------------------------------------------------
    def _violation(self, role: Role, req_id: str, detail: str) -> SpecViolation:
        return (LocalSpecViolation if role is self.local_role else PeerSpecViolation)(req_id, detail)

    def exists(self, f: ConfigField) -> bool:
        """AMB-CFG-AVAILABILITY: offered suffices before FEATURES_OK, negotiated is needed after."""
        if f.feature is None:
            return True
        if self.negotiated is None:
            return has(self.offered, f.feature)
        return has(self.negotiated, f.feature)

    def _fields(self, offset: int, size: int) -> list[ConfigField]:
        if size not in (1, 2, 4) or offset < 0 or offset + size > CONFIG_SIZE or offset % size:
            raise self._violation(Role.DRIVER, "CFG-DRV-3",
                                  f"config access of {size} byte(s) at offset {offset} is not a naturally "
                                  f"aligned access inside the {CONFIG_SIZE}-byte config space")
        return [f for f in CONFIG_FIELDS if f.offset < offset + size and offset < f.offset + f.size]

    # -- driver accesses -----------------------------------------------------------------------------
    def driver_read(self, offset: int, size: int) -> int:
        """A driver read of ``size`` bytes at ``offset`` (CFG-DRV-3: the field must exist)."""
        for f in self._fields(offset, size):
            if not self.exists(f):
                raise self._violation(Role.DRIVER, "CFG-DRV-3",
                                      f"read of {f.name} without {f.feature.name if f.feature else ''}")
        raw = bytes(self._cfg)[offset:offset + size]
        return int.from_bytes(raw, "little")

    def driver_write(self, offset: int, size: int, value: int) -> None:
        """A driver write; the rules of :data:`CONFIG_FIELDS` and of the lifecycle apply."""
        fields = self._fields(offset, size)
        if self.phase is ConfigPhase.NEGOTIATING:
            raise self._violation(Role.DRIVER, "INIT-DRV-2", f"config write at offset {offset} before FEATURES_OK")
        for f in fields:
            if not self.exists(f):
                raise self._violation(Role.DRIVER, "CFG-DRV-3", f"write of {f.name} without {f.feature.name}")
            if f.driver_write_req is not None:
                raise self._violation(Role.DRIVER, f.driver_write_req, f"driver wrote {f.name}")
            if f.name == "poison_val" and self.phase is ConfigPhase.LIVE:
                raise self._violation(Role.DRIVER, "BAL-PP-DRV-3", "poison_val written while DRIVER_OK is set")
        if not 0 <= value < 1 << (8 * size):
            raise self._violation(Role.DRIVER, "CFG-DRV-3", f"value {value!r} does not fit {size} byte(s)")
        buf = (ctypes.c_char * CONFIG_SIZE).from_buffer(self._cfg)
        buf[offset:offset + size] = value.to_bytes(size, "little")

    # -- device side ---------------------------------------------------------------------------------
    def device_set(self, name: str, value: int) -> bool:
        """The device changes a field; returns whether it changed (then the generation moved on)."""
        f = FIELDS_BY_NAME[name]
        if f.writer is not Writer.DEVICE:
            raise self._violation(Role.DEVICE, "CFG-DEV-2", f"device wrote driver-owned field {name}")
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{name}={value!r} does not fit le32")
        if getattr(self._cfg, name) == value:
            return False
        setattr(self._cfg, name, value)
        self.generation += 1
        return True

    def get(self, name: str) -> int:
        """A field's current value, with no access rules (for the model's own bookkeeping)."""
        return int(getattr(self._cfg, name))

    def snapshot(self) -> bytes:
        return bytes(self._cfg)

    def read_consistent(self, read: Callable[[], T], max_tries: int = 16) -> T:
        """§2.5.1 loop: repeat ``read`` until the generation is the same before and after."""
        for _ in range(max_tries):
            before = self.generation
            value = read()
            if self.generation == before:
                return value
        raise self._violation(Role.DEVICE, "CFG-DEV-2",
                              f"config generation changed on each of {max_tries} consecutive reads")
