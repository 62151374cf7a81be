"""Split-ring round trip (add -> publish -> pop -> add_used -> harvest), queue size 256, one process.

Prints the model's operations/s beside a plain-``struct`` ring doing the same memory traffic with no
checks, measured interleaved in the same run, so later changes compare as a ratio. Ends with one
``key=value`` line.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.virtio.memory import GuestMemory  # noqa: E402
from refmodel.virtio.virtq import QueueAddresses  # noqa: E402
from refmodel.virtio.split.device import SplitQueueDevice  # noqa: E402
from refmodel.virtio.split.driver import SplitQueueDriver  # noqa: E402

QS = 256
BATCH = 64
DESC = struct.Struct("<QIHH")
ELEM = struct.Struct("<II")
U16 = struct.Struct("<H")


def model_round_trips(n: int) -> float:
    mem = GuestMemory(1 << 20)
    a = QueueAddresses.packed_at(0x1000, QS)
    drv = SplitQueueDriver(mem, a, QS)
    dev = SplitQueueDevice(mem, a, QS)
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


def struct_round_trips(n: int) -> float:
    """The same ring traffic with bare struct calls: the floor for a Python implementation."""
    buf = bytearray(1 << 20)
    desc, avail, used = 0x1000, 0x1000 + 16 * QS, 0x1000 + 16 * QS + 6 + 2 * QS + 2
    free = list(range(QS))
    avail_idx = last_avail = used_idx = last_used = 0
    t0 = time.perf_counter()
    done = 0
    while done < n:
        for i in range(BATCH):
            d0, d1 = free.pop(), free.pop()
            DESC.pack_into(buf, desc + 16 * d0, 0x40000 + 64 * i, 16, 1, d1)
            DESC.pack_into(buf, desc + 16 * d1, 0x60000 + 64 * i, 16, 2, 0)
            U16.pack_into(buf, avail + 4 + 2 * ((avail_idx + i) % QS), d0)
        avail_idx = (avail_idx + BATCH) & 0xFFFF
        U16.pack_into(buf, avail + 2, avail_idx)
        while last_avail != U16.unpack_from(buf, avail + 2)[0]:
            head = U16.unpack_from(buf, avail + 4 + 2 * (last_avail % QS))[0]
            idx = head
            while True:
                _, _, flags, nxt = DESC.unpack_from(buf, desc + 16 * idx)
                if not flags & 1:
                    break
                idx = nxt
            last_avail = (last_avail + 1) & 0xFFFF
            ELEM.pack_into(buf, used + 4 + 8 * (used_idx % QS), head, 16)
            used_idx = (used_idx + 1) & 0xFFFF
            U16.pack_into(buf, used + 2, used_idx)
        while last_used != U16.unpack_from(buf, used + 2)[0]:
            head, _ = ELEM.unpack_from(buf, used + 4 + 8 * (last_used % QS))
            _, _, _, nxt = DESC.unpack_from(buf, desc + 16 * head)
            free += [nxt, head]
            last_used = (last_used + 1) & 0xFFFF
            done += 1
    return done / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=50_000, help="round trips per measurement")
    p.add_argument("--repeat", type=int, default=5, help="interleaved measurements of each")
    args = p.parse_args()
    model, base = [], []
    for _ in range(args.repeat):  # interleave so machine noise hits both alike
        model.append(model_round_trips(args.ops))
        base.append(struct_round_trips(args.ops))
    m, b = max(model), max(base)
    print(f"split ring round trip, queue size {QS}, batches of {BATCH}, best of {args.repeat} x {args.ops}")
    print(f"{'implementation':<28}{'round trips/s':>16}")
    print(f"{'refmodel (checked)':<28}{m:>16,.0f}")
    print(f"{'plain struct (unchecked)':<28}{b:>16,.0f}")
    print(f"model/baseline ratio: {m / b:.3f}")
    print(f"qsize={QS} model_ops_per_s={m:.0f} struct_ops_per_s={b:.0f} ratio={m / b:.3f}")


if __name__ == "__main__":
    main()
