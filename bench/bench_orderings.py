"""Host orderings for a hinting (or reporting) Linux guest, in the calibrated timing model: full pages,
MB and seconds per ordering against hinting off, on the committed real run's guest and a smaller one,
on the measured host (TCG to exec:cat) and on a link-limited one (10 GbE).

Orderings (refmodel.system.orderings): QEMU's default; ``gate`` (cap max-bandwidth near zero until
hints stop arriving: the driver's STOP); ``cap=B`` (cap at B bytes/s, lift once hints stop); for
reporting, migrate at once or wait for reporting to settle. Every one is bounded; the table shows
the bound with a guest that never hints and one that stops halfway. "x honest" is full pages over
the honest ideal (refmodel.system.migration.HonestIdeal). The best ordering is the one sending
fewest pages in no more total time than hinting off. Ends with one key=value line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.system.orderings import GATE_BPS, CapThenLift, Outcome, SettleReporting, best, compare  # noqa: E402
from refmodel.system.timing import (FULL_BYTES, PAGE, DriverTiming, GuestMix, HostTiming,  # noqa: E402
                                    ReportingTiming, Uncapped, simulate)

RUN = Path(__file__).resolve().parents[1] / "results" / "migration-linux-qemu-7.2.json"
CAPS = (GATE_BPS, 2.5e8, 5e8, 7.5e8, 1e9, 1.25e9, 1.5e9, 2e9)
QUIET = (0.02, 0.05)


def guest(mem_mib: int, keep_mib: int, fill_mib: int, base_mib: float) -> GuestMix:
    """A guest like the bench's: ``base_mib`` for the kernel and its own, ``keep_mib`` in use, ``fill_mib``
    written and freed, the rest never written."""
    free = (mem_mib - keep_mib - base_mib) * 2**20
    return GuestMix.measured(mem_mib, int(free), fill_mib)


def name_of(cap: float, quiet: float) -> str:
    return "gate" if cap == GATE_BPS else f"cap={cap / 1e9:g}GB/s"


def orderings(mix: GuestMix, host: HostTiming, driver: DriverTiming) -> tuple[Outcome, Outcome, list[Outcome]]:
    off, default, *tried = compare(mix, host, driver, {
        "off": None, "default": Uncapped(),
        **{f"{name_of(c, q)} quiet={q * 1e3:g}ms": CapThenLift(c, q) for c in CAPS for q in QUIET}})
    return off, default, tried


def row(label: str, o: Outcome, off_s: float) -> str:
    r = o.run
    return (f"{label:>26}{r.full_pages:>11,.0f}{o.over_honest():>9.2f}{r.mb:>9.1f}{r.wait_s:>7.2f}{r.wall_s:>7.2f}"
            f"{r.total_s:>7.2f}{r.total_s / off_s:>8.2f}{r.hinted:>10,.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", default="1024,128,700", help="MEM,KEEP,FILL MiB of the second guest")
    p.add_argument("--settle", type=float, default=6.0, help="seconds from the free to migrate (as the real bench)")
    p.add_argument("--link-gbps", type=float, default=10.0, help="the link-limited host's line rate")
    args = p.parse_args()
    d = json.loads(RUN.read_text())
    a, hint = d["args"], next(r for r in d["runs"] if r["mode"] == "hint")
    base = (hint["ideal"] * PAGE / 2**20) - a["keep_mib"]
    mem, keep, fill = (int(x) for x in args.small.split(","))
    guests = {f"{a['mem_mib']} MiB": GuestMix.measured(a["mem_mib"], hint["free_before"], a["fill_mib"]),
              f"{mem} MiB": guest(mem, keep, fill, base)}
    measured = HostTiming()
    link_s = FULL_BYTES * 8 / (args.link_gbps * 1e9)
    hosts = {"TCG to exec:cat": measured,
             f"{args.link_gbps:g} GbE": attrs.evolve(measured, full_s=max(measured.full_s, link_s))}
    driver, rep = DriverTiming(), ReportingTiming()
    figures: dict[str, float] = {}
    head = (f"{'ordering':>26}{'full':>11}{'x honest':>9}{'MB':>9}{'wait':>7}{'migr s':>7}{'total':>7}{'x off s':>8}"
            f"{'hinted':>10}")
    for gname, mix in guests.items():
        for hname, host in hosts.items():
            off, default, tried = orderings(mix, host, driver)
            off_s = off.run.total_s
            win = best(tried, off_s)
            print(f"-- {gname} guest ({mix.in_use:,} pages in use, {mix.free_recent:,} freed, {mix.free_zero:,} never "
                  f"written), {hname}")
            print(head)
            for o in (off, default, *sorted(tried, key=lambda o: o.run.full_pages)[:6]):
                print(row(o.name, o, off_s))
            print(row("best: " + win.name.split()[0], win, off_s))
            # Bounded: a guest that never hints costs the first-hint bound; one that stops halfway, the quiet time.
            sched = win.schedule
            assert sched is not None
            never = Outcome("never hints", simulate(mix, host, None, sched))
            half = Outcome("stops halfway", simulate(mix, host, attrs.evolve(driver, hintable=0.5), sched))
            print(row("  never hints", never, off_s))
            print(row("  stops halfway", half, off_s))
            # Reporting: at once (as the bench, settle s after the free) or after reporting settled.
            now = mix.reported(rep.reported(mix.free, args.settle))
            settled_wait = SettleReporting.for_guest(mix.free, args.settle, rep)
            later = mix.reported(rep.reported(mix.free, args.settle + settled_wait.start_delay_s))
            r_now = Outcome("report at once", simulate(now, host, None))
            r_late = Outcome("report settled", simulate(later, host, None, settled_wait))
            print(row(r_now.name, r_now, off_s))
            print(row(r_late.name, r_late, off_s))
            key = f"{gname.split()[0]}mib_{'link' if 'GbE' in hname else 'tcg'}"
            figures |= {f"{key}_default_x": default.over_honest(), f"{key}_best_x": win.over_honest(),
                        f"{key}_best_s": win.run.total_s, f"{key}_off_s": off_s,
                        f"{key}_never_extra_s": never.run.total_s - off_s}
            assert isinstance(sched, CapThenLift)
            figures[f"{key}_best_cap_gbps"] = sched.cap_bps / 1e9
            print()
    print(" ".join(f"{k}={v:.3f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
