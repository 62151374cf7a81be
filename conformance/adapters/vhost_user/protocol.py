"""The vhost-user wire format (QEMU ``docs/interop/vhost-user.rst``), the part a balloon backend meets.

Messages from the frontend (the guest's VMM side; here Linux's ``virtio_uml``) are untrusted:
``parse_*_untrusted`` functions raise :class:`VhostUserProtocolError`, naming the message and field.
"""

from __future__ import annotations

import enum
import struct

import attrs

from refmodel.virtio.packed.layout import wrap_of

HEADER = struct.Struct("<III")  # request, flags, size
U64 = struct.Struct("<Q")
VRING_STATE = struct.Struct("<II")  # index, num
VRING_ADDR = struct.Struct("<IIQQQQ")  # index, flags, desc, used, avail, log
MEM_HEADER = struct.Struct("<II")  # nregions, padding
MEM_REGION = struct.Struct("<QQQQ")  # guest_phys_addr, memory_size, userspace_addr, mmap_offset
CONFIG_HEADER = struct.Struct("<III")  # offset, size, flags

VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
MAX_PAYLOAD = 4096
MAX_CONFIG_SIZE = 256
MAX_REGIONS = 8
VRING_INDEX_MASK = 0xFF
VRING_NOFD = 1 << 8
F_PROTOCOL_FEATURES = 1 << 30  # a device-feature bit that belongs to vhost-user, not to virtio


