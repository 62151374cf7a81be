"""Calibrate the migration timing model (refmodel.system.timing) from the committed real-guest runs, then
show how well it predicts the pages sent in full with hinting on, off and with reporting.

Each run with a CPU record is calibrated on its hinting mode: the driver's rate, latency and bend from its
hint curve (MemFree sampled in the guest), the host's per-page costs from its progress (ram.normal polled
over QMP), both per CPU second at the shares the run got, and the resends fitted to its bytes. By default
every run is predicted from the median of the other runs' calibrations on its QEMU (leave one out);
``--calibrate F`` predicts every run from one. Reporting has no fitted parameter. Before the table: what the
runs with the host's curves show (reporting's passes, QEMU's intake of hints) and the pass's speed with and
without hints side by side. Ends with one key=value line.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.system.real_runs import measured_load, modelled  # noqa: E402
from refmodel.system.orderings import from_dict  # noqa: E402
from refmodel.system.timing import (IDLE, PAGE, DriverTiming, GuestMix, HostSchedule, HostTiming,  # noqa: E402
                                    Load, ReportingTiming, Uncapped, simulate)

ORDERED = {"hint-ordered": "hint", "off-ordered": "off"}  # as bench_linux_migration

RESULTS = Path(__file__).resolve().parents[1] / "results"
READY_S = 0.1  # from the free to the bench's settle timer: @@READY and three MemFree lines at 0.02 s


@functools.cache  # read once: the leave-one-out pass asks for each file's QEMU and size many times
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
    """The driver's rate and latency: a straight line through the hint curve (MemFree) up to the first
    dirty-log sync (the STOP; after it the curve is flat until the driver has answered the next START), or
    if that has too few distinct moments, through the whole climb; where the curve bends, a second line
    after the bend (the last free blocks come slower: ``taper_at``, ``tail_ratio``); the share of free
    memory the driver took in all (``hintable``). None if the curve gives no rate (console lines that
    reached the host in bursts)."""
    curve = [(t, b / PAGE) for t, b in hint.get("hint_curve_guest") or hint["hint_curve"] if b > 0]
    top = max((h for _, h in curve), default=0)
    free = hint["free_before"] / PAGE
    first_top = next(((t, h) for t, h in curve if h >= 0.98 * top), (0.0, 0.0))
    for pts in ([(t, h) for t, h in curve if t <= end + 1e-3],
                [(t, h) for t, h in curve if h < 0.98 * top] + [first_top],
                [(t, h) for t, h in curve if h < 0.8 * top]):  # the climb, before free blocks grow scarce
        line = _line(pts)
        if line is None:
            continue
        slope, latency = line
        taper_at, tail_ratio = 1.0, 1.0
        climb = [(t, h) for t, h in curve if t <= end + 1e-3]
        best = _sse(climb, slope, latency)
        for k in range(3, len(climb) - 1):  # a bend after the k-th moment
            head = _line(climb[:k])
            if head is None:
                continue
            (s1, l1), (tk, hk) = head, climb[k - 1]
            tail = climb[k - 1:]
            s2 = sum((t - tk) * (h - hk) for t, h in tail) / max(sum((t - tk) ** 2 for t, _ in tail), 1e-12)
            err = _sse(climb[:k], s1, l1) + sum((hk + s2 * (t - tk) - h) ** 2 for t, h in tail)
            if err < 0.5 * best and 0 <= s2 < 0.6 * s1:
                best, slope, latency, taper_at, tail_ratio = err, s1, l1, hk / free, max(s2 / s1, 0.02)
        # Whether the driver ran out on its own: its curve flat for a tenth of a second before the STOP.
        ran_out = first_top[0] < end - 0.1 and any(first_top[0] < t <= end for t, _ in curve)
        return DriverTiming(first_hint_s=round(latency, 4), blocks_per_s=round(slope / 1024, 1),
                            dirty_per_hint=0.0,
                            hintable=round(min(1.0, top / free), 3) if ran_out else 1.0,
                            taper_at=round(min(1.0, taper_at), 3),
                            tail_ratio=round(tail_ratio, 3))
    return None


def _sse(pts: list[tuple[float, float]], slope: float, latency: float) -> float:
    return sum((slope * max(0.0, t - latency) - h) ** 2 for t, h in pts)


def _line(pts: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Slope and x-intercept of the least-squares line, if there are three moments, the slope is positive
    and the intercept is not before START by more than a MemFree sample or two."""
    if len({t for t, _ in pts}) < 3:
        return None
    n = len(pts)
    mt, mh = sum(t for t, _ in pts) / n, sum(h for _, h in pts) / n
    slope = sum((t - mt) * (h - mh) for t, h in pts) / sum((t - mt) ** 2 for t, _ in pts)
    if slope <= 0 or mt - mh / slope < -0.05:
        return None
    return slope, max(0.0, mt - mh / slope)  # a first hint within a sample of START: latency 0


