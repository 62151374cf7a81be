"""Calibrate the migration timing model (refmodel.system.timing) from the committed real-guest runs, then
show how well it predicts the pages sent in full with hinting on, off and with reporting.

Calibration uses one run (``--calibrate``, the first committed by default): the driver's rate and
latency from its hint curve (MemFree sampled in the guest), the host's per-page costs from the hinting
run's progress (ram.normal polled over QMP), the second round's resends from the same run, the
background dirtying from the run without hints. Reporting has no fitted parameter: Linux's delay,
capacity and budget, and the time between the free and the migration. Every other committed run
(another guest size) is predicted out of sample. Ends with one key=value line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.system.real_runs import measured_load, modelled  # noqa: E402
from refmodel.system.orderings import from_dict  # noqa: E402
from refmodel.system.timing import (IDLE, PAGE, DriverTiming, GuestMix, HostTiming, Load,  # noqa: E402
                                    ReportingTiming, Uncapped, simulate)

ORDERED = {"hint-ordered": "hint", "off-ordered": "off"}  # as bench_linux_migration

RESULTS = Path(__file__).resolve().parents[1] / "results"
READY_S = 0.1  # from the free to the bench's settle timer: @@READY and three MemFree lines at 0.02 s


def runs_of(path: Path) -> tuple[dict, dict]:
    d = json.loads(path.read_text())
    return d, {r["mode"]: r for r in d["runs"]}


def bulk_end(run: dict) -> tuple[float, int]:
    """When the bulk pass ended and the full pages sent by then: as the ordering saw it over QMP (the
    first dirty-sync after the start), else the start of the last plateau of ram.normal before its
    final value (the second round and switchover come after it)."""
    prog = run["progress"]
    o = run.get("ordering") or {}
    if run.get("bulk_end_s") or o.get("lifted_because") == "the bulk pass ended":
        t = run.get("bulk_end_s") or o["lifted_s"]
        return t, max((n for x, n in prog if x <= t + 0.02), default=0)
    final = prog[-1][1]
    i = len(prog) - 1
    while i > 0 and prog[i][1] == final:
        i -= 1
    value = prog[i][1]
    while i > 0 and prog[i - 1][1] == value:
        i -= 1
    return prog[i][0], value


def fit_driver(hint: dict, end: float) -> DriverTiming | None:
    """The driver's rate and latency: a straight line through the hint curve up to the end of the bulk
    pass, or if that has too few distinct moments, through the whole climb (the driver hints at its own
    pace whatever round the host is in); None if the curve gives no rate (console lines that reached
    the host in bursts)."""
    curve = [(t, b / PAGE) for t, b in hint.get("hint_curve_guest") or hint["hint_curve"] if b > 0]
    top = max((h for _, h in curve), default=0)
    first_top = next(((t, h) for t, h in curve if h >= 0.98 * top), (0.0, 0.0))
    for pts in ([(t, h) for t, h in curve if t <= end + 1e-3],
                [(t, h) for t, h in curve if h < 0.98 * top] + [first_top]):
        line = _line(pts)
        if line is not None:
            slope, latency = line
            full, plateau = hint["full_pages"], bulk_end(hint)[1]
            return DriverTiming(first_hint_s=round(latency, 4), blocks_per_s=round(slope / 1024, 1),
                                dirty_per_hint=round((full - plateau) / max(hint["hinted_max"], 1), 4))
    return None


def _line(pts: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Slope and x-intercept of the least-squares line, if there are three moments and both are positive."""
    if len({t for t, _ in pts}) < 3:
        return None
    n = len(pts)
    mt, mh = sum(t for t, _ in pts) / n, sum(h for _, h in pts) / n
    slope = sum((t - mt) * (h - mh) for t, h in pts) / sum((t - mt) ** 2 for t, _ in pts)
    if slope <= 0 or mt - mh / slope < 0:
        return None
    return slope, mt - mh / slope


def mix_of(d: dict, run: dict) -> GuestMix:
    a = d["args"]
    return GuestMix.measured(a["mem_mib"], run["free_before"], a["fill_mib"])


