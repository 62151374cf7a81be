"""rust-vmm's ``virtio_queue::Queue`` as a device-side split virtqueue under test.

``virtio-conformance run --level virtqueue --role device --dut conformance.adapters.rust_vmm.adapter:make_018``
(or ``make_014``). Looking the factory up provisions Debian's packaged crates and builds the shim
(:mod:`conformance.adapters.rust_vmm.provision`, cached), before the suite starts timing calls.

Each call goes to the shim's C ABI (``shim/src/lib.rs``), which forwards it to virtio-queue working on
the suite's guest memory. What virtio-queue reports, and what it is mapped to:

==========================================  ==================================================
``InvalidDescTableAlign`` / ``...RingAlign`` SPLIT-DRV-1 (the driver placed a part misaligned)
``is_valid()`` false                         SPLIT-DRV-D5 (a ring outside guest memory)
``InvalidAvailRingIndex``                    SPLIT-DRV-11 (idx moved back) or SPLIT-DRV-D3
a chain the iterator ends early              the driver requirement the reference's walk names
anything else, a panic included              :class:`RustVmmError` (the harness reports it)
==========================================  ==================================================

virtio-queue's chain iterator yields no error: it stops at a descriptor it cannot follow (next out of
range, a loop, a bad indirect table, more than 2^32 bytes). The shim says whether the last descriptor
ended the chain; when it did not, the reference device walks the same chain to name the driver
requirement broken, and a chain the reference finds well-formed is a :class:`RustVmmError`. Checks
virtio-queue does not make (readable after writable, INDIRECT without the feature) are not added here:
the chain is split into readable and writable buffers as its ``readable()`` / ``writable()`` do.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import Any

from refmodel.errors import PeerSpecViolation
from refmodel.virtio.constants import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.layout import AVAIL_IDX, DESC_FMT, VIRTQ_DESC_SIZE
from refmodel.virtio.virtq import Buffer, Chain, QueueAddresses, u16

from conformance.adapters.rust_vmm.provision import RELEASES, ProvisionError, shim_library
from conformance.registry import DutError

ABI_VERSION = 1
E_QUEUE, E_PANIC, E_ARG = -1, -2, -3
#: The most descriptors virtio-queue's chain iterator yields: a direct chain as long as the largest queue
#: (32768), then an indirect table of up to 65535 entries.
MAX_DESCS = 0x8000 + 0xFFFF

P = ctypes.c_void_p
u8, u16_t, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
c_int, c_size = ctypes.c_int, ctypes.c_size_t
BUF = ctypes.c_char_p


class VqDesc(ctypes.Structure):
    _fields_ = [("addr", u64), ("len", u32), ("flags", u16_t), ("next", u16_t)]


#: name -> (restype, argtypes) of the shim's exports.
SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "vq_abi_version": (u32, []),
    "vq_crate_version": (c_int, [BUF, c_size]),
    "vq_new": (c_int, [P, u64, u64, u16_t, u64, u64, u64, u8, u16_t, ctypes.POINTER(P), BUF, c_size]),
    "vq_free": (None, [P]),
    "vq_available": (c_int, [P, ctypes.POINTER(u32), BUF, c_size]),
    "vq_pop": (c_int, [P, ctypes.POINTER(u16_t), ctypes.POINTER(VqDesc), u32, ctypes.POINTER(u32),
                       ctypes.POINTER(u8), BUF, c_size]),
    "vq_add_used": (c_int, [P, u16_t, u32, BUF, c_size]),
    "vq_needs_notification": (c_int, [P, BUF, c_size]),
    "vq_set_notification": (c_int, [P, u8, BUF, c_size]),
    "vq_state": (c_int, [P, ctypes.POINTER(u16_t), ctypes.POINTER(u16_t)]),
}

#: virtio-queue's errors that mean the driver broke a requirement at queue setup.
SETUP_ERRORS = {"InvalidDescTableAlign": "SPLIT-DRV-1", "InvalidAvailRingAlign": "SPLIT-DRV-1",
                "InvalidUsedRingAlign": "SPLIT-DRV-1", "IsValid": "SPLIT-DRV-D5"}


class RustVmmError(RuntimeError):
    """virtio-queue or the shim failed in a way no driver requirement explains (a crash, a bug)."""


@functools.cache
def load(version: str) -> ctypes.CDLL:
    """The shim built against virtio-queue ``version``, loaded with exact ctypes signatures."""
    path = shim_library(version)
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    if (abi := lib.vq_abi_version()) != ABI_VERSION:
        raise ProvisionError(f"{path}: shim ABI {abi}, the adapter speaks {ABI_VERSION} (stale cache?)")
    buf = ctypes.create_string_buffer(32)
    lib.vq_crate_version(buf, len(buf))
    if (built := buf.value.decode()) != RELEASES[version].crate:
        raise ProvisionError(f"{path}: built against virtio-queue {built}, expected {RELEASES[version].crate}")
    return lib


@functools.cache
def _descs() -> ctypes.Array[VqDesc]:
    """One buffer for every queue's popped chain (1.5 MiB; the calls never overlap)."""
    return (VqDesc * MAX_DESCS)()


