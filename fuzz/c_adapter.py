"""C adapter target: the Python side of :class:`conformance.adapters.c.adapter.CDevice` on whatever a C
library returns. A fake library answers every ``vc_*`` call with a value of its C return type drawn from
the input (as ctypes would hand it over) and fills out-parameters the same way; each call must give a
value of the width the Transport promises, or raise ``CDeviceError``. No C runs."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from conformance.adapters.c import adapter as A
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import QueueAddresses

from fuzz.layout import Reader
from fuzz.harness import Finding, guarded_target

_BITS = {A.c_int: (32, True), A.u32: (32, False), A.u64: (64, False), A.i64: (64, True)}
#: method, its arguments, the width in bits of a valid result (None: no result; bool: a bool)
CALLS: tuple[tuple[str, tuple[object, ...], int | type | None], ...] = (
    ("read_device_features", (), 64), ("write_driver_features", (1,), None), ("read_status", (), 8),
    ("write_status", (1,), None), ("config_generation", (), 32), ("read_config", (0, 4), 32),
    ("read_config", (0, 1), 8), ("write_config", (0, 4, 1), None), ("queue_max_size", (0,), 16),
    ("enable_queue", (0, 8, QueueAddresses(0, 0x100, 0x200)), None), ("notify", (0,), None),
    ("take_interrupts", (), object), ("run", (), None), ("set_target", (1,), None), ("hint_start", (), 32),
    ("hint_stop", (), None), ("hint_done", (), None), ("hinted_pages", (), 1 << 20),
    ("request_stats", (), bool),
)


class FakeLib:
    """Every ``vc_*`` returns an input-drawn value of its restype; out-parameters get one too."""

    def __init__(self, rd: Reader) -> None:
        self.rd = rd

    def _value(self, restype: object) -> int:
        bits, signed = _BITS.get(restype, (32, True))
        raw = self.rd.int(0, (1 << bits) - 1)
        return raw - (1 << bits) if signed and raw >> (bits - 1) else raw

    def __getattr__(self, name: str) -> Callable[..., object]:
        restype = A.SIGNATURES[name][0] if name in A.SIGNATURES else A.c_int

        def call(*args: object) -> object:
            for a in args:
                obj = getattr(a, "_obj", None)  # ctypes.byref(x)
                if obj is not None and hasattr(obj, "value"):
                    obj.value = self._value(type(obj))
            if name == "vc_device_new":
                return 1
            if name == "vc_hinted_pages":
                buf = args[1]
                data = self.rd.bytes(len(buf))  # type: ignore[arg-type]
                ctypes.memmove(buf, data, len(data))
            return self._value(restype)
        return call


def c_device(data: bytes) -> None:
    rd = Reader(data)
    dev = A.CDevice(FakeLib(rd), GuestMemory(buffer=bytearray(4096)))  # type: ignore[arg-type]
    for _ in range(rd.int(1, 4)):
        name, args, width = CALLS[rd.int(0, len(CALLS) - 1)]
        try:
            got = getattr(dev, name)(*args)
        except A.CDeviceError:
            continue
        if width is None:
            ok = got is None
        elif width is bool:
            ok = isinstance(got, bool)
        elif width is object:
            ok = all(0 <= q < 32 for q in got.queues)  # type: ignore[attr-defined]
        else:
            ok = (isinstance(got, int) and not isinstance(got, bool)
                  and 0 <= got < 1 << width)  # type: ignore[operator]
        if not ok:
            raise Finding(f"CDevice.{name}{args} returned {got!r}, outside its {width}-bit range")


TARGETS: dict[str, Callable[[bytes], None]] = {"c_device": guarded_target(c_device, (A.CDeviceError,))}