def fit_host(d: dict, hint: dict, off: dict, driver: DriverTiming) -> HostTiming:
    """Per-page costs: a zero page's from the hinting run's second round (the hinted pages Linux zeroed
    when it took them, and the resends), a full page's as the best fit to that run's progress up to the
    end of its bulk pass; the switchover tail is what is left of the wall time."""
    end, plateau = bulk_end(hint)
    samples = [(t, n) for t, n in hint["progress"] if t <= end]
    mix = mix_of(d, hint)
    n_pages = mix.n_pages
    background = round(max(0, off["full_pages"] + off["zero_pages"] - n_pages) / off["wall"], -1)
    base = HostTiming(background_per_s=background, tail_s=0.0)
    again_full, again_zero = hint["full_pages"] - plateau, hint["hinted_max"]
    best = None
    for full_us in [x / 100 for x in range(80, 301)] + [x / 10 for x in range(31, 81)]:
        full_s = round(full_us * 1e-6, 12)
        zero_s = max(0.0, (hint["wall"] - end - base.sync_s - again_full * full_s) / max(again_zero, 1))
        host = attrs.evolve(base, full_s=full_s, zero_s=round(zero_s, 9))
        run = simulate(mix, host, driver)
        err = sum((_at(run.progress, t) - n) ** 2 for t, n in samples) / n_pages ** 2
        err += ((run.bulk_end_s - end) / end) ** 2
        if best is None or err < best[0]:
            best = (err, host)
    assert best is not None
    return best[1]


def _at(curve, t: float) -> float:
    prev = 0.0
    for x, y in curve:
        if x > t:
            return prev
        prev = y
    return prev


def per_cpu(driver: DriverTiming, host: HostTiming, load: Load) -> tuple[DriverTiming, HostTiming]:
    """Rates measured at ``load`` as rates with a core each (the inverse of Load.driver and Load.host)."""
    return (attrs.evolve(driver, blocks_per_s=round(driver.blocks_per_s / load.vcpu, 1),
                         first_hint_s=round(driver.first_hint_s * load.vcpu, 4)),
            attrs.evolve(host, full_s=round(host.full_s * load.migration, 10),
                         zero_s=round(host.zero_s * load.migration, 10)))


def predict(d: dict, by: dict, host: HostTiming, driver: DriverTiming, rep: ReportingTiming,
            loaded: bool = True) -> dict:
    """Modelled full pages, MB and seconds for each mode of one committed run, at the CPU shares it got
    (``loaded``, where recorded) or on an idle host."""
    return {mode: modelled(d["args"], r, driver, host, rep, loaded) for mode, r in by.items()}