def _fits(name: str, value: int, bits: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
        raise ValueError(f"{name}={value!r} does not fit {bits} bits")
    return value


class RustVmmQueue:
    """One ``virtio_queue::Queue`` behind the calls of ``DeviceQueueUnderTest``."""

    capabilities: frozenset = frozenset()

    def __init__(self, lib: ctypes.CDLL, version: str, mem: GuestMemory, addrs: QueueAddresses, queue_size: int,
                 *, event_idx: bool = False, indirect_desc: bool = False, start_idx: int = 0) -> None:
        self._lib, self.version = lib, version
        self.mem, self.addrs, self.queue_size = mem, addrs, queue_size  # mem: the shim points into it
        self.event_idx, self.indirect_desc = event_idx, indirect_desc
        self._err = ctypes.create_string_buffer(512)
        self._descs = _descs()
        handle = P()
        rc = lib.vq_new(mem.host_pointer(), mem.size, mem.base, _fits("queue_size", queue_size, 16), addrs.desc,
                        addrs.avail, addrs.used, int(event_idx), _fits("start_idx", u16(start_idx), 16),
                        ctypes.byref(handle), self._err, len(self._err))
        if rc < 0:
            name, msg = self._message()
            if rc == E_QUEUE and name in SETUP_ERRORS:
                raise PeerSpecViolation(SETUP_ERRORS[name], f"virtio-queue {RELEASES[version].crate}: {msg}")
            raise RustVmmError(f"vq_new: {msg}")
        self._handle: ctypes.c_void_p | None = handle

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            self._lib.vq_free(handle)

    def __repr__(self) -> str:
        return f"RustVmmQueue(virtio-queue {RELEASES[self.version].crate}, size {self.queue_size})"

    # -- calls ---------------------------------------------------------------------------------------
    def _message(self) -> tuple[str, str]:
        """(virtio-queue's error variant, the whole message) of the last failed call."""
        msg = self._err.value.decode(errors="replace")
        return msg.split(":", 1)[0].split("(", 1)[0].strip(), msg

    def _check(self, call: str, rc: int) -> int:
        if rc >= 0:
            return rc
        name, msg = self._message()
        if rc == E_QUEUE and name == "InvalidAvailRingIndex":
            avail_idx = self.mem.read_u16(self.addrs.avail + AVAIL_IDX)
            next_avail = self._state()[0]
            delta = u16(avail_idx - next_avail)
            if delta >= 0x8000:
                raise PeerSpecViolation("SPLIT-DRV-11", f"avail idx went from {next_avail} back to {avail_idx} "
                                        f"(virtio-queue: {msg})")
            raise PeerSpecViolation("SPLIT-DRV-D3", f"avail idx {avail_idx} is {delta} ahead of the device's "
                                    f"{next_avail}, queue size {self.queue_size} (virtio-queue: {msg})")
        kind = {E_QUEUE: "virtio-queue error", E_PANIC: "virtio-queue panicked", E_ARG: "shim"}.get(rc, f"rc {rc}")
        raise RustVmmError(f"{call}: {kind}: {msg}")

    def _state(self) -> tuple[int, int]:
        next_avail, next_used = u16_t(), u16_t()
        self._lib.vq_state(self._handle, ctypes.byref(next_avail), ctypes.byref(next_used))
        return next_avail.value, next_used.value

    def available(self) -> int:
        out = u32()
        self._check("vq_available", self._lib.vq_available(self._handle, ctypes.byref(out), self._err, len(self._err)))
        return int(out.value)

    def pop(self) -> Chain | None:
        head, n, complete = u16_t(), u32(), u8()
        rc = self._check("vq_pop", self._lib.vq_pop(self._handle, ctypes.byref(head), self._descs, MAX_DESCS,
                                                     ctypes.byref(n), ctypes.byref(complete), self._err,
                                                     len(self._err)))
        if rc == 0:
            return None
        descs = self._descs[:n.value]
        if not complete.value:
            self._diagnose(head.value, len(descs))
        readable = tuple(Buffer(d.addr, d.len) for d in descs if not d.flags & VIRTQ_DESC_F_WRITE)
        writable = tuple(Buffer(d.addr, d.len) for d in descs if d.flags & VIRTQ_DESC_F_WRITE)
        return Chain(head.value, readable, writable, self._uses_indirect(head.value))

    def _diagnose(self, head: int, count: int) -> None:
        """virtio-queue ended the chain early: the reference names the requirement the driver broke."""
        slot = u16(self._state()[0] - 1)
        ref = SplitQueueDevice(self.mem, self.addrs, self.queue_size, event_idx=self.event_idx,
                               indirect_desc=self.indirect_desc, start_idx=slot)
        try:
            ref.pop()
        except PeerSpecViolation as e:
            raise PeerSpecViolation(e.req_id, f"{e.detail} (virtio-queue {RELEASES[self.version].crate} ended the "
                                    f"chain from head {head} after {count} descriptor(s))") from None
        raise RustVmmError(f"vq_pop: virtio-queue ended the chain from head {head} after {count} descriptor(s), "
                           "but the reference reads it as well-formed")

    def _uses_indirect(self, head: int) -> bool:
        """Whether the chain's walk through the descriptor table meets an INDIRECT descriptor."""
        idx = head
        for _ in range(self.queue_size):
            if idx >= self.queue_size:
                return False
            _, _, flags, nxt = self.mem.unpack(DESC_FMT, self.addrs.desc + VIRTQ_DESC_SIZE * idx)
            if flags & VIRTQ_DESC_F_INDIRECT:
                return True
            if not flags & VIRTQ_DESC_F_NEXT:
                return False
            idx = nxt
        return False

    def add_used(self, head: int, length: int) -> None:
        self._check("vq_add_used", self._lib.vq_add_used(self._handle, _fits("head", head, 16),
                                                         _fits("length", length, 32), self._err, len(self._err)))

    def notify_needed(self) -> bool:
        return bool(self._check("vq_needs_notification",
                                self._lib.vq_needs_notification(self._handle, self._err, len(self._err))))

    def set_avail_notifications(self, enabled: bool) -> None:
        self._check("vq_set_notification",
                    self._lib.vq_set_notification(self._handle, int(bool(enabled)), self._err, len(self._err)))


Factory = Callable[..., RustVmmQueue]


def factory(version: str) -> Factory:
    """A device-queue factory for virtio-queue ``version`` ("0.14", "0.18"); builds the shim first."""
    lib = load(version)

    def make(mem: GuestMemory, addrs: QueueAddresses, queue_size: int, *, event_idx: bool = False,
             indirect_desc: bool = False, start_idx: int = 0) -> RustVmmQueue:
        return RustVmmQueue(lib, version, mem, addrs, queue_size, event_idx=event_idx,
                            indirect_desc=indirect_desc, start_idx=start_idx)

    make.__name__ = make.__qualname__ = f"make_{version.replace('.', '')}"
    make.__doc__ = f"rust-vmm virtio-queue {RELEASES[version].crate} (Debian {RELEASES[version].suite})."
    return make


#: ``make_014`` / ``make_018``: attribute name -> version.
FACTORIES = {f"make_{v.replace('.', '')}": v for v in RELEASES}


def __getattr__(name: str) -> Any:
    """``make_014`` and ``make_018`` are built when first looked up, so ``--dut module:make_018`` does its
    provisioning (minutes at most, once) while resolving the name, not under the suite's call deadline;
    a failure is the registry's one-line DutError."""
    if name not in FACTORIES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        made = factory(FACTORIES[name])
    except ProvisionError as e:
        raise DutError(str(e)) from None
    except OSError as e:
        raise DutError(f"rust-vmm virtio-queue {FACTORIES[name]}: cannot load the shim: {e}") from None
    globals()[name] = made
    return made
