"""Real QEMU: virtqueue requests/s through the qtest adapter, QMP round trips/s (qemu.qmp), and
live-migration bytes with and without the reference driver's free page hints at two guest sizes, beside
the model's prediction for the same pages, hints and writes
(``refmodel.system.migration.predict_full_pages``, every hint before the bulk pass) and the ideal (pages
in use + pages dirtied). Targets (issue 5): >= 500 requests/s; with hints
<= 1.1x the ideal. Asserts nothing. ``--json FILE`` writes the figures for the docs' plots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.adapters.qemu.device import RESERVED_PAGES, QemuFactory  # noqa: E402
from conformance.adapters.qemu.migration import migrate  # noqa: E402
from refmodel.balloon.driver import BalloonDriver  # noqa: E402
from refmodel.system.guest_os import GuestOS  # noqa: E402


def requests_per_second(requests: int) -> float:
    """Inflate and deflate one page per buffer: each is a full request (kick, device, used, interrupt)."""
    factory = QemuFactory()
    try:
        dev = factory()
        os_ = GuestOS.over(dev.mem, reserved=RESERVED_PAGES)
        drv = BalloonDriver(batch=1, queue_size=64)
        drv.probe(dev, os_)
        done, start, target = 0, time.perf_counter(), 32
        while done < requests:
            dev.set_target(target)
            before = sum(vq.last_used_idx for vq in drv.vqs.values())
            for _ in range(4):
                dev.run()
                irq = dev.take_interrupts()
                drv.interrupt(irq.queues, irq.config)
                drv.run()
            done += sum(vq.last_used_idx for vq in drv.vqs.values()) - before
            target = 32 - target
        return done / (time.perf_counter() - start)
    finally:
        factory.close()


def qmp_round_trips_per_second(n: int) -> float:
    """``query-status`` back to back on the adapter's QMP client (qemu.qmp)."""
    from conformance.adapters.qemu.process import QemuProcess

    q = QemuProcess()
    try:
        start = time.perf_counter()
        for _ in range(n):
            q.qmp.execute("query-status")
        return n / (time.perf_counter() - start)
    finally:
        q.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--qmp", type=int, default=1000, help="QMP round trips to time")
    p.add_argument("--ram-mib", type=int, nargs="+", default=[64, 256])
    p.add_argument("--json", type=Path, help="write the migration figures here (results/migration-qtest-*.json)")
    args = p.parse_args()
    rps = requests_per_second(args.requests)
    print(f"qtest adapter: {rps:,.0f} virtqueue requests/s ({args.requests} requests)")
    qmp = qmp_round_trips_per_second(args.qmp)
    print(f"QMP: {qmp:,.0f} round trips/s (query-status x {args.qmp})")
    print(f"\n{'guest':>7} {'hints':>6} {'MB sent':>9} {'full pages':>11} {'model':>7} {'ideal':>7} {'x ideal':>8} "
          f"{'lost':>5} {'s':>6}")
    figures = {}
    for mib in args.ram_mib:
        in_use = (mib << 8) // 8  # an eighth of the guest in use
        for hints in (True, False):
            r = migrate(hints=hints, ram_mib=mib, in_use_pages=in_use)
            ratio = r.normal_pages / r.ideal_pages
            print(f"{mib:>5}Mi {str(hints):>6} {r.transferred_bytes / 1e6:>9.1f} {r.normal_pages:>11} "
                  f"{r.model_pages:>7} {r.ideal_pages:>7} {ratio:>8.2f} {len(r.lost):>5} {r.seconds:>6.2f}")
            figures[mib, hints] = r
    big = max(args.ram_mib)
    h, n = figures[big, True], figures[big, False]
    print(f"\nat {big} MiB hints cut the bytes sent to {h.transferred_bytes / n.transferred_bytes:.2f} of no hints; "
          f"measured / model: {h.normal_pages / h.model_pages:.3f} with hints, {n.normal_pages / n.model_pages:.3f} "
          "without")
    if args.json:
        from conformance.adapters.qemu.process import QemuProcess

        q = QemuProcess()
        try:
            v = q.qmp.execute("query-version") or {}
            num = v.get("qemu", {})
            version = f"QEMU {num.get('major')}.{num.get('minor')}.{num.get('micro')} ({v.get('package', '').strip()})"
        finally:
            q.close()
        args.json.write_text(json.dumps({"qemu": version, "requests_per_s": round(rps),
                                         "qmp_round_trips_per_s": round(qmp), "runs": [
            {"ram_mib": r.ram_mib, "hints": r.hints, "mb": round(r.transferred_bytes / 1e6, 1),
             "full_pages": r.normal_pages, "model_pages": r.model_pages, "ideal": r.ideal_pages,
             "hinted_pages": r.hinted_pages, "lost": len(r.lost), "seconds": round(r.seconds, 2)}
            for r in figures.values()]}, indent=1) + "\n")
    print(f"requests_per_s={rps:.0f} qmp_round_trips_per_s={qmp:.0f}", end=" ")
    print(f"ram_mib={big} hinted_mb={h.transferred_bytes / 1e6:.1f} "
          f"plain_mb={n.transferred_bytes / 1e6:.1f} hinted_x_ideal={h.normal_pages / h.ideal_pages:.2f} "
          f"hinted_x_model={h.normal_pages / h.model_pages:.3f} plain_x_model={n.normal_pages / n.model_pages:.3f} "
          f"lost={len(h.lost) + len(n.lost)}")


if __name__ == "__main__":
    main()
