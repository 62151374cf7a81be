"""Balloon targets (§5.5): the buffers a driver hands the device on each queue, and the 2016 seed
protocol's bitmap reply.

The queue layer is fuzzed by :mod:`fuzz.rings`; here each input is the chain the device's pop would give
(buffers inside guest memory, readable before writable) plus the bytes in those buffers and the device
state the buffer meets, all drawn with ``Reader``.
"""

from __future__ import annotations

from collections.abc import Callable

from refmodel.balloon.config import CFG_POISON, BalloonConfigSpace
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice
from refmodel.balloon.hinting import FreePageHintDevice
from refmodel.balloon.seed2016 import SeedDevice
from refmodel.virtio.features import Feature
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver
from refmodel.virtio.status import Role
from refmodel.virtio.virtq import Buffer, Chain, QueueAddresses

from fuzz.layout import Reader
from fuzz.harness import charge, guarded_target

F = Feature
N_PAGES = 32
MEM = N_PAGES * BALLOON_PAGE_SIZE
MAX_PAGES = 4  # per page-aligned buffer: longer ones only repeat the zeros past the input's bytes
STATUS_ACK_DRIVER, STATUS_FEATURES_OK, STATUS_DRIVER_OK = 0x3, 0xB, 0xF


def read_chain(rd: Reader, mem: GuestMemory) -> Chain:
    """A chain as pop gives it: 0-3 readable then 0-2 writable buffers inside guest memory, the readable
    ones filled from the input. Page-aligned buffers are drawn often so page paths run."""
    bufs: list[list[Buffer]] = [[], []]
    for side, most in ((0, 3), (1, 2)):
        for _ in range(rd.int(0, most)):
            if rd.bool():
                page = rd.int(0, N_PAGES - 1)
                pages = rd.int(0, min(N_PAGES - page, MAX_PAGES))
                addr, length = page * BALLOON_PAGE_SIZE, pages * BALLOON_PAGE_SIZE
            else:
                addr = rd.int(0, MEM - 1)
                length = rd.int(0, min(MEM - addr, 512))
            bufs[side].append(Buffer(addr, length))
    for b in bufs[0]:
        mem.write(b.addr, rd.bytes(min(b.len, 256)))
    charge(sum(b.len for side in bufs for b in side))
    return Chain(rd.int(0, 63), tuple(bufs[0]), tuple(bufs[1]))


def negotiated_device(rd: Reader) -> BalloonDevice:
    """A device past FEATURES_OK with a subset of the default offer (and a poison value), over zeroed
    memory. Made once per feature set, then its per-operation state reset: making one costs ~0.2 ms."""
    features = DEFAULT_OFFER & rd.int(0, 2**64 - 1) | F.VIRTIO_F_VERSION_1.mask
    dev = _DEVICES.get(features)
    if dev is None:
        dev = _DEVICES[features] = BalloonDevice(GuestMemory(buffer=bytearray(MEM)))
        dev.write_status(STATUS_ACK_DRIVER)
        dev.write_driver_features(features)
        dev.write_status(STATUS_FEATURES_OK)
    dev.mem.fill(0, MEM, 0)
    dev.target = 0
    for reset in (dev._reset_inflate, dev._reset_stats, dev._reset_reporting):
        reset()
    dev.touched.clear()
    dev.queues.clear()
    if features & F.VIRTIO_BALLOON_F_PAGE_POISON.mask:
        dev.write_config(CFG_POISON, 4, rd.int(0, 2**32 - 1))
    return dev


_DEVICES: dict[int, BalloonDevice] = {}


def inflate_pfns(data: bytes) -> None:
    """on_inflateq: an le32 PFN array (BAL-OP-D1) over a balloon of arbitrary pages."""
    rd = Reader(data)
    dev = negotiated_device(rd)
    dev.ballooned = rd.int(0, 2**N_PAGES - 1)
    dev.on_inflateq(read_chain(rd, dev.mem))


