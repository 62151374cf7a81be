"""Devices under test written in C: load a shared library that exports ``c/virtio_conformance.h``.

``virtio-conformance run --dut c:path/to/libdevice.so --role device``. The library gets a pointer to
the suite's guest memory and works on it in place; every call goes through ctypes with exact
argument types (ctypes truncates silently otherwise). A negative return value is an error naming
the call; a library that is missing, or lacks a symbol, is a one-line usage error.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from refmodel.capabilities import Capability
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.transport import Interrupts, Transport
from refmodel.virtio.virtq import QueueAddresses

ABI_VERSION = 1
HEADER = Path(__file__).with_name("virtio_conformance.h")

P = ctypes.c_void_p
u8, u16, u32, u64, i64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int64
c_int = ctypes.c_int
#: name -> (restype, argtypes); the header, as data.
SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "vc_abi_version": (c_int, []),
    "vc_device_new": (P, [P, u64]),
    "vc_device_free": (None, [P]),
    "vc_read_device_features": (u64, [P]),
    "vc_write_driver_features": (c_int, [P, u64]),
    "vc_read_status": (c_int, [P]),
    "vc_write_status": (c_int, [P, u8]),
    "vc_config_generation": (u32, [P]),
    "vc_read_config": (c_int, [P, u32, u32, ctypes.POINTER(u32)]),
    "vc_write_config": (c_int, [P, u32, u32, u32]),
    "vc_queue_max_size": (c_int, [P, u16]),
    "vc_enable_queue": (c_int, [P, u16, u16, u64, u64, u64]),
    "vc_notify": (c_int, [P, u16]),
    "vc_take_interrupts": (u32, [P, ctypes.POINTER(c_int)]),
    "vc_run": (c_int, [P]),
    "vc_set_target": (c_int, [P, u32]),
    "vc_hint_start": (i64, [P]),
    "vc_hint_stop": (c_int, [P]),
    "vc_hint_done": (c_int, [P]),
    "vc_hinted_pages": (c_int, [P, P, u64]),
    "vc_request_stats": (c_int, [P]),
}


class CAbiError(ValueError):
    """The library cannot be used (missing, wrong ABI version, missing symbol)."""


class CDeviceError(RuntimeError):
    """A C call returned an error code."""


def _load(path: str | Path, signatures: dict[str, tuple[object, list[object]]]) -> ctypes.CDLL:
    """Load the library and give every symbol of ``signatures`` its exact ctypes types."""
    try:
        lib = ctypes.CDLL(str(Path(path).resolve()))
    except OSError as e:
        raise CAbiError(f"--dut c:{path}: cannot load the library: {e}") from None
    for name, (restype, argtypes) in signatures.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise CAbiError(f"--dut c:{path}: the library does not export {name} ({HEADER.name})") from None
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def load(path: str | Path) -> ctypes.CDLL:
    lib = _load(path, SIGNATURES)
    if (v := lib.vc_abi_version()) != ABI_VERSION:
        raise CAbiError(f"--dut c:{path}: ABI version {v}, this suite speaks {ABI_VERSION}")
    return lib


def _range(name: str, value: int, bits: int) -> int:
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise CDeviceError(f"{name}: {value!r} does not fit {bits} bits")
    return value


class CDevice:
    """A C device behind the same calls as the reference device (see DeviceUnderTest)."""

    #: request_stats() is there for a library that has it, but no host_stats(): no STATS.
    capabilities: frozenset[Capability] = frozenset({
        Capability.HINTING, Capability.HINT_STOP, Capability.HINTED_PAGES, Capability.PER_QUEUE_INTERRUPTS})

    def __init__(self, lib: ctypes.CDLL, mem: GuestMemory) -> None:
        self._lib, self.mem = lib, mem
        self._mem_ptr = mem.host_pointer()
        self._dev = lib.vc_device_new(self._mem_ptr, mem.size)
        if not self._dev:
            raise CDeviceError("vc_device_new returned NULL")

    def __del__(self) -> None:
        dev, self._dev = getattr(self, "_dev", None), None
        if dev:
            self._lib.vc_device_free(dev)

    def _ok(self, name: str, rc: int) -> int:
        if rc < 0:
            raise CDeviceError(f"{name} returned {rc}")
        return rc

    def read_device_features(self) -> int:
        return int(self._lib.vc_read_device_features(self._dev))

    def write_driver_features(self, value: int) -> None:
        self._ok("vc_write_driver_features", self._lib.vc_write_driver_features(self._dev, _range("features", value, 64)))

    def read_status(self) -> int:
        rc = self._ok("vc_read_status", self._lib.vc_read_status(self._dev))
        return _range("vc_read_status result", rc, 8)

    def write_status(self, value: int) -> None:
        self._ok("vc_write_status", self._lib.vc_write_status(self._dev, _range("status", value, 8)))

    def config_generation(self) -> int:
        return int(self._lib.vc_config_generation(self._dev))

    def read_config(self, offset: int, size: int) -> int:
        out = u32()
        self._ok("vc_read_config", self._lib.vc_read_config(self._dev, offset, size, ctypes.byref(out)))
        return _range(f"vc_read_config value at {offset} (size {size})", int(out.value), 8 * min(size, 4))

    def write_config(self, offset: int, size: int, value: int) -> None:
        self._ok("vc_write_config", self._lib.vc_write_config(self._dev, offset, size, _range("value", value, 32)))

    def queue_max_size(self, index: int) -> int:
        rc = self._ok("vc_queue_max_size", self._lib.vc_queue_max_size(self._dev, _range("index", index, 16)))
        return _range("vc_queue_max_size result", rc, 16)

    def enable_queue(self, index: int, size: int, addrs: QueueAddresses) -> None:
        self._ok("vc_enable_queue", self._lib.vc_enable_queue(
            self._dev, _range("index", index, 16), _range("size", size, 16), _range("desc", addrs.desc, 64),
            _range("avail", addrs.avail, 64), _range("used", addrs.used, 64)))

    def notify(self, index: int) -> None:
        self._ok("vc_notify", self._lib.vc_notify(self._dev, _range("index", index, 16)))

    def take_interrupts(self) -> Interrupts:
        config = c_int()
        mask = int(self._lib.vc_take_interrupts(self._dev, ctypes.byref(config)))
        return Interrupts(frozenset(i for i in range(32) if mask >> i & 1), bool(config.value))

    def run(self) -> None:
        self._ok("vc_run", self._lib.vc_run(self._dev))

    def set_target(self, num_pages: int) -> None:
        self._ok("vc_set_target", self._lib.vc_set_target(self._dev, _range("num_pages", num_pages, 32)))

    def hint_start(self) -> int:
        rc = self._ok("vc_hint_start", self._lib.vc_hint_start(self._dev))
        return _range("vc_hint_start command ID", rc, 32)

    def hint_stop(self) -> None:
        self._ok("vc_hint_stop", self._lib.vc_hint_stop(self._dev))

    def hint_done(self) -> None:
        self._ok("vc_hint_done", self._lib.vc_hint_done(self._dev))

    def hinted_pages(self) -> int:
        n = (self.mem.size // 4096 + 7) // 8
        buf = (ctypes.c_uint8 * n)()
        self._ok("vc_hinted_pages", self._lib.vc_hinted_pages(self._dev, buf, n))
        return int.from_bytes(bytes(buf), "little")

    def request_stats(self) -> bool:
        return bool(self._ok("vc_request_stats", self._lib.vc_request_stats(self._dev)))


def device_factory(path: str | Path) -> Callable[[GuestMemory], CDevice]:
    lib = load(path)
    return lambda mem: CDevice(lib, mem)


# -- drivers under test ---------------------------------------------------------------------------------
CB = ctypes.CFUNCTYPE
#: (field, restype, argtypes) of struct vc_transport after ctx, in order.
_CALLBACKS: list[tuple[str, Any, list[Any]]] = [
    ("read_device_features", u64, []), ("write_driver_features", None, [u64]), ("read_status", u8, []),
    ("write_status", None, [u8]), ("read_config", u32, [u32, u32]), ("write_config", None, [u32, u32, u32]),
    ("queue_max_size", u16, [u16]), ("enable_queue", None, [u16, u16, u64, u64, u64]),
    ("notify", None, [u16]), ("alloc_pages", i64, [u32]), ("alloc_page", i64, []), ("free_page", None, [u64]),
]
_TYPES = {name: CB(res, P, *args) for name, res, args in _CALLBACKS}


class VcTransport(ctypes.Structure):
    _fields_ = [("ctx", P)] + [(name, _TYPES[name]) for name, _, _ in _CALLBACKS]


DRIVER_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "vc_driver_new": (P, []),
    "vc_driver_free": (None, [P]),
    "vc_driver_probe": (c_int, [P, ctypes.POINTER(VcTransport), P, u64]),
    "vc_driver_interrupt": (c_int, [P, u32, c_int]),
    "vc_driver_run": (c_int, [P]),
}


def load_driver(path: str | Path) -> ctypes.CDLL:
    return _load(path, DRIVER_SIGNATURES)


class CDriver:
    """A C driver behind the same calls as the reference driver. Callbacks into the reference device
    cannot raise through C: the first exception is kept and raised when the C call returns."""

    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._drv = lib.vc_driver_new()
        if not self._drv:
            raise CDeviceError("vc_driver_new returned NULL")
        self._exc: BaseException | None = None
        self._transport: VcTransport | None = None

    def __del__(self) -> None:
        drv, self._drv = getattr(self, "_drv", None), None
        if drv:
            self._lib.vc_driver_free(drv)

    def _cb(self, name: str, fn: Callable[..., object], default: object) -> object:
        def call(_ctx: object, *args: object) -> object:
            if self._exc is not None:
                return default
            try:
                result = fn(*args)
                return default if result is None else result
            except BaseException as e:  # noqa: BLE001 - carried across the C frame, raised after it
                self._exc = e
                return default
        return _TYPES[name](call)

    def _c(self, rc: int, name: str) -> int:
        exc, self._exc = self._exc, None
        if exc is not None:
            raise exc
        if rc < 0:
            raise CDeviceError(f"{name} returned {rc}")
        return rc

    def probe(self, device: Transport, guest: GuestOS) -> bool:
        mem = guest.mem

        def alloc_page() -> int:
            p = guest.alloc_page()
            return -1 if p is None else p

        fns: dict[str, tuple[Callable[..., object], object]] = {
            "read_device_features": (device.read_device_features, 0),
            "write_driver_features": (device.write_driver_features, None),
            "read_status": (device.read_status, 0), "write_status": (device.write_status, None),
            "read_config": (device.read_config, 0), "write_config": (device.write_config, None),
            "queue_max_size": (device.queue_max_size, 0),
            "enable_queue": (lambda i, n, d, a, u: device.enable_queue(i, n, QueueAddresses(d, a, u)), None),
            "notify": (device.notify, None), "alloc_pages": (guest.alloc_contiguous, -1),
            "alloc_page": (alloc_page, -1), "free_page": (guest.free_page, None),
        }
        self._transport = VcTransport(None, *(self._cb(n, *fns[n]) for n, _, _ in _CALLBACKS))
        return bool(self._c(self._lib.vc_driver_probe(self._drv, ctypes.byref(self._transport), mem.host_pointer(),
                                                      mem.size), "vc_driver_probe"))

    def interrupt(self, queues: frozenset[int] = frozenset(), config: bool = False) -> None:
        mask = sum(1 << q for q in queues if q < 32)
        self._c(self._lib.vc_driver_interrupt(self._drv, mask, int(config)), "vc_driver_interrupt")

    def run(self) -> None:
        self._c(self._lib.vc_driver_run(self._drv), "vc_driver_run")


def driver_factory(path: str | Path) -> Callable[[], CDriver]:
    lib = load_driver(path)
    return lambda: CDriver(lib)
