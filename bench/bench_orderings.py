"""Host orderings for a hinting (or reporting) Linux guest, in the calibrated timing model: full pages,
MB and seconds per ordering against hinting off, on the committed real run's guest and a smaller one,
under three conditions: the calibrated host (TCG to exec:cat), a link-limited one (10 GbE), and a
loaded machine as in the committed 1 GiB run (the driver's first hint 187 ms after START and about
300 blocks/s, the host 2.7 times slower).

Orderings (refmodel.system.orderings): QEMU's default; ``cap=B`` (max-bandwidth capped at B bytes/s
until hints stop arriving); ``gate`` (capped near zero: the bulk pass waits for the driver's STOP);
``pace=k`` (capped at k times the rate at which hints clear RAM). For reporting: migrate at once,
or wait for reporting to settle. Every ordering is bounded; each block shows the bound with a guest
that never hints and one that stops halfway. "x honest" is full pages over the honest ideal
(refmodel.system.migration.HonestIdeal); "x off s" is total time (waiting included) over hinting
off. Per condition, the best ordering is the one sending fewest pages in no more time than hinting
off; the robust one has the smallest worst "x honest" over all conditions among those no slower than
off on the calibrated host. Last, driver-side guidance: the order the driver hints in (top down, as
Linux's free lists hand the freed memory out, or bottom up, the pass's own direction). Ends with one
key=value line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.system.orderings import (GATE_BPS, CapThenLift, Outcome, Paced, SettleReporting,  # noqa: E402
                                       best, compare, conditions)
from refmodel.system.timing import (PAGE, DriverTiming, GuestMix, HostSchedule, HostTiming,  # noqa: E402
                                    ReportingTiming, Uncapped, simulate)

RUN = Path(__file__).resolve().parents[1] / "results" / "migration-linux-qemu-7.2.json"
SCHEDULES: dict[str, HostSchedule] = {
    "default": Uncapped(),
    **{f"cap={c / 1e9:g}GB/s": CapThenLift(c) for c in (5e8, 7.5e8, 1e9, 1.5e9)},
    "gate": CapThenLift(GATE_BPS),
    **{f"pace={k:g}": Paced(k) for k in (0.25, 0.5, 0.75, 1.0)},
}


def guest(mem_mib: int, keep_mib: int, fill_mib: int, base_mib: float) -> GuestMix:
    """A guest like the bench's: ``base_mib`` for the kernel and its own, ``keep_mib`` in use, ``fill_mib``
    written and freed, the rest never written."""
    free = (mem_mib - keep_mib - base_mib) * 2**20
    return GuestMix.measured(mem_mib, int(free), fill_mib)


def row(label: str, o: Outcome, off_s: float) -> str:
    r = o.run
    return (f"{label:>16}{r.full_pages:>11,.0f}{o.over_honest():>9.2f}{r.mb:>9.1f}{r.wait_s:>7.2f}"
            f"{r.wall_s:>7.2f}{r.total_s:>7.2f}{r.total_s / off_s:>8.2f}{r.hinted:>10,.0f}")


HEAD = (f"{'ordering':>16}{'full':>11}{'x honest':>9}{'MB':>9}{'wait':>7}{'migr s':>7}{'total':>7}"
        f"{'x off s':>8}{'hinted':>10}")


def block(mix: GuestMix, host: HostTiming, driver: DriverTiming,
          settle: float) -> tuple[dict[str, Outcome], float]:
    """Every ordering on one guest under one condition, printed; returns the outcomes and off's time."""
    off, *tried = compare(mix, host, driver, {"off": None, **SCHEDULES})
    off_s = off.run.total_s
    print(HEAD)
    for o in (off, *tried):
        print(row(o.name, o, off_s))
    win = best(tried[1:], off_s)
    print(row("best: " + win.name, win, off_s))
    assert win.schedule is not None
    never = Outcome("never hints", simulate(mix, host, None, win.schedule))
    half = Outcome("stops halfway", simulate(mix, host, attrs.evolve(driver, hintable=0.5), win.schedule))
    print(row("  never hints", never, off_s))
    print(row("  stops halfway", half, off_s))
    rep = ReportingTiming()
    now = mix.reported(rep.reported(mix.free, settle))
    wait = SettleReporting.for_guest(mix.free, settle, rep)
    later = mix.reported(rep.reported(mix.free, settle + wait.start_delay_s))
    print(row("report at once", Outcome("", simulate(now, host, None)), off_s))
    print(row("report settled", Outcome("", simulate(later, host, None, wait)), off_s))
    outs = {o.name: o for o in tried} | {"best": win, "never": never}
    return outs, off_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", default="1024,128,700", help="MEM,KEEP,FILL MiB of the second guest")
    p.add_argument("--settle", type=float, default=6.0, help="seconds from the free to migrate, as the bench")
    p.add_argument("--link-gbps", type=float, default=10.0, help="the link-limited host's line rate")
    args = p.parse_args()
    d = json.loads(RUN.read_text())
    a, hint = d["args"], next(r for r in d["runs"] if r["mode"] == "hint")
    base = (hint["ideal"] * PAGE / 2**20) - a["keep_mib"]
    mem, keep, fill = (int(x) for x in args.small.split(","))
    guests = {a["mem_mib"]: GuestMix.measured(a["mem_mib"], hint["free_before"], a["fill_mib"]),
              mem: guest(mem, keep, fill, base)}
    conds = conditions(args.link_gbps)
    figures: dict[str, float] = {}
    for mib, mix in guests.items():
        table: dict[str, dict[str, Outcome]] = {}
        offs: dict[str, float] = {}
        for key, (label, h, drv) in conds.items():
            print(f"-- {mib} MiB guest ({mix.in_use:,} pages in use, {mix.free_recent:,} freed, "
                  f"{mix.free_zero:,} never written), {label}")
            table[key], offs[key] = block(mix, h, drv, args.settle)
            print()
            figures[f"g{mib}_{key}_default_x"] = table[key]["default"].over_honest()
            figures[f"g{mib}_{key}_best_x"] = table[key]["best"].over_honest()
            figures[f"g{mib}_{key}_best_time_vs_off"] = table[key]["best"].run.total_s / offs[key]
            figures[f"g{mib}_{key}_never_hints_extra_s"] = table[key]["never"].run.total_s - offs[key]
        fast = [n for n in SCHEDULES if n != "default" and table["tcg"][n].run.total_s <= offs["tcg"]]
        robust = min(fast or list(SCHEDULES), key=lambda n: max(table[k][n].over_honest() for k in conds))
        print(f"{mib} MiB guest, x honest (x off s) per condition:")
        print(f"{'ordering':>16}" + "".join(f"{k:>16}" for k in conds))
        for n in SCHEDULES:
            cells = (f"{table[k][n].over_honest():>9.2f} ({table[k][n].run.total_s / offs[k]:.2f})"
                     for k in conds)
            print(f"{n + (' *' if n == robust else ''):>16}" + "".join(cells))
        print("* robust: the smallest worst x honest among those no slower than off on the calibrated host\n")
        figures[f"g{mib}_robust_worst_x"] = max(table[k][robust].over_honest() for k in conds)
        # Driver-side guidance: the order the driver hints in, under QEMU's default ordering.
        print(f"{mib} MiB guest, driver order under QEMU's default (x honest): ", end="")
        for key in ("tcg", "loaded"):
            _, h, drv = conds[key]
            down, up = (Outcome("", simulate(mix, h, attrs.evolve(drv, top_down=t))) for t in (True, False))
            print(f"{key}: top down {down.over_honest():.2f}, bottom up {up.over_honest():.2f}; ", end="")
            figures[f"g{mib}_{key}_bottom_up_x"] = up.over_honest()
        print("\n  bottom up (the pass's own direction) wins while the driver hints faster than the pass "
              "sends, and loses when it is slower; top down loses only what lies below the meeting point\n")
        figures[f"g{mib}_robust_is_pace"] = float(robust.startswith("pace"))
    print(" ".join(f"{k}={v:.3f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
