"""Ring targets: the device's pop of a driver's available ring and the driver's harvest of a device's used
ring, split (§2.7) and packed (§2.8).

Input layout (direct, so the seed corpus is the reference's own rings byte for byte):

* pop: ``[queue size code, flags, start idx lo, start idx hi]`` then the guest memory image from 0
  (ring at 0, tables and buffers above it). flags: bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 the packed
  device's check_driver_writes.
* harvest: ``[queue size code, flags, chains, shape]``; the reference driver adds that many chains (of
  the shape) and publishes; then the rest is the device's doing: first the bytes of the area the device
  writes (split: the used ring; packed: the descriptor ring and the device event area) replaced, then
  whatever follows XORed over guest memory from 0 (stray writes). flags: bit 0 EVENT_IDX, bit 1
  scrub_used, bit 2 check_device_writes, bit 3 indirect chains.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable

from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed import layout as packed_layout
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.split import layout as split_layout
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import IndirectArena, QueueFull, SplitQueueDriver
from refmodel.virtio.virtq import QueueAddresses

from fuzz.harness import guarded_target

MEM = 0x4000
BUFS = 0x1000  # buffers the reference driver adds live from here (their bytes are never read)
ARENA, ARENA_SIZE = 0x800, 0x400  # its indirect tables: below 4 KiB, so a seed image fits -max_len
HEADER = 4


def split_qs(code: int) -> int:
    return 1 << code % 5  # 1..16: split sizes are powers of 2


def packed_qs(code: int) -> int:
    return 1 + code % 16  # 1..16: any size for packed


def split_addrs(qs: int) -> QueueAddresses:
    return QueueAddresses.packed_at(0, qs)


def memory(image: bytes) -> GuestMemory:
    buf = bytearray(MEM)
    buf[:min(len(image), MEM)] = image[:MEM]
    return GuestMemory(buffer=buf)


def _serve(dev: SplitQueueDevice | PackedQueueDevice, qs: int) -> None:
    """What the balloon device does with a queue: pop everything, return it, decide on notifying."""
    for _ in range(2):  # twice: the second pass re-reads the ring after our own used writes
        n = dev.available()
        for _ in range(n + 1):
            chain = dev.pop()
            if chain is None:
                break
        for head in sorted(dev._in_flight):
            dev.add_used(head, dev.in_flight_chain(head).writable_len)
            dev.notify_needed()
        dev.set_avail_notifications(True)


def split_pop(data: bytes) -> None:
    """SplitQueueDevice.pop and its ring reads on an arbitrary driver-written memory image."""
    if len(data) < HEADER:
        return
    qs, flags = split_qs(data[0]), data[1]
    dev = SplitQueueDevice(memory(data[HEADER:]), split_addrs(qs), qs, event_idx=bool(flags & 1),
                           indirect_desc=bool(flags & 2), start_idx=int.from_bytes(data[2:4], "little"))
    _serve(dev, qs)


def packed_pop(data: bytes) -> None:
    """PackedQueueDevice.pop and its ring reads on an arbitrary driver-written memory image."""
    if len(data) < HEADER:
        return
    qs, flags = packed_qs(data[0]), data[1]
    dev = PackedQueueDevice(memory(data[HEADER:]), packed_layout.place(0, qs), qs, event_idx=bool(flags & 1),
                            indirect_desc=bool(flags & 2), start_idx=int.from_bytes(data[2:4], "little") % 64,
                            check_driver_writes=bool(flags & 4))
    _serve(dev, qs)


Driver = SplitQueueDriver | PackedQueueDriver


def driver_setup(packed: bool, header: bytes) -> tuple[GuestMemory, Driver, int]:
    """The reference driver with ``header``'s chains published, and the queue size.

    Made once per distinct setup, then copied: adding the chains runs the instrumented driver, which
    cost more than the harvest the input is about (~1 ms of ~1.1 ms an input).
    """
    code, flags, chains, shape = header
    qs = packed_qs(code) if packed else split_qs(code)
    key = (packed, qs, flags & 15, chains % (qs + 1), shape & 7)  # all that _driver_setup reads
    made = _SETUPS.get(key)
    if made is None:
        if len(_SETUPS) >= SETUPS_KEPT:
            _SETUPS.clear()
        mem, drv, qs = _driver_setup(packed, qs, *key[2:])  # a setup that raises is not kept
        made = _SETUPS[key] = (mem.read(0, MEM), _Pickler.dumps(drv, mem))
    image, pickled = made
    mem = GuestMemory(buffer=bytearray(image))
    return mem, _Unpickler.loads(pickled, mem), qs


class _Pickler(pickle.Pickler):
    """Pickles a driver with its guest memory left out (a memoryview pickles not), as deepcopy's memo
    would: a pickle loads ~5x faster than a deepcopy."""

    @classmethod
    def dumps(cls, obj: object, mem: GuestMemory) -> bytes:
        out = io.BytesIO()
        p = cls(out, pickle.HIGHEST_PROTOCOL)
        p.mem = mem
        p.dump(obj)
        return out.getvalue()

    def persistent_id(self, obj: object) -> str | None:
        return "mem" if obj is self.mem else None


class _Unpickler(pickle.Unpickler):
    @classmethod
    def loads(cls, data: bytes, mem: GuestMemory) -> Driver:
        u = cls(io.BytesIO(data))
        u.mem = mem
        return u.load()

    def persistent_load(self, pid: object) -> GuestMemory:
        return self.mem


#: Setups kept (at most ~10,000 exist; each is a 16 KiB image and a small driver).
SETUPS_KEPT = 2048
_SETUPS: dict[tuple[bool, int, int, int, int], tuple[bytes, Driver]] = {}


def _driver_setup(packed: bool, qs: int, flags: int, chains: int,
                  shape: int) -> tuple[GuestMemory, Driver, int]:
    mem = GuestMemory(buffer=bytearray(MEM))
    kind: Callable[..., Driver] = PackedQueueDriver if packed else SplitQueueDriver
    addrs = packed_layout.place(0, qs) if packed else split_addrs(qs)
    drv = kind(mem, addrs, qs, event_idx=bool(flags & 1), indirect_desc=True, scrub_used=bool(flags & 2),
               check_device_writes=bool(flags & 4), indirect_arena=IndirectArena(ARENA, ARENA_SIZE))
    n_read, n_write = 1 + shape % 2, shape >> 1 & 3
    for i in range(chains):
        try:
            drv.add([(BUFS + 256 * i + 16 * j, 16) for j in range(n_read)],
                    [(BUFS + 256 * i + 128 + 16 * j, 16) for j in range(n_write)], token=i,
                    indirect=bool(flags & 8))
        except QueueFull:
            break
    drv.publish()
    return mem, drv, qs


def device_area(packed: bool, drv: Driver, qs: int) -> list[tuple[int, int]]:
    """The ``(addr, len)`` parts of guest memory the device writes, in input order."""
    if packed:
        return [(drv.addrs.desc, packed_layout.desc_ring_size(qs)),
                (drv.addrs.used, packed_layout.EVENT_SUPPRESS_SIZE)]
    return [(drv.addrs.used, split_layout.used_ring_size(qs))]


def _harvest(packed: bool, data: bytes) -> None:
    if len(data) < HEADER:
        return
    mem, drv, qs = driver_setup(packed, data[:HEADER])
    rest = data[HEADER:]
    for addr, n in device_area(packed, drv, qs):
        part, rest = rest[:n], rest[n:]
        mem.write(addr, part)
    if rest:
        stray = rest[:MEM]
        old = mem.read(0, len(stray))
        xor = int.from_bytes(old, "little") ^ int.from_bytes(stray, "little")  # not a loop per byte
        mem.write(0, xor.to_bytes(len(stray), "little"))
    for _ in range(2):
        drv.harvest()
        drv.notify_needed()
        drv.set_used_notifications(True)


def split_harvest(data: bytes) -> None:
    """SplitQueueDriver.harvest and its used-ring reads after arbitrary device writes."""
    _harvest(False, data)


def packed_harvest(data: bytes) -> None:
    """PackedQueueDriver.harvest and its ring reads after arbitrary device writes."""
    _harvest(True, data)


# LayoutError is not allowed: the peer's data must come out as a PeerSpecViolation naming the rule.
TARGETS: dict[str, Callable[[bytes], None]] = {
    "split_pop": guarded_target(split_pop),
    "split_harvest": guarded_target(split_harvest),
    "packed_pop": guarded_target(packed_pop),
    "packed_harvest": guarded_target(packed_harvest),
}