def mix_of(d: dict, run: dict) -> GuestMix:
    a = d["args"]
    return GuestMix.measured(a["mem_mib"], run["free_before"], a["fill_mib"])


def schedule_of(run: dict) -> HostSchedule:
    return from_dict(run["ordering"]) if run.get("ordering") else Uncapped()


def fit_host(d: dict, hint: dict, off: dict, driver: DriverTiming) -> HostTiming:
    """Per-page costs: a full page's and a zero page's, as the best fit to the hinting run's progress (full
    pages sent) up to its first dirty-log sync, the moment of that sync, and its wall time, under the
    run's own ordering."""
    end, _ = bulk_end(hint)
    sched = schedule_of(hint)
    samples = [(t, n) for t, n in hint["progress"] if t <= end]
    mix = mix_of(d, hint)
    n_pages = mix.n_pages
    background = round(max(0, off["full_pages"] + off["zero_pages"] - n_pages) / off["wall"], -1)
    base = HostTiming(background_per_s=background, tail_s=0.0)
    if d["args"].get("link_mbps"):
        base = attrs.evolve(base, link_bps=d["args"]["link_mbps"] * 1e6)

    def err_of(host: HostTiming) -> float:
        run = simulate(mix, host, driver, sched)
        err = sum((_at(run.progress, t) - n) ** 2 for t, n in samples) / n_pages ** 2
        return err + ((run.bulk_end_s - end) / end) ** 2 + ((run.wall_s - hint["wall"]) / hint["wall"]) ** 2

    best = None
    grid = [x / 20 for x in range(16, 61)] + [x / 5 for x in range(16, 41)] + [x / 2 for x in range(17, 61)]
    for full_us in grid:
        host = attrs.evolve(base, full_s=round(full_us * 1e-6, 12), zero_s=round(0.15 * full_us * 1e-6, 12))
        e = err_of(host)
        if best is None or e < best[0]:
            best = (e, host)
    assert best is not None
    for ratio in (0.05, 0.1, 0.2, 0.3, 0.5):
        host = attrs.evolve(best[1], zero_s=round(ratio * best[1].full_s, 12))
        e = err_of(host)
        if e < best[0]:
            best = (e, host)
    return attrs.evolve(best[1], link_bps=float("inf"))


def fit_resends(d: dict, hint: dict, driver: DriverTiming, host: HostTiming) -> DriverTiming:
    """The full pages the model leaves unexplained in the calibration run, per page hinted: the one
    parameter fitted to its bytes (``dirty_per_hint``, cause not isolated), by bisection."""
    lo, hi = 0.0, 0.5
    if modelled(d["args"], hint, driver, host).full_pages >= hint["full_pages"]:
        return driver
    for _ in range(12):
        mid = (lo + hi) / 2
        m = modelled(d["args"], hint, attrs.evolve(driver, dirty_per_hint=mid), host)
        lo, hi = (mid, hi) if m.full_pages < hint["full_pages"] else (lo, mid)
    return attrs.evolve(driver, dirty_per_hint=round((lo + hi) / 2, 4))


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
    return simulate(mix_of(d, run), host, driver, schedule_of(run)).full_pages


