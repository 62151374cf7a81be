"""``python -m refmodel.selfcheck``: run the reference driver against the reference device and report.

This is the main job until the conformance CLI exists: it negotiates, walks the status lifecycle,
exercises every queue of every feature combination over each queue-numbering interpretation, and
feeds the device side each class of malformed chain, printing one verdict line per check.
"""

from __future__ import annotations

import itertools
import sys

from spec.catalogue import catalogue

from refmodel.errors import PeerSpecViolation
from refmodel.virtio.features import BALLOON_FEATURES, Feature, check_negotiation, mask_of
from refmodel.balloon.queues import QueueNumbering, balloon_queue_indices
from refmodel.virtio.split.layout import DESC_FMT
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.status import DeviceStatusMachine, Role, StatusEvent
from refmodel.virtio.virtq import QueueAddresses
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import IndirectArena, SplitQueueDriver


def _roundtrip(queue_size: int, event_idx: bool, indirect: bool, start: int) -> int:
    mem = GuestMemory(1 << 20)
    addrs = QueueAddresses.packed_at(0x1000, queue_size)
    drv = SplitQueueDriver(mem, addrs, queue_size, event_idx=event_idx, indirect_desc=indirect,
                           start_idx=start, indirect_arena=IndirectArena(0x80000, 0x10000))
    dev = SplitQueueDevice(mem, addrs, queue_size, event_idx=event_idx, indirect_desc=indirect, start_idx=start)
    done = 0
    for i in range(3 * queue_size):
        mem.write(0x40000, i.to_bytes(4, "little"))
        writable = [(0x50000, 8)] if queue_size > 1 else []  # a 1-entry queue holds 1-descriptor chains
        drv.add([(0x40000, 4)], writable, token=i, indirect=indirect and i % 2 == 0)
        drv.publish()
        chain = dev.pop()
        assert chain is not None and chain.read_all(mem) == i.to_bytes(4, "little")
        dev.add_used(chain.head, chain.write_all(mem, b"ok"))
        used = drv.harvest()
        assert [u.token for u in used] == [i]
        done += 1
    return done


def _malformed() -> list[tuple[str, str]]:
    """Write a loop into a published chain and check the device names SPLIT-DRV-4."""
    mem = GuestMemory(1 << 16)
    addrs = QueueAddresses.packed_at(0, 4)
    drv = SplitQueueDriver(mem, addrs, 4)
    dev = SplitQueueDevice(mem, addrs, 4)
    head = drv.add([(0x8000, 16), (0x8010, 16)])
    drv.publish()
    mem.pack(DESC_FMT, addrs.desc + 16 * 2, 0x8010, 16, 1, head)  # descriptor 2 now points back
    mem.pack(DESC_FMT, addrs.desc + 16 * head, 0x8000, 16, 1, 2)
    try:
        dev.pop()
    except PeerSpecViolation as e:
        return [("loop detected", e.req_id)]
    return [("loop detected", "MISSED")]


def main() -> int:
    failures = 0
    print(f"catalogue: {len(catalogue())} requirements")
    offered_all = mask_of(BALLOON_FEATURES) | Feature.VIRTIO_F_VERSION_1.mask
    for n in range(1 << len(BALLOON_FEATURES)):
        accepted = Feature.VIRTIO_F_VERSION_1.mask | Feature.VIRTIO_BALLOON_F_MUST_TELL_HOST.mask
        accepted |= sum(f.mask for i, f in enumerate(sorted(BALLOON_FEATURES)) if n >> i & 1)
        v = check_negotiation(offered_all, accepted)
        if not v.valid:
            failures += 1
            print(f"FAIL negotiation {accepted:#x}: {v.violations}")
    print(f"negotiation: {1 << len(BALLOON_FEATURES)} feature sets checked")
    for numbering in QueueNumbering:
        q = balloon_queue_indices(numbering, offered_all, Feature.VIRTIO_BALLOON_F_PAGE_REPORTING.mask)
        print(f"queues ({numbering.value}, only PAGE_REPORTING negotiated): {q}")
    status = DeviceStatusMachine(Role.DEVICE)
    for value in (1, 3, 11):
        status.driver_write(value)
    status.process(StatusEvent.ACCEPT_FEATURES)
    status.driver_write(15)
    print(f"status lifecycle: reached {status.state.name} (status {status.status:#04x})")
    for qs, ev, ind, start in itertools.product((1, 8, 256), (False, True), (False, True), (0, 65530)):
        n = _roundtrip(qs, ev, ind, start)
        print(f"split ring qsize={qs:<4} event_idx={ev!s:<5} indirect={ind!s:<5} start={start:<5} "
              f"{n} round trips ok")
    for what, got in _malformed():
        ok = got == "SPLIT-DRV-4"
        failures += not ok
        print(f"{'pass' if ok else 'FAIL'} malformed chain: {what} -> {got}")
    print("self-check:", "FAILED" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
