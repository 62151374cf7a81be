"""Seconds per example of the driver suite on each route that runs the real Linux driver: User-Mode Linux
over vhost-user (``--dut linux``) and a QEMU TCG guest over virtio-pci (``--dut linux-qemu``).

Per route: the boot alone (start to the agent's answer, then the driver's probe), over ``--boots``
guests; then one suite run under ``--profile`` (boot plus steps, every example a fresh guest), its
wall time divided by the profile's example count. Prints a row per route and ends with one
``key=value`` line. The host's load average is printed too: TCG guests slow down in proportion.

``--compare`` (QEMU-guest route) measures the shortened boot against the plain one
(``QemuLinuxFactory(fast_boot=False)``: the bzImage, no boot-only kernel options) side by side: the
boots alternate plain, short, plain, ... (``--boots`` of each) and so do ``--suites`` suite runs of each,
(one seed per pair, so both run the same examples), so a busy host's load falls on both alike; only
the ratios mean much then. Its keys (``qemu_guest_plain_*``, ``qemu_guest_short_*``,
``qemu_guest_*_ratio``) are appended to the last line.

Use: bench_routes.py [--routes uml,qemu-guest] [--kernel bookworm] [--boots 3] [--profile dev] [--no-suite]
                     [--compare [--suites 1]]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice  # noqa: E402

from conformance.adapters.linux.qemu_route import QemuLinuxFactory  # noqa: E402
from conformance.cli import load_known_deviations  # noqa: E402
from conformance.registry import resolve  # noqa: E402
from conformance.runner import RunResult, run  # noqa: E402

ROUTES = {"uml": ("linux", {}), "qemu-guest": ("linux-qemu", {"kernel": None})}


def boots(factory, n: int) -> tuple[list[float], list[float]]:
    """(seconds to the agent, seconds to DRIVER_OK after it) for ``n`` fresh guests."""
    up, probe = [], []
    for _ in range(n):
        a, b = boot(factory)
        up.append(a)
        probe.append(b)
    return up, probe


def boot(factory) -> tuple[float, float]:
    drv = factory()
    try:
        t0 = time.perf_counter()
        drv.start(DEFAULT_OFFER, BalloonDevice)
        t1 = time.perf_counter()
        drv.probe()
        return t1 - t0, time.perf_counter() - t1
    finally:
        drv.close()


def suite(impl, profile: str, known, seed: int | None = None) -> tuple[float, RunResult]:
    t0 = time.perf_counter()
    res = run(impl, profile, known_deviations=known, seed=seed)
    return time.perf_counter() - t0, res


def _figures(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.1f} s of {len(xs)}: {', '.join(f'{x:.1f}' for x in xs)}"


def compare(kernel: str, n: int, profile: str, suites: int, no_suite: bool, out: dict[str, float]) -> None:
    """The plain boot against the shortened one, alternating; adds ``qemu_guest_plain_*`` and ratio keys."""
    impl = resolve("linux-qemu", "driver", kernel=kernel)
    variants = {"plain": attrs.evolve(impl, factory=QemuLinuxFactory(kernel, fast_boot=False)), "short": impl}
    up: dict[str, list[float]] = {k: [] for k in variants}
    probe: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(n):
        for k, v in variants.items():
            a, b = boot(v.factory)
            up[k].append(a)
            probe[k].append(b)
    print(f"{'':10} compare (alternating, {n} boots each; load now "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}):")
    for k, v in variants.items():
        print(f"{'':12} {k:5} ({os.path.basename(v.factory.boot_image)}"
              f"{' ' + ' '.join(v.factory.extra_append) if v.factory.extra_append else ''}): "
              f"to agent {_figures(up[k])}; probe to DRIVER_OK {_figures(probe[k])}")
    med = {k: statistics.median(up[k]) for k in variants}
    out["qemu_guest_plain_boot_s"] = med["plain"]
    out["qemu_guest_short_boot_s"] = med["short"]
    out["qemu_guest_plain_probe_s"] = statistics.median(probe["plain"])
    out["qemu_guest_short_probe_s"] = statistics.median(probe["short"])
    out["qemu_guest_boot_ratio"] = med["short"] / med["plain"]
    if no_suite:
        return
    examples = impl.factory.profiles[profile]["max_examples"]
    known = load_known_deviations("linux")
    per: dict[str, list[float]] = {k: [] for k in variants}
    same = 0
    for i in range(suites):
        verdicts: dict[str, dict[str, str]] = {}
        for k, v in variants.items():  # the same seed for both: the same examples
            wall, res = suite(v, profile, known, seed=i)
            per[k].append(wall / examples)
            verdicts[k] = {x.requirement.id: x.verdict for x in res.verdicts}
            for e in res.errors:
                print(f"{'':12} {k:5} seed {i} error: {e.kind}: {e.detail.splitlines()[0][:150]}")
        diff = sorted(r for r in verdicts["plain"] if verdicts["plain"][r] != verdicts["short"].get(r))
        same += not diff
        print(f"{'':12} seed {i}: " + ("the same verdicts" if not diff else "verdicts differ: " + ", ".join(
            f"{r} {verdicts['plain'][r]}/{verdicts['short'].get(r)}" for r in diff)))
    for k in variants:
        print(f"{'':12} {k:5} {profile}: s per example {_figures(per[k])}")
    out["qemu_guest_plain_s_per_example"] = statistics.median(per["plain"])
    out["qemu_guest_short_s_per_example"] = statistics.median(per["short"])
    out["qemu_guest_s_per_example_ratio"] = out["qemu_guest_short_s_per_example"] / out[
        "qemu_guest_plain_s_per_example"]
    out["qemu_guest_same_verdict_seeds"] = same


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--routes", default="uml,qemu-guest")
    p.add_argument("--kernel", default="bookworm", help="cloud kernel of the QEMU-guest route")
    p.add_argument("--boots", type=int, default=3)
    p.add_argument("--profile", default="dev")
    p.add_argument("--no-suite", action="store_true", help="boots only")
    p.add_argument("--compare", action="store_true",
                   help="QEMU-guest route: the plain boot against the shortened one, alternating")
    p.add_argument("--suites", type=int, default=1, help="with --compare: suite runs of each")
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
        wall, res = suite(impl, args.profile, known)
        out[f"{key}_s_per_example"] = wall / examples
        print(f"{'':10} {args.profile}: {examples} examples of up to "
              f"{impl.factory.profiles[args.profile]['stateful_step_count']} steps in {wall:.1f} s = "
              f"{wall / examples:.1f} s per example (boot plus steps); {len(res.errors)} error(s), "
              f"{sum(v.verdict == 'fail' and not v.known_deviation for v in res.verdicts)} failure(s)")
    if args.compare:
        compare(args.kernel, args.boots, args.profile, args.suites, args.no_suite, out)
    print(" ".join(f"{k}={v:.2f}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