def calibrated(path: Path, load: Load) -> tuple[DriverTiming, HostTiming] | None:
    """The driver's and host's per-CPU rates (the run's own taken at ``load``) and the resends fitted to one
    committed run's hinting mode; None if its hint curve gives no rate."""
    d, by = runs_of(path)
    fitted = fit_driver(by["hint"], bulk_end(by["hint"])[0])
    if fitted is None:
        return None
    driver, host = per_cpu(fitted, fit_host(d, by["hint"], by["off"], fitted), load)
    return fit_resends(d, by["hint"], driver, host), host


def calibration(path: Path) -> tuple[DriverTiming, HostTiming] | None:
    """:func:`calibrated` at the CPU shares the run recorded; None without a record or a rate."""
    by = runs_of(path)[1]
    load = measured_load(by["hint"])
    return None if load is None or "off" not in by else calibrated(path, load)


def pooled(cals: list[tuple[DriverTiming, HostTiming]]) -> tuple[DriverTiming, HostTiming]:
    """Each parameter's median over several runs' calibrations: one odd run moves none of them far."""
    def med(xs: list[float]) -> float:
        xs = sorted(xs)
        return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2

    dk = ("first_hint_s", "blocks_per_s", "dirty_per_hint", "hintable", "taper_at", "tail_ratio")
    hk = ("full_s", "zero_s", "background_per_s")
    driver = attrs.evolve(cals[0][0], **{k: round(med([getattr(c[0], k) for c in cals]), 4) for k in dk})
    host = attrs.evolve(cals[0][1], **{k: med([getattr(c[1], k) for c in cals]) for k in hk})
    return driver, host


def qemu_of(path: Path) -> str:
    """The QEMU release a run was made on, e.g. ``11.1``."""
    m = re.search(r"version (\d+\.\d+)", runs_of(path)[0].get("qemu", ""))
    return m.group(1) if m else path.stem.split("-")[3]


def pinned(path: Path) -> bool:
    """Whether the run was made with ``--pin`` (vCPUs on one core, QEMU's other threads on another) and
    ``--sink file`` (QEMU writes the stream itself): the host's speed is then the migration thread's."""
    a = runs_of(path)[0]["args"]
    return bool(a.get("pin")) and a.get("sink") == "file"


def group_of(path: Path) -> str:
    """Runs whose calibrations predict each other: the same QEMU, pinned or not."""
    return qemu_of(path) + (" pinned" if pinned(path) else "")


