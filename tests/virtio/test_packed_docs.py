"""docs/packed.rst is drawn from the model: the ownership of one packed-ring descriptor against the wrap
counters, read off ``refmodel.virtio.packed`` (the flags each side writes, from ``avail_flags`` and
``used_flags``, and what each side's parser makes of every flag pair in each lap). The test fails when
the page and the model part; ``VIRTIO_REGENERATE_DOCS=1`` rewrites the page."""

from __future__ import annotations

import os
from pathlib import Path

from refmodel.errors import PeerSpecViolation
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.packed.layout import (DESC_FLAGS, PDESC_FMT, PVIRTQ_DESC_SIZE, VIRTQ_DESC_F_AVAIL,
                                           VIRTQ_DESC_F_USED, avail_flags, place, used_flags)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "packed.rst"
QS = 4
BUF = 0x8000
PAIRS = [(a, u) for a in (0, 1) for u in (0, 1)]  # (AVAIL, USED)


def _flags(avail: int, used: int) -> int:
    return (VIRTQ_DESC_F_AVAIL if avail else 0) | (VIRTQ_DESC_F_USED if used else 0)


def _pair(flags: int) -> tuple[int, int]:
    return int(bool(flags & VIRTQ_DESC_F_AVAIL)), int(bool(flags & VIRTQ_DESC_F_USED))


def _start(wrap: int) -> int:
    """A position whose ring wrap counter is ``wrap``: the first lap has 1, the second 0."""
    return 0 if wrap else QS


def device_view(avail: int, used: int, wrap: int) -> str:
    """What the reference device's list walk makes of the descriptor it polls, in a lap with Driver Ring
    Wrap Counter ``wrap``."""
    mem, addrs = GuestMemory(1 << 16), place(0x1000, QS)
    dev = PackedQueueDevice(mem, addrs, QS, start_idx=_start(wrap))
    slot = addrs.desc + PVIRTQ_DESC_SIZE * (_start(wrap) % QS)
    mem.pack(PDESC_FMT, slot, BUF, 16, 0, _flags(avail, used))
    try:
        got = dev.walk_untrusted(_start(wrap))
    except PeerSpecViolation as e:
        return f"malformed: {e.req_id}"
    return "available (the device's)" if got is not None else "not available (the driver's)"


def driver_view(avail: int, used: int, wrap: int) -> str:
    """What the reference driver's harvest makes of a descriptor it made available, in a lap with Device
    Ring Wrap Counter ``wrap``."""
    mem, addrs = GuestMemory(1 << 16), place(0x1000, QS)
    drv = PackedQueueDriver(mem, addrs, QS, start_idx=_start(wrap))
    drv.add([], [(BUF, 16)])
    drv.publish()
    mem.write_u16(addrs.desc + PVIRTQ_DESC_SIZE * (_start(wrap) % QS) + DESC_FLAGS, _flags(avail, used))
    try:
        got = drv.harvest()
    except PeerSpecViolation as e:
        return f"malformed: {e.req_id}"
    return "used (the driver's again)" if got else "in flight (the device's)"


def _node(pair: tuple[int, int]) -> str:
    return f"A{pair[0]}U{pair[1]}"


def dot() -> list[str]:
    """One descriptor slot over two laps: made available by the driver, marked used by the device."""
    lines = ["digraph packed {", "   node [shape=box, fontsize=10]; edge [fontsize=9];",
             "   { rank=same; A0U0; A1U0; }", "   { rank=same; A0U1; A1U1; }"]  # the lap 1 row, the lap 0 row
    for pair in PAIRS:
        where = [f"wrap {w}: device polls: {device_view(*pair, w)}\\ndriver harvests: {driver_view(*pair, w)}"
                 for w in (1, 0)]
        label = "\\n".join([f"AVAIL={pair[0]} USED={pair[1]}", *where])
        lines.append(f'   {_node(pair)} [label="{label}"];')
    lines.append('   start [shape=plaintext, label="zeroed ring (PACKED-DRV-D12)"];')
    lines.append(f"   start -> {_node((0, 0))};")
    for wrap in (1, 0):
        free, avail, used = (_pair(f) for f in (used_flags(wrap ^ 1), avail_flags(wrap), used_flags(wrap)))
        lines.append(f'   {_node(free)} -> {_node(avail)} [label="driver makes available\\n'
                     f'(Driver Ring Wrap Counter {wrap})"];')
        lines.append(f'   {_node(avail)} -> {_node(used)} [label="device marks used\\n'
                     f'(Device Ring Wrap Counter {wrap})"];')
    return [*lines, "}"]


def table() -> list[str]:
    rows = [["AVAIL", "USED", "wrap counter", "the device polling it (PACKED-DRV-D2)",
             "the driver harvesting it (PACKED-DEV-D2)"]]
    rows += [[str(a), str(u), str(w), device_view(a, u, w), driver_view(a, u, w)]
             for w in (1, 0) for a, u in PAIRS]
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in rows:
        out += [f"   * - {row[0]}", *(f"     - {cell}" for cell in row[1:])]
    return out


