"""Write the seed corpus, ``fuzz/corpus/<target>/``, from the reference model's own valid output.

Rings: the reference driver's published chains (pop) and the reference device's used ring (harvest);
balloon buffers laid out as the reference driver writes them; protocol messages as the reference
backend and QEMU send them. ``python -m fuzz.make_corpus`` rewrites every file; the names are content
hashes, so an unchanged seed keeps its name.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

from conformance.adapters.vhost_user import protocol as P
from refmodel.balloon.device import DEFAULT_OFFER
from refmodel.balloon.seed2016 import bitmap_bytes
from refmodel.balloon.stats import _STAT
from refmodel.errors import LocalSpecViolation
from refmodel.virtio.features import Feature
from refmodel.virtio.packed import layout as packed_layout
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import IndirectArena, QueueFull, SplitQueueDriver

from fuzz import balloon as B
from fuzz import c_adapter, qemu, rings
from fuzz.layout import Writer
from fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parent / "corpus"
ROOT = Path(__file__).resolve().parents[1]
F = Feature
U32 = struct.Struct("<I")


def _trim(image: bytes) -> bytes:
    return image.rstrip(b"\0")


def ring_pop(packed: bool) -> list[bytes]:
    out = []
    for code, flags in ((2, 0), (2, 3), (3, 7), (1, 0)):
        qs = rings.packed_qs(code) if packed else rings.split_qs(code)
        mem = rings.memory(b"")
        addrs = packed_layout.place(0, qs) if packed else rings.split_addrs(qs)
        kind = PackedQueueDriver if packed else SplitQueueDriver
        drv = kind(mem, addrs, qs, event_idx=bool(flags & 1), indirect_desc=True,
                   indirect_arena=IndirectArena(rings.ARENA, rings.ARENA_SIZE))
        chains = [([(rings.BUFS, 16)], [(rings.BUFS + 0x100, 32)], False),
                  ([(rings.BUFS + 0x200, 8), (rings.BUFS + 0x300, 8)], [], False),
                  ([(rings.BUFS + 0x400, 16)], [(rings.BUFS + 0x500, 16)], bool(flags & 2))]
        for readable, writable, indirect in chains:
            try:
                drv.add(readable, writable, indirect=indirect)
            except (QueueFull, LocalSpecViolation):  # the queue is too small for the rest
                break
        drv.publish()
        out.append(bytes([code, flags, 0, 0]) + _trim(mem.read(0, rings.MEM)))
    return out


def ring_harvest(packed: bool) -> list[bytes]:
    out = []
    for header in (bytes([2, 0, 3, 2]), bytes([2, 7, 2, 3]), bytes([3, 9, 4, 1]), bytes([0, 0, 1, 0])):
        mem, drv, qs = rings.driver_setup(packed, header)
        kind = PackedQueueDevice if packed else SplitQueueDevice
        dev = kind(mem, drv.addrs, qs, event_idx=bool(header[1] & 1), indirect_desc=True)
        while (chain := dev.pop()) is not None:
            dev.add_used(chain.head, chain.writable_len)
        out.append(header + b"".join(mem.read(a, n) for a, n in rings.device_area(packed, drv, qs)))
    return out


def features(w: Writer, offered: int) -> Writer:
    w.int(0, 2**64 - 1, offered)
    if offered & F.VIRTIO_BALLOON_F_PAGE_POISON.mask:
        w.int(0, 2**32 - 1, 0)
    return w


def chain(w: Writer, readable: list[tuple[int, int, bytes]], writable: list[tuple[int, int]] = (),
          head: int = 0) -> Writer:
    """The input :func:`fuzz.balloon.read_chain` reads back as these buffers: page-aligned ones by page."""
    def buf(addr: int, length: int) -> None:
        if addr % B.BALLOON_PAGE_SIZE == 0 and length % B.BALLOON_PAGE_SIZE == 0:
            page = addr // B.BALLOON_PAGE_SIZE
            w.bool(True).int(0, B.N_PAGES - 1, page)
            w.int(0, min(B.N_PAGES - page, B.MAX_PAGES), length // B.BALLOON_PAGE_SIZE)
        else:
            w.bool(False).int(0, B.MEM - 1, addr).int(0, min(B.MEM - addr, 512), length)
    w.int(0, 3, len(readable))
    for addr, length, _ in readable:
        buf(addr, length)
    w.int(0, 2, len(writable))
    for addr, length in writable:
        buf(addr, length)
    for _, length, data in readable:
        w.bytes(data[:min(length, 256)].ljust(min(length, 256), b"\0"))
    return w.int(0, 63, head)


def pfns(*ps: int) -> bytes:
    return b"".join(U32.pack(p) for p in ps)


def balloon_seeds() -> dict[str, list[bytes]]:
    no_poison = DEFAULT_OFFER & ~F.VIRTIO_BALLOON_F_PAGE_POISON.mask
    arr = pfns(3, 4, 9)
    inflate = [chain(features(Writer(), off).int(0, 2**B.N_PAGES - 1, 0), [(0x1000, len(arr), arr)]).done()
               for off in (DEFAULT_OFFER, no_poison)]
    held = 1 << 3 | 1 << 4
    deflate = [chain(features(Writer(), DEFAULT_OFFER).int(0, B.N_PAGES, 0).int(0, 2**B.N_PAGES - 1, held),
                     [(0x1000, 8, pfns(3, 4))]).done()]
    page = B.BALLOON_PAGE_SIZE
    reporting = [chain(features(Writer(), no_poison), [], [(5 * page, 2 * page)]).done(),
                 chain(features(Writer(), DEFAULT_OFFER), [], [(8 * page, page)]).done()]
    st = b"".join(_STAT.pack(t, v) for t, v in ((4, 1 << 20), (5, 1 << 22), (6, 1 << 30)))
    stats = [chain(features(Writer(), DEFAULT_OFFER).int(1, 3, 1).bool(False), [(0x1000, len(st), st)])
             .done(),
             chain(chain(features(Writer(), no_poison).int(1, 3, 2).bool(True), [(0x1000, len(st), st)])
                   .bool(True), [(0x1000, len(st), st)]).done()]
    w = Writer().bool(False).int(1, 8, 4).int(0, 5, 0)  # start: command ID 2
    chain(w.int(0, 5, 3), [(0x1000, 4, U32.pack(2))])
    chain(w.int(0, 5, 3), [], [(4 * B.BALLOON_PAGE_SIZE, 4 * B.BALLOON_PAGE_SIZE)])
    w.int(0, 5, 1)  # stop
    n = bitmap_bytes(B.N_PAGES)
    reply = struct.pack("<Q", n) + (0xF0F0F0F0).to_bytes(n, "little")
    seed = (Writer().bool(True).int(1, 4, 4).int(0, 3, 0).pick([8, 8, 4, 16], 8).int(0, 3, 1).bool(False)
            .int(0, 3, 2).int(0, 16, len(reply)).bytes(reply).int(0, len(reply), 8).int(0, 7, 1).int(0, 3, 3))
    return {"inflate_pfns": inflate, "deflate_pfns": deflate, "reporting": reporting, "stats": stats,
            "free_page_vq": [w.done()], "seed2016_reply": [seed.done()]}


def vhost_user_seeds() -> dict[str, list[bytes]]:
    region = P.MEM_REGION.pack(0, 1 << 28, 0x7F0000000000, 0)
    return {
        "vhost_user_header": [P.message(P.Request.GET_FEATURES)[:P.HEADER.size],
                              P.message(P.Request.SET_MEM_TABLE, b"\0" * 40,
                                        flags=P.VERSION | P.FLAG_NEED_REPLY)[:12]],
        "vhost_user_u64": [P.U64.pack(1 << 32 | 1)],
        "vhost_user_vring_state": [P.VRING_STATE.pack(0, 256)],
        "vhost_user_vring_addr": [P.VRING_ADDR.pack(0, 0, 0x7F0000001000, 0x7F0000002000, 0x7F0000003000, 0)],
        "vhost_user_mem_table": [P.MEM_HEADER.pack(1, 0) + region, P.MEM_HEADER.pack(2, 0) + region * 2],
        "vhost_user_config": [b"\0" + P.CONFIG_HEADER.pack(0, 8, 0),
                              b"\1" + P.CONFIG_HEADER.pack(4, 4, 0) + U32.pack(7)],
    }


def qtest_seed(reply: bytes, op: str) -> bytes:
    w = Writer().int(1, 3, 1).int(0, len(qemu.QTEST_OPS) - 1, [o[0] for o in qemu.QTEST_OPS].index(op))
    return w.int(1, 64, len(reply)).bytes(reply).done()


def c_seed(call: str, *values: tuple[int, int]) -> bytes:
    """One call of ``call``, the fake library answering ``values`` (bits, value) in order."""
    w = Writer().int(1, 4, 1).int(0, len(c_adapter.CALLS) - 1, [c[0] for c in c_adapter.CALLS].index(call))
    for bits, v in values:
        w.int(0, (1 << bits) - 1, v)
    return w.done()


def other_seeds() -> dict[str, list[bytes]]:
    text = (ROOT / "spec" / "requirements.toml").read_text(encoding="utf-8")
    entries = text.split("[[requirement]]")
    return {
        "qtest_reply": [qtest_seed(b"OK 0x12345678\n", "readl"), qtest_seed(b"IRQ raise 4\nOK\n", "writel"),
                        qtest_seed(b"OK 0x1af4\n", "inw")],
        "qmp_reply": [b'{"return": {"actual": 1073741824}}', b'{"return": {}}',
                      b'{"error": {"class": "DeviceNotActive", "desc": "No balloon device has been '
                      b'activated"}}'],
        "c_device": [c_seed("read_status", (32, 0x0F)), c_seed("read_device_features", (64, DEFAULT_OFFER)),
                     c_seed("read_config", (32, 16), (32, 0)), c_seed("hint_start", (64, 2))],
        "catalogue": ["[[requirement]]".join(entries[:n + 1]).encode() for n in (1, 2)],
        # A list shaped like the shipped ones, not the live file: that changes with every deviation found.
        "known_deviations": [b"# Known deviations of a device, one requirement ID per line.\n\n"
                             b"BAL-FPH-D5   # a reason over\n             # two comment lines\n"
                             b"SPLIT-DEV-13 # first use after reset always notified\n",
                             b"SPLIT-DRV-1\n# a comment\nBAL-OP-D1  # trailing\n",
                             # Entries scoped to builds (conformance.known_deviations' grammar).
                             b"PACKED-DEV-7  qemu==7.2\n             # a reason\n"
                             b"SPLIT-DEV-10  qemu>10.0  # after the 10.0 series\n"
                             b"SPLIT-DEV-13\tqemu >= 9.0 qemu<11 linux!=6.1.0  # every condition holds\n"],
    }


def seeds() -> dict[str, list[bytes]]:
    out = {"split_pop": ring_pop(False), "packed_pop": ring_pop(True), "split_harvest": ring_harvest(False),
           "packed_harvest": ring_harvest(True)}
    out |= balloon_seeds() | vhost_user_seeds() | other_seeds()
    missing = set(TARGETS) - set(out)
    if missing:
        raise SystemExit(f"no seeds for {sorted(missing)}")
    return out


def main() -> None:
    for name, inputs in sorted(seeds().items()):
        d = CORPUS / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for data in inputs:
            (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)
        print(f"{name}: {len(inputs)} seeds")


if __name__ == "__main__":
    main()