def own_rates(d: dict, by: dict, run: dict) -> float | None:
    """Hint-on full pages with the driver's and the host's rates fitted to this run's own curves (how fast
    each went on that machine at that moment): a test of the mechanism, not of the rates. None if the
    run's hint curve gives no rate."""
    end, _ = bulk_end(run)
    driver = fit_driver(run, end)
    if driver is None:
        return None
    host = fit_host(d, run, by["off"], driver)
    sched = from_dict(run["ordering"]) if "ordering" in run else Uncapped()
    return simulate(mix_of(d, run), host, driver, sched).full_pages


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paths = sorted(RESULTS.glob("migration-linux-*.json"))
    p.add_argument("--calibrate", type=Path, default=RESULTS / "migration-linux-qemu-7.2.json")
    p.add_argument("--results", type=Path, nargs="*", default=paths)
    args = p.parse_args()
    d, by = runs_of(args.calibrate)
    end, plateau = bulk_end(by["hint"])
    fitted = fit_driver(by["hint"], end)
    if fitted is None:
        p.error(f"{args.calibrate.name}: its hint curve gives no driver rate")
    cal_load = measured_load(by["hint"]) or IDLE
    driver, host = per_cpu(fitted, fit_host(d, by["hint"], by["off"], fitted), cal_load)
    rep = ReportingTiming()
    print(f"calibrated on {args.calibrate.name} ({d['args']['mem_mib']} MiB guest, {by['hint']['kernel']}), "
          + ("at its measured CPU shares: " if cal_load != IDLE or "cpu" in by["hint"] else
             "with no CPU record (taken as a core each): ")
          + f"the driver's vCPU {cal_load.vcpu:.2f}, the migration thread {cal_load.migration:.2f}; "
          "rates below are per CPU second")
    print(f"  driver: first hint {driver.first_hint_s * 1e3:.0f} ms after START, "
          f"{driver.blocks_per_s:.0f} blocks/s "
          f"of 2^{driver.order} pages ({driver.pages_per_s * PAGE / 1e9:.2f} GB/s of free memory), "
          f"{driver.dirty_per_hint:.4f} non-zero pages resent per page hinted")
    print(f"  host: {host.full_s * 1e6:.2f} us per full page, {host.zero_s * 1e6:.2f} us per zero page, "
          f"switchover tail {host.tail_s * 1e3:.0f} ms, guest dirties {host.background_per_s:.0f} pages/s; "
          f"bulk pass measured to end at {end:.3f} s with {plateau:,} full pages")
    per_pass = rep.pages_per_pass(by["report"]["free_before"] // PAGE) // 1024
    print(f"  reporting (Linux's constants): a pass {rep.delay_s:g} s after the free, then every "
          f"{rep.delay_s:g} s, each up to {per_pass} blocks of 4 MiB here")
    defaults = (DriverTiming(), HostTiming())
    print(f"  the model's defaults {'are' if defaults == (driver, host) else 'differ from'} this calibration")
    print(f"{'run':>24}{'mode':>13}{'full pages':>11}{'model':>9}{'error':>8}{'idle':>8}{'vCPU':>6}{'migr':>6}"
          f"{'MB':>8}{'model':>7}{'s':>6}{'model':>6}  sample  own rates")
    errors: dict[str, list[float]] = {}
    idle_errors: dict[str, list[float]] = {}
    own_errors: list[float] = []
    sizes_loaded: set[int] = set()
    for path in args.results:
        dd, bb = runs_of(path)
        model, blind = predict(dd, bb, host, driver, rep), predict(dd, bb, host, driver, rep, loaded=False)
        sample = "in" if path.resolve() == args.calibrate.resolve() else "out"
        for mode, r in bb.items():
            m, load = model[mode], measured_load(r)
            err, idle = m.full_pages / r["full_pages"] - 1, blind[mode].full_pages / r["full_pages"] - 1
            base = ORDERED.get(mode, mode)
            idle_errors.setdefault(base, []).append(idle)
            if load is not None:
                errors.setdefault(base, []).append(err)
                sizes_loaded.add(dd["args"]["mem_mib"])
            own = own_rates(dd, bb, r) if base == "hint" else None
            note = "" if own is None else f"{own:>10,.0f} {own / r['full_pages'] - 1:>+6.1%}"
            if own is not None:
                own_errors.append(own / r["full_pages"] - 1)
            elif base == "hint":
                note = "  (its hint curve gives no rate)"
            shares = "    no record" if load is None else f"{load.vcpu:>6.2f}{load.migration:>6.2f}"
            name = path.stem[len("migration-linux-"):]
            print(f"{name:>24}{mode:>13}{r['full_pages']:>11,}{m.full_pages:>9,.0f}"
                  f"{err:>+8.1%}{idle:>+8.1%}{shares}{r['mb']:>8.1f}{m.mb:>7.1f}{r['wall']:>6.2f}{m.wall_s:>6.2f}"
                  f"  {sample:<6}{note}")
    sizes = len({runs_of(pp)[0]["args"]["mem_mib"] for pp in args.results})
    worst = {k: max((abs(e) for e in v), default=0.0) for k, v in errors.items()}
    worst_idle = {k: max((abs(e) for e in v), default=0.0) for k, v in idle_errors.items()}
    print("error: the model at the CPU shares the run got (vCPU, migr: recorded per run); idle: the same model "
          "with a core each; own rates: the driver's and host's rates fitted to that run's curves, then its "
          "bytes predicted")
    print(f"guest sizes with committed runs: {sizes}, with CPU records: {len(sizes_loaded)}; the target is within "
          "10% on two. Bytes without hints (off, reporting) do not depend on timing; with hints they depend on "
          "how fast the driver hints against how fast the pass runs, which the CPU shares carry.")
    print(f"first_hint_ms={driver.first_hint_s * 1e3:.1f} blocks_per_s={driver.blocks_per_s:.0f} "
          f"full_us={host.full_s * 1e6:.2f} zero_us={host.zero_s * 1e6:.2f} "
          f"dirty_per_hint={driver.dirty_per_hint:.4f} hint_err_max={worst.get('hint', 0.0):.3f} "
          f"report_err_max={worst.get('report', 0.0):.3f} off_err_max={worst.get('off', 0.0):.3f} "
          f"idle_hint_err_max={worst_idle.get('hint', 0.0):.3f} "
          f"own_rates_hint_err_max={max((abs(e) for e in own_errors), default=0.0):.3f} "
          f"sizes={sizes} sizes_with_cpu={len(sizes_loaded)}")


if __name__ == "__main__":
    main()