def page() -> str:
    head = [
        "The packed virtqueue",
        "====================",
        "",
        "A packed ring (§2.8) is one array of descriptors that both sides write. Who owns a descriptor is",
        "said by two flag bits, VIRTQ_DESC_F_AVAIL and VIRTQ_DESC_F_USED, read against a ring wrap counter",
        "that starts at 1 and flips each time a side passes the ring's last descriptor (§2.8.1). The driver",
        "makes a descriptor available with AVAIL equal to its Driver Ring Wrap Counter and USED the inverse;",
        "the device marks it used with both equal to its Device Ring Wrap Counter.",
        "",
        "Both pictures are drawn from ``refmodel.virtio.packed``: the edges from ``layout.avail_flags`` and",
        "``layout.used_flags``, the verdicts from what the reference device's list walk",
        "(``PackedQueueDevice.walk_untrusted``) and the reference driver's harvest",
        "(``PackedQueueDriver.harvest``) make of each flag pair in each lap. They are generated by",
        "``tests/virtio/test_packed_docs.py``, which fails when this page and the model part",
        "(``VIRTIO_REGENERATE_DOCS=1`` rewrites it).",
        "",
        "Descriptor ownership against the wrap counters",
        "----------------------------------------------",
        "",
        "One slot of the ring over two laps. The zeroed ring reads, in the first lap, as used in a lap",
        "before it: the driver owns every descriptor. A node says, for each wrap counter, what the device",
        "polling it and the driver waiting for it to be used make of it.",
        "",
        ".. graphviz::",
        "   :caption: packed descriptor ownership",
        "",
    ]
    mid = [
        "",
        "Every flag pair in every lap",
        "----------------------------",
        "",
        "A pair a side cannot meet where it looks, in that lap, is a peer violation naming the requirement",
        "the other side broke: PACKED-DRV-D2 when the device polls it, PACKED-DEV-D2 when the driver",
        "harvests it.",
        "",
    ]
    tail = [
        "",
        "Where the model chose",
        "---------------------",
        "",
        "The choices §2.8 leaves open are recorded as ``AMB-PACKED-*`` entries",
        "(:doc:`generated/ambiguities`): how Buffer IDs are allocated, when a batch's first flags are",
        "written, the notification window, whether a used len without WRITE is read, reserved flags inside",
        "an indirect table, and the bound on a buffer's total length. The virtqueue-level machines",
        "(``conformance.machines.virtq.packed_device`` and ``packed_driver``) run any packed queue",
        "against the reference's other side: ``virtio-conformance run --level virtqueue --ring packed``.",
        "",
        "The balloon over packed rings",
        "-----------------------------",
        "",
        "The reference balloon device and driver take their queues from one seam, ``refmodel.virtio.rings``:",
        "``ring_for(negotiated)`` gives the split ring, or the packed one once VIRTIO_F_RING_PACKED (bit 34)",
        "is negotiated, with its queue classes, its placement (descriptor ring, then the driver and device",
        "event suppression areas) and its rule for a device's maximum queue size (SPLIT-DEV-D4 or",
        "PACKED-DEV-D1). The reference driver accepts packed rings whenever they are offered (RSV-DRV-4);",
        "the reference device offers them only when asked to. What an observer compares over time is one",
        "mark per side on either ring: ``used_mark()`` on a driver-side queue (the used idx, or the position",
        "after the used descriptors) and ``avail_mark()`` on a device-side one (the avail idx, or the",
        "position after the available lists), in the units each ring's notification suppression counts.",
        "",
        "``virtio-conformance run --ring packed`` runs the balloon-level machines over packed rings: the",
        "device machine's driver accepts VIRTIO_F_RING_PACKED (a device under test must offer it: the",
        "reference and the mutants then do, and ``--dut qemu`` gets ``packed=on`` on virtio-balloon-pci),",
        "and the driver machine's device offers it, so RSV-DRV-4 is judged. Every balloon feature runs",
        "there: inflate and deflate, statistics, free page hinting, reporting and poison. Notifications are",
        "judged as PACKED-DEV-D10/D11 and PACKED-DRV-D10; the split ring's requirements are then",
        "not-applicable. The malformed inputs that patch a descriptor have packed versions: a hint or a",
        "report outside guest memory (PACKED-DRV-D4), a list whose last descriptor has NEXT too, so it never",
        "ends (PACKED-DRV-7, the packed ring's loop), and an indirect table longer than the queue",
        "(PACKED-DRV-14). The used-length canaries have a packed version: a report's used descriptor with",
        "WRITE set claims len bytes written, so none of them may still hold the canary the suite's driver put",
        "there (PACKED-DEV-D13; SPLIT-DEV-15 on split rings); its Buffer ID leads to the elements the driver",
        "made available with it. Checks that write split used elements in place stay split-only: a stray",
        "NO_INTERRUPT flag (SPLIT-DEV-11) and needless descriptors (SPLIT-DRV-3). QEMU's verdicts over",
        "packed rings are in ``results/qemu-7.2-packed.txt`` and",
        "``results/qemu-10.0-11.1-packed.txt``; Linux's (the QEMU-guest route: the UML route's virtio_uml",
        "sends a packed ring's vhost-user base without its wrap counters) in ``results/matrix/*-packed.json``.",
    ]
    return "\n".join([*head, *(f"   {line}" for line in dot()), *mid, *table(), *tail]) + "\n"


def test_the_packed_page_is_drawn_from_the_model():
    want = page()
    if os.environ.get("VIRTIO_REGENERATE_DOCS"):
        PAGE.write_text(want, encoding="utf-8")
    assert PAGE.read_text(encoding="utf-8") == want, "VIRTIO_REGENERATE_DOCS=1 redraws docs/packed.rst"


def test_the_ownership_cycle_is_the_spec_one():
    # §2.8.1: available = AVAIL == wrap != USED; used = AVAIL == USED == wrap.
    for wrap in (1, 0):
        assert device_view(wrap, wrap ^ 1, wrap) == "available (the device's)"
        assert driver_view(wrap, wrap, wrap) == "used (the driver's again)"
        assert driver_view(wrap, wrap ^ 1, wrap) == "in flight (the device's)"
        assert device_view(wrap ^ 1, wrap ^ 1, wrap) == "not available (the driver's)"
        assert device_view(wrap, wrap, wrap) == "malformed: PACKED-DRV-D2"  # looks used before it was