def deflate_pfns(data: bytes) -> None:
    """on_deflateq: an le32 PFN array against the balloon and the target floor (BAL-OP-DRV-4, -10)."""
    rd = Reader(data)
    dev = negotiated_device(rd)
    dev.set_target(rd.int(0, N_PAGES))
    dev.ballooned = rd.int(0, 2**N_PAGES - 1)
    dev.on_deflateq(read_chain(rd, dev.mem))


def reporting(data: bytes) -> None:
    """on_reporting_vq: whole-page report buffers, checked against poison_val (BAL-FPR-DRV-2, -5)."""
    rd = Reader(data)
    dev = negotiated_device(rd)
    dev.on_reporting_vq(read_chain(rd, dev.mem))


def stats(data: bytes) -> None:
    """on_statsq: 10-byte tag/value entries, then a second buffer against the first one's tags."""
    rd = Reader(data)
    dev = negotiated_device(rd)
    for _ in range(rd.int(1, 3)):
        if rd.bool():
            dev._stats_requested = True  # the host asked: the next buffer is returned, not held
            dev.stats_held = None
        dev.on_statsq(read_chain(rd, dev.mem))


def free_page_vq(data: bytes) -> None:
    """FreePageHintDevice._handle_untrusted: command-ID out-buffers and hint in-buffers, interleaved with
    the host's start / stop / done (BAL-FPH-DRV-1..3, BAL-FPH-D2)."""
    rd = Reader(data)
    mem = GuestMemory(buffer=bytearray(MEM))
    config = BalloonConfigSpace(DEFAULT_OFFER, Role.DEVICE)
    config.features_ok(DEFAULT_OFFER)
    vq = SplitQueueDevice(mem, QueueAddresses.packed_at(0, 1), 1)
    hint = FreePageHintDevice(config, vq, N_PAGES, lambda pages: None, accept_stale=rd.bool())
    ops: list[Callable[[], object]] = [hint.start, hint.stop, hint.done]
    for _ in range(rd.int(1, 8)):
        op = rd.int(0, 5)
        if op < 3:
            ops[op]()
        else:
            hint._handle_untrusted(read_chain(rd, mem))


def seed2016_reply(data: bytes) -> None:
    """SeedDevice on its queue: the driver's ctrl in-buffer and bitmap replies (SEED-DRV-1..3) as the
    reference driver lays them out, with the reply's bytes and shape from the input."""
    rd = Reader(data)
    mem = GuestMemory(buffer=bytearray(MEM))
    qs, addrs = 4, QueueAddresses.packed_at(0, 4)
    drv_q = SplitQueueDriver(mem, addrs, qs)
    dev = SeedDevice(SplitQueueDevice(mem, addrs, qs), N_PAGES, lambda mask: None, ordered=rd.bool())
    ctrl, reply = 0x1000, 0x2000
    for _ in range(rd.int(1, 4)):
        op = rd.int(0, 3)
        if op == 0 and drv_q.num_free:
            drv_q.add(writable=[(ctrl, rd.pick([8, 8, 4, 16]))])
        elif op == 1:
            dev.request() if not dev.outstanding else None
            dev.dirty_log_synced() if rd.bool() else None
        elif op == 2 and drv_q.num_free >= 3:
            body = rd.bytes(rd.int(0, 16))
            mem.write(reply, body)
            split = rd.int(0, len(body))
            drv_q.add([(reply, split), (reply + split, len(body) - split)][:1 + (split < len(body))],
                      [(ctrl, 8)] if rd.int(0, 7) == 0 else [])
        else:
            dev.process()
        drv_q.publish()
        drv_q.harvest()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "inflate_pfns": guarded_target(inflate_pfns),
    "deflate_pfns": guarded_target(deflate_pfns),
    "reporting": guarded_target(reporting),
    "stats": guarded_target(stats),
    "free_page_vq": guarded_target(free_page_vq),
    "seed2016_reply": guarded_target(seed2016_reply),
}
