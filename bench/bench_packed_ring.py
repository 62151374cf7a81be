"""Packed-ring round trip (add -> publish -> pop -> add_used -> harvest) beside the split ring's, one process.

Both models run the same workload (queue size 256, batches of 64 lists of one readable and one writable
element), measured interleaved in the same run so machine noise hits both alike; the packed ring is also
timed at queue size 255, which only it allows. Ends with one ``key=value`` line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.virtio.memory import GuestMemory  # noqa: E402
from refmodel.virtio.packed.device import PackedQueueDevice  # noqa: E402
from refmodel.virtio.packed.driver import PackedQueueDriver  # noqa: E402
from refmodel.virtio.packed.layout import place  # noqa: E402
from refmodel.virtio.split.device import SplitQueueDevice  # noqa: E402
from refmodel.virtio.split.driver import SplitQueueDriver  # noqa: E402
from refmodel.virtio.virtq import QueueAddresses  # noqa: E402

QS = 256
BATCH = 64


def round_trips(drv: Any, dev: Any, n: int) -> float:
    t0 = time.perf_counter()
    done = 0
    while done < n:
        for i in range(BATCH):
            drv.add([(0x40000 + 64 * i, 16)], [(0x60000 + 64 * i, 16)], token=i)
        drv.publish()
        while (c := dev.pop()) is not None:
            dev.add_used(c.head, 16)
        done += len(drv.harvest())
    return done / (time.perf_counter() - t0)


def split(n: int) -> float:
    mem = GuestMemory(1 << 20)
    a = QueueAddresses.packed_at(0x1000, QS)  # "packed_at": the split ring's parts back to back
    return round_trips(SplitQueueDriver(mem, a, QS), SplitQueueDevice(mem, a, QS), n)


def packed(n: int, qs: int = QS) -> float:
    mem = GuestMemory(1 << 20)
    a = place(0x1000, qs)
    return round_trips(PackedQueueDriver(mem, a, qs), PackedQueueDevice(mem, a, qs), n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=50_000, help="round trips per measurement")
    p.add_argument("--repeat", type=int, default=5, help="interleaved measurements of each")
    args = p.parse_args()
    s, k, k255 = [], [], []
    for _ in range(args.repeat):  # interleave so machine noise hits all alike
        s.append(split(args.ops))
        k.append(packed(args.ops))
        k255.append(packed(args.ops, QS - 1))
    sb, kb, k255b = max(s), max(k), max(k255)
    print(f"ring round trip, batches of {BATCH} two-element lists, best of {args.repeat} x {args.ops}")
    print(f"{'ring':<28}{'round trips/s':>16}")
    print(f"{f'split, queue size {QS}':<28}{sb:>16,.0f}")
    print(f"{f'packed, queue size {QS}':<28}{kb:>16,.0f}")
    print(f"{f'packed, queue size {QS - 1}':<28}{k255b:>16,.0f}")
    print(f"packed/split ratio: {kb / sb:.3f}")
    print(f"qsize={QS} split_ops_per_s={sb:.0f} packed_ops_per_s={kb:.0f} "
          f"packed_{QS - 1}_ops_per_s={k255b:.0f} ratio={kb / sb:.3f}")


if __name__ == "__main__":
    main()
