"""Seconds per example of the driver suite on each route that runs the real Linux driver: User-Mode Linux
over vhost-user (``--dut linux``) and a QEMU TCG guest over virtio-pci (``--dut linux-qemu``).

Per route: the boot alone (start to the agent's answer, then the driver's probe), over ``--boots``
guests; then one suite run under ``--profile`` (boot plus steps, every example a fresh guest), its
wall time divided by the profile's example count. Prints a row per route and ends with one
``key=value`` line. The host's load average is printed too: TCG guests slow down in proportion.

Use: bench_routes.py [--routes uml,qemu-guest] [--kernel bookworm] [--boots 3] [--profile dev] [--no-suite]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice  # noqa: E402

from conformance.cli import load_known_deviations  # noqa: E402
from conformance.registry import resolve  # noqa: E402
from conformance.runner import run  # noqa: E402

ROUTES = {"uml": ("linux", {}), "qemu-guest": ("linux-qemu", {"kernel": None})}


def boots(factory, n: int) -> tuple[list[float], list[float]]:
    """(seconds to the agent, seconds to DRIVER_OK after it) for ``n`` fresh guests."""
    up, probe = [], []
    for _ in range(n):
        drv = factory()
        try:
            t0 = time.perf_counter()
            drv.start(DEFAULT_OFFER, BalloonDevice)
            t1 = time.perf_counter()
            drv.probe()
            up.append(t1 - t0)
            probe.append(time.perf_counter() - t1)
        finally:
            drv.close()
    return up, probe


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--routes", default="uml,qemu-guest")
    p.add_argument("--kernel", default="bookworm", help="cloud kernel of the QEMU-guest route")
    p.add_argument("--boots", type=int, default=3)
    p.add_argument("--profile", default="dev")
    p.add_argument("--no-suite", action="store_true", help="boots only")
    args = p.parse_args()
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    out = {}
    for route in args.routes.split(","):
        dut, kw = ROUTES[route]
        kw = {k: args.kernel for k in kw}
        impl = resolve(dut, "driver", **kw)
        up, probe = boots(impl.factory, args.boots)
        key = route.replace("-", "_")
        out[f"{key}_boot_s"] = statistics.median(up)
        print(f"{route:10} {impl.factory.version}")
        print(f"{'':10} boot to agent {statistics.median(up):.1f} s (median of {len(up)}: "
              f"{', '.join(f'{x:.1f}' for x in up)}), probe to DRIVER_OK {statistics.median(probe):.1f} s")
        if args.no_suite:
            continue
        examples = impl.factory.profiles[args.profile]["max_examples"]
        known = load_known_deviations("linux") if route == "qemu-guest" else frozenset()
        t0 = time.perf_counter()
        res = run(impl, args.profile, known_deviations=known)
        wall = time.perf_counter() - t0
        out[f"{key}_s_per_example"] = wall / examples
        print(f"{'':10} {args.profile}: {examples} examples of up to "
              f"{impl.factory.profiles[args.profile]['stateful_step_count']} steps in {wall:.1f} s = "
              f"{wall / examples:.1f} s per example (boot plus steps); {len(res.errors)} error(s), "
              f"{sum(v.verdict == 'fail' and not v.known_deviation for v in res.verdicts)} failure(s)")
    print(" ".join(f"{k}={v:.2f}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