def host_side(paths: list[Path]) -> None:
    """What the runs with the host's curves (``--modes``, ``results/curves-*.json``) show: reporting's passes
    as falls of the RAM file's allocated size before ``migrate``, and for hinting the driver's fitted
    rate and bend, its first sync, and how far QEMU's count of skipped pages trails MemFree before it."""
    for path in paths:
        d, by = runs_of(path)
        n = (d["args"]["mem_mib"] << 20) // PAGE
        print(f"  {path.name} ({d['runs'][0]['kernel']}):")
        if "report" in by and by["report"].get("resident_curve"):
            r, falls = by["report"], []
            for (_, b0), (t1, b1) in zip(r["resident_curve"], r["resident_curve"][1:]):
                if b0 - b1 > 64 << 20 and t1 < 0:
                    falls.append(f"{t1:.2f} s: {(b0 - b1) >> 20} MiB")
            print(f"    reporting: the free at {-r['since_free_s']:.2f} s, the RAM file falls at "
                  + (", ".join(falls) or "no moment sampled"))
        if "hint" in by and by["hint"].get("ram_curve"):
            r = by["hint"]
            end, _ = bulk_end(r)
            drv = fit_driver(r, end)
            guest = [(t, b // PAGE) for t, b in r["hint_curve_guest"]]
            trail = sorted(next((h for t2, h in reversed(guest) if t2 <= t), 0) - (n - c // PAGE - a - b)
                           for t, a, b, c in r["ram_curve"] if 0.1 < t < end)
            rate = "no rate" if drv is None else (
                f"{drv.blocks_per_s:.0f} blocks/s after {drv.first_hint_s * 1e3:.0f} ms"
                + ("" if drv.taper_at >= 1 else f", {drv.tail_ratio:.2f} of that after {drv.taper_at:.0%}"))
            print(f"    hinting: {r['full_pages']:,} full pages, first sync {end:.2f} s, driver {rate}; "
                  f"MemFree leads QEMU's skipped pages by {trail[len(trail) // 2] if trail else 0:,} (median)")
            got = intake(r, n)
            print("    QEMU's intake: " + ("no poll of the pass within 0.1 s before the sync" if got is None else
                  f"{got[0]} of the {got[1]} blocks the driver held had reached its bitmap {got[4]:.2f} s before "
                  f"the sync; while some waited it took {got[2]:.0f} blocks/s on average, in bursts "
                  f"({got[3]:.0%} of those polls saw none taken)"))


IN_USE_SHARE = 0.7  # the pass's speed is taken over this much of the memory in use: sent in full whatever hints do


def pass_rate(d: dict, run: dict) -> float | None:
    """Full pages per wall second the bulk pass sent over the first IN_USE_SHARE of the memory in use (after
    any cap was lifted): the host's speed at that moment, before the race with the driver decides anything.
    None under three samples."""
    in_use = (d["args"]["mem_mib"] << 20) // PAGE - run["free_before"] // PAGE
    lifted = (run.get("ordering") or {}).get("lifted_s") or 0.0
    pts = [(t, x) for t, x in run["progress"] if t >= lifted and 0 < x < IN_USE_SHARE * in_use]
    if len({t for t, _ in pts}) < 3:
        return None
    mt, mx = sum(t for t, _ in pts) / len(pts), sum(x for _, x in pts) / len(pts)
    rate = sum((t - mt) * (x - mx) for t, x in pts) / sum((t - mt) ** 2 for t, _ in pts)
    return rate if rate > 0 else None


def pass_speeds(paths: list[Path]) -> list[float]:
    """Per experiment: the pass's speed with the driver hinting against the same experiment's run without
    hints, in wall time and per CPU second of the migration thread. Returns the per-CPU ratios."""
    ratios = []
    for path in paths:
        d, by = runs_of(path)
        if "hint" not in by or "off" not in by:
            continue
        rh, ro = pass_rate(d, by["hint"]), pass_rate(d, by["off"])
        lh, lo = measured_load(by["hint"]), measured_load(by["off"])
        if rh is None or ro is None:
            continue
        ratio = None if lh is None or lo is None else rh / lh.migration / (ro / lo.migration)
        per_cpu = "" if ratio is None else f", per CPU second {ratio:.2f}x"
        if ratio is not None:
            ratios.append(ratio)
        print(f"  {path.stem[len('migration-linux-'):]}: {rh / 1e3:.0f}k full pages/s with hints against "
              f"{ro / 1e3:.0f}k/s without, {rh / ro:.2f}x" + per_cpu)
    return ratios


def intake(r: dict, n: int) -> tuple[int, int, float, float, float] | None:
    """QEMU's side of one hinting run (``ram_curve``), at its last poll before the first sync: the blocks it had
    cleared from its bitmap, the blocks the driver held by then (MemFree), its mean rate of taking them while
    some waited, the share of those polls that saw none taken, and how long before the sync that poll came.
    The iothread applies a hint under the bitmap mutex, which the migration thread has taken once per
    ram_save_iterate (up to 50 ms) since QEMU 6.1 moved it out of migration_bitmap_clear_dirty(): so QEMU
    takes hints in bursts, and what the driver held but QEMU had not taken at the STOP is lost. None
    without a poll of the pass within 0.1 s before the sync."""
    guest = [(t, b // PAGE) for t, b in r["hint_curve_guest"]]

    def held(t: float) -> int:
        return max((h for x, h in guest if x <= t), default=0)

    pts = []
    for t, a, b, c in r["ram_curve"]:
        skipped = n - c // PAGE - a - b
        if c > 0 and skipped < -256 and pts:  # the sync: what the guest wrote joined ``remaining``
            sync = t
            break
        if c > 0:
            pts.append((t, max(0, skipped)))
    else:
        return None
    if sync - pts[-1][0] > 0.1:
        return None
    waited = [(t1, s1, t2, s2) for (t1, s1), (t2, s2) in zip(pts, pts[1:]) if held(t1) - s1 > 2048 and t2 > t1]
    took, span = sum(s2 - s1 for _, s1, _, s2 in waited), sum(t2 - t1 for t1, _, t2, _ in waited)
    idle = sum(s2 == s1 for _, s1, _, s2 in waited) / len(waited) if waited else 0.0
    t_last, applied = pts[-1]
    return applied >> 10, held(t_last) >> 10, (took / span / 1024 if span else 0.0), idle, sync - t_last


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    paths = sorted(RESULTS.glob("migration-linux-*.json"))
    p.add_argument("--calibrate", type=Path, help="calibrate on this one run and predict every run from it "
                   "(default: each run predicted from the median calibration of the other runs on its QEMU)")
    p.add_argument("--results", type=Path, nargs="*", default=paths)
    args = p.parse_args()
    loo: dict[Path, tuple[DriverTiming, HostTiming]] = {}
    if args.calibrate is None:
        cals = {path: calibration(path) for path in args.results}
        good = {k: v for k, v in cals.items() if v is not None}
        if not good:
            p.error("no run among --results has a CPU record and a hint curve to calibrate on")
        for path in args.results:
            peers = [v for k, v in good.items() if k != path and group_of(k) == group_of(path)]
            peers = peers if len(peers) >= 2 else [v for k, v in good.items() if k != path]
            loo[path] = pooled(peers) if peers else (DriverTiming(), HostTiming())  # none: the defaults
        newest = max((k for k in good if not pinned(k)) or good,
                     key=lambda k: (tuple(map(int, qemu_of(k).split('.'))), k.name))
        on = [k for k in good if group_of(k) == group_of(newest)]
        median = pooled([good[k] for k in on])
        print(f"calibrated on each of the {len(good)} runs with CPU records (their hinting modes); every run is "
              "predicted from the median of the other runs' calibrations on its QEMU, pinned runs from pinned "
              "ones (leave one out)")
        print(f"  the median over the {len(on)} runs on QEMU {qemu_of(newest)}, per CPU second:")
        _describe(*median)
        same = all(math.isclose(getattr(a, f.name), getattr(b, f.name), rel_tol=5e-3)
                   for a, b in zip((DriverTiming(), HostTiming()), median) for f in attrs.fields(type(a))
                   if isinstance(getattr(a, f.name), float))
        print(f"  the model's defaults {'are' if same else 'differ from'} that median (to 0.5%)")
        driver, host = median
        curves = sorted(RESULTS.glob("curves-linux-*.json"))
        if curves:
            print("the host's side, where recorded:")
            host_side(curves)
        print(f"the bulk pass over memory in use (the first {IN_USE_SHARE:.0%} of it), with the driver hinting and "
              "without hints, in the same experiment:")
        ratios = sorted(pass_speeds(args.results))
        if ratios:
            print(f"  per CPU second of the migration thread, the pass with hints ran {ratios[0]:.2f}-{ratios[-1]:.2f}x "
                  f"as fast as without (median {ratios[len(ratios) // 2]:.2f}x, {len(ratios)} experiments): its "
                  "CPU share is not what sets its speed, so the shares carry the host's speed only in part")
        errors, idle_errors, own_errors, sizes_loaded = _table(args, loo, driver, host)
        extra = f"pass_per_cpu_ratio_median={ratios[len(ratios) // 2]:.3f} " if ratios else ""
        _summary(args, driver, host, errors, idle_errors, own_errors, sizes_loaded, extra)
        return
    d, by = runs_of(args.calibrate)
    end, plateau = bulk_end(by["hint"])
    cal_load = measured_load(by["hint"]) or IDLE
    got = calibrated(args.calibrate, cal_load)
    if got is None:
        p.error(f"{args.calibrate.name}: its hint curve gives no driver rate")
    driver, host = got
    print(f"calibrated on {args.calibrate.name} ({d['args']['mem_mib']} MiB guest, {by['hint']['kernel']}), "
          + ("at its measured CPU shares: " if cal_load != IDLE or "cpu" in by["hint"] else
             "with no CPU record (taken as a core each): ")
          + f"the driver's vCPU {cal_load.vcpu:.2f}, the migration thread {cal_load.migration:.2f}; "
          f"rates below are per CPU second; its bulk pass ended at {end:.3f} s with {plateau:,} full pages")
    _describe(driver, host)
    defaults = (DriverTiming(), HostTiming())
    print(f"  the model's defaults {'are' if defaults == (driver, host) else 'differ from'} this calibration")
    _summary(args, driver, host, *_table(args, {}, driver, host))


def _describe(driver: DriverTiming, host: HostTiming) -> None:
    rep = ReportingTiming()
    taper = "" if driver.taper_at >= 1 else (f", slowing to {driver.tail_ratio:.2f} of that after "
                                             f"{driver.taper_at:.0%} of free memory")
    print(f"  driver: first hint {driver.first_hint_s * 1e3:.0f} ms after START, "
          f"{driver.blocks_per_s:.0f} blocks/s of 2^{driver.order} pages "
          f"({driver.pages_per_s * PAGE / 1e9:.2f} GB/s of free memory){taper}, up to {driver.hintable:.0%} of "
          f"it; {driver.dirty_per_hint:.4f} non-zero pages resent per page hinted (fitted to the bytes)")
    print(f"  host: {host.full_s * 1e6:.2f} us per full page, {host.zero_s * 1e6:.2f} us per zero page, "
          f"guest dirties {host.background_per_s:.0f} pages/s; QEMU syncs when what is left goes in "
          f"{host.downtime_s:g} s at the bandwidth of its last {host.window_s:g} s")
    print(f"  reporting (Linux's constants): passes {rep.period_s:g} s apart, the first {rep.first_s:g} s after "
          f"the free (half a period: reporting is already at work), each up to 64 blocks of 4 MiB in these guests")


def _table(args, loo: dict, driver: DriverTiming, host: HostTiming):
    rep = ReportingTiming()
    print(f"{'run':>24}{'mode':>13}{'full pages':>11}{'model':>9}{'error':>8}{'idle':>8}{'vCPU':>6}{'migr':>6}"
          f"{'MB':>8}{'model':>7}{'s':>6}{'model':>6}  sample  own rates")
    errors: dict[str, list[float]] = {}
    idle_errors: dict[str, list[float]] = {}
    own_errors: list[float] = []
    sizes_loaded: dict[tuple[str, int], list[float]] = {}  # (mode, MiB): errors
    for path in args.results:
        dd, bb = runs_of(path)
        drv, hst = loo.get(path, (driver, host))
        model, blind = predict(dd, bb, hst, drv, rep), predict(dd, bb, hst, drv, rep, loaded=False)
        sample = "out" if loo or path.resolve() != args.calibrate.resolve() else "in"
        for mode, r in bb.items():
            m, load = model[mode], measured_load(r)
            err, idle = m.full_pages / r["full_pages"] - 1, blind[mode].full_pages / r["full_pages"] - 1
            base = ORDERED.get(mode, mode)
            own_base = base
            if pinned(path):
                base = "pinned " + base
            idle_errors.setdefault(base, []).append(idle)
            if load is not None:
                errors.setdefault(base, []).append(err)
                sizes_loaded.setdefault((base, dd["args"]["mem_mib"]), []).append(err)
            own = own_rates(dd, bb, r) if own_base == "hint" else None
            note = "" if own is None else f"{own:>10,.0f} {own / r['full_pages'] - 1:>+6.1%}"
            if own is not None:
                own_errors.append(own / r["full_pages"] - 1)
            elif own_base == "hint":
                note = "  (its hint curve gives no rate)"
            shares = "    no record" if load is None else f"{load.vcpu:>6.2f}{load.migration:>6.2f}"
            name = path.stem[len("migration-linux-"):]
            print(f"{name:>24}{mode:>13}{r['full_pages']:>11,}{m.full_pages:>9,.0f}"
                  f"{err:>+8.1%}{idle:>+8.1%}{shares}{r['mb']:>8.1f}{m.mb:>7.1f}{r['wall']:>6.2f}{m.wall_s:>6.2f}"
                  f"  {sample:<6}{note}")
    return errors, idle_errors, own_errors, sizes_loaded


def _summary(args, driver, host, errors, idle_errors, own_errors, sizes_loaded, extra: str = "") -> None:
    sizes = len({runs_of(pp)[0]["args"]["mem_mib"] for pp in args.results})
    worst = {k: max((abs(e) for e in v), default=0.0) for k, v in errors.items()}
    worst_idle = {k: max((abs(e) for e in v), default=0.0) for k, v in idle_errors.items()}
    print("error: the model at the CPU shares the run got (vCPU, migr: recorded per run); idle: the same model "
          "with a core each; own rates: the driver's and host's rates fitted to that run's curves, then its "
          "bytes predicted")
    for k in ("hint", "report", "pinned hint", "pinned report"):
        if k not in errors:
            continue
        sizes_of = sorted({size for kk, size in sizes_loaded if kk == k})
        print(f"  {k}: within 10% in {sum(abs(e) <= 0.1 for e in errors.get(k, []))} of "
              f"{len(errors.get(k, []))} runs with CPU records, worst {worst.get(k, 0.0):.1%}; "
              + ", ".join(f"{size} MiB: {sum(abs(e) <= 0.1 for e in sizes_loaded[(k, size)])} of "
                          f"{len(sizes_loaded[(k, size)])}" for size in sizes_of))
    with_cpu = len({m for _, m in sizes_loaded})
    print(f"guest sizes with committed runs: {sizes}, with CPU records: {with_cpu}; the target is within "
          "10% on two. Bytes without hints (off) do not depend on timing; with hints they depend on how fast "
          "the driver hints against how fast the pass runs, which the CPU shares carry only in part (above); "
          "with reporting, on how many passes land before the pass reaches the reported blocks.")
    print(f"first_hint_ms={driver.first_hint_s * 1e3:.1f} blocks_per_s={driver.blocks_per_s:.0f} "
          f"full_us={host.full_s * 1e6:.2f} zero_us={host.zero_s * 1e6:.2f} "
          f"dirty_per_hint={driver.dirty_per_hint:.4f} hint_err_max={worst.get('hint', 0.0):.3f} "
          f"report_err_max={worst.get('report', 0.0):.3f} off_err_max={worst.get('off', 0.0):.3f} "
          + "".join(f"{k}_within10={sum(abs(e) <= 0.1 for e in errors.get(k, []))} "
                    f"{k}_runs={len(errors.get(k, []))} " for k in ("hint", "report", "off")) +
          "".join(f"pinned_{k}_within10={sum(abs(e) <= 0.1 for e in errors[f'pinned {k}'])} "
                  f"pinned_{k}_runs={len(errors[f'pinned {k}'])} pinned_{k}_err_max="
                  f"{max(abs(e) for e in errors[f'pinned {k}']):.3f} "
                  for k in ("hint", "report", "off") if errors.get(f"pinned {k}")) +
          f"idle_hint_err_max={worst_idle.get('hint', 0.0):.3f} "
          f"own_rates_hint_err_max={max((abs(e) for e in own_errors), default=0.0):.3f} "
          f"{extra}sizes={sizes} sizes_with_cpu={with_cpu}")


if __name__ == "__main__":
    main()