class Request(enum.IntEnum):
    """Frontend -> backend (``VHOST_USER_*``)."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SET_BACKEND_REQ_FD = 21
    GET_CONFIG = 24
    SET_CONFIG = 25
    VRING_KICK = 35


class BackendRequest(enum.IntEnum):
    """Backend -> frontend, on the channel from ``SET_BACKEND_REQ_FD``."""

    CONFIG_CHANGE_MSG = 2
    VRING_CALL = 4


class ProtocolFeature(enum.IntFlag):
    REPLY_ACK = 1 << 3
    BACKEND_REQ = 1 << 5
    CONFIG = 1 << 9
    INBAND_NOTIFICATIONS = 1 << 14


#: What the balloon backend offers by default. BACKEND_REQ is not optional in practice: Linux 6.1's
#: virtio_uml requests IRQ 0 for every vring without it, and the probe fails with -EBUSY.
DEFAULT_PROTOCOL_FEATURES = ProtocolFeature.REPLY_ACK | ProtocolFeature.BACKEND_REQ | ProtocolFeature.CONFIG
#: Requests that have a reply of their own (REPLY_ACK adds one only to the others).
WITH_REPLY = frozenset({Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES, Request.GET_VRING_BASE,
                        Request.GET_QUEUE_NUM, Request.GET_CONFIG})


class VhostUserProtocolError(Exception):
    """The frontend sent something the vhost-user protocol does not allow (names message and field)."""


@attrs.frozen
class Header:
    request: int
    flags: int
    size: int

    @property
    def need_reply(self) -> bool:
        return bool(self.flags & FLAG_NEED_REPLY)

    def name(self) -> str:
        try:
            return Request(self.request).name
        except ValueError:
            return f"request {self.request}"


@attrs.frozen
class MemRegion:
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    mmap_offset: int


@attrs.frozen
class VringAddr:
    index: int
    flags: int
    desc: int
    used: int
    avail: int


def parse_header_untrusted(data: bytes) -> Header:
    if len(data) != HEADER.size:
        raise VhostUserProtocolError(f"header: {len(data)} bytes, expected {HEADER.size}")
    req, flags, size = HEADER.unpack(data)
    if flags & 0x3 != VERSION:
        raise VhostUserProtocolError(f"header of request {req}: version {flags & 0x3}, expected {VERSION}")
    if size > MAX_PAYLOAD:
        raise VhostUserProtocolError(f"header of request {req}: payload size {size} over {MAX_PAYLOAD}")
    return Header(req, flags, size)


def _exact(name: str, payload: bytes, fmt: struct.Struct) -> tuple[int, ...]:
    if len(payload) != fmt.size:
        raise VhostUserProtocolError(f"{name}: payload of {len(payload)} bytes, expected {fmt.size}")
    return fmt.unpack(payload)


def parse_u64_untrusted(name: str, payload: bytes) -> int:
    return _exact(name, payload, U64)[0]


def parse_vring_state_untrusted(name: str, payload: bytes) -> tuple[int, int]:
    index, num = _exact(name, payload, VRING_STATE)
    return index, num


def parse_vring_addr_untrusted(payload: bytes) -> VringAddr:
    index, flags, desc, used, avail, _log = _exact("SET_VRING_ADDR", payload, VRING_ADDR)
    return VringAddr(index, flags, desc, used, avail)


#: SET_VRING_BASE of a fresh packed ring: offset 0 and wrap counter 1 for both the next available
#: descriptor (bits 0-14, 15) and the next used one (bits 16-30, 31), as QEMU's vhost sends it.
PACKED_FRESH_BASE = 1 << 15 | 1 << 31


def packed_base(avail_pos: int, used_pos: int, queue_size: int) -> int:
    """The packed ring state of GET/SET_VRING_BASE for the device's positions (descriptors since the
    start: offset ``% queue_size``, wrap counter 1 on even laps)."""
    def half(pos: int) -> int:
        return pos % queue_size | wrap_of(pos, queue_size) << 15
    return half(avail_pos) | half(used_pos) << 16


def describe_packed_base(value: int) -> str:
    return (f"avail offset {value & 0x7FFF} wrap {value >> 15 & 1}, used offset {value >> 16 & 0x7FFF} "
            f"wrap {value >> 31 & 1}")


def parse_mem_table_untrusted(payload: bytes) -> list[MemRegion]:
    if len(payload) < MEM_HEADER.size:
        raise VhostUserProtocolError(f"SET_MEM_TABLE: payload of {len(payload)} bytes has no region count")
    n, _pad = MEM_HEADER.unpack_from(payload)
    if not 1 <= n <= MAX_REGIONS:
        raise VhostUserProtocolError(f"SET_MEM_TABLE: nregions {n}, expected 1..{MAX_REGIONS}")
    need = MEM_HEADER.size + n * MEM_REGION.size
    if len(payload) < need:
        raise VhostUserProtocolError(f"SET_MEM_TABLE: {n} regions need {need} bytes, got {len(payload)}")
    regions = [MemRegion(*MEM_REGION.unpack_from(payload, MEM_HEADER.size + i * MEM_REGION.size))
               for i in range(n)]
    for i, r in enumerate(regions):
        if r.memory_size == 0 or r.guest_phys_addr + r.memory_size > 1 << 64:
            raise VhostUserProtocolError(f"SET_MEM_TABLE: region {i} has size {r.memory_size:#x}")
    return regions


def parse_config_untrusted(name: str, payload: bytes, *, with_data: bool) -> tuple[int, int, int, bytes]:
    """``(offset, size, flags, data)`` of a GET_CONFIG or SET_CONFIG payload."""
    if len(payload) < CONFIG_HEADER.size:
        raise VhostUserProtocolError(f"{name}: payload of {len(payload)} bytes, shorter than its header")
    offset, size, flags = CONFIG_HEADER.unpack_from(payload)
    if size > MAX_CONFIG_SIZE or offset + size > MAX_CONFIG_SIZE:
        raise VhostUserProtocolError(f"{name}: offset {offset} size {size} beyond {MAX_CONFIG_SIZE} bytes")
    data = payload[CONFIG_HEADER.size:]
    if with_data and len(data) < size:
        raise VhostUserProtocolError(f"{name}: size {size} but {len(data)} data bytes")
    return offset, size, flags, bytes(data[:size])


def message(request: int, payload: bytes = b"", *, flags: int = VERSION) -> bytes:
    return HEADER.pack(request, flags, len(payload)) + payload


def reply(request: int, payload: bytes) -> bytes:
    """A reply: flags must be exactly VERSION|REPLY (Linux's virtio_uml compares for equality)."""
    return message(request, payload, flags=VERSION | FLAG_REPLY)


def config_reply(offset: int, size: int, flags: int, data: bytes) -> bytes:
    return reply(Request.GET_CONFIG, CONFIG_HEADER.pack(offset, size, flags) + data)
