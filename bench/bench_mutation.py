"""Measured bug-finding power: cosmic-ray's mutants of the reference, each one an implementation under test.

Mutants of the reference device, driver and both split-queue sides (bench/mutation.MODULES), a seeded
sample of N per module. Each runs as ``virtio-conformance run --dut bench.mutant_dut:... --profile ci
--max-failures 0``: device-side code under --role device, driver side under --role driver, the split
virtqueue modules at --level virtqueue. Killed: a requirement failed (its ID is recorded) or the
implementation crashed or hung (an error). Survivors are matched against bench/mutation_survivors.toml,
which says for each why it is equivalent or which requirement's check misses it.

The suite runs in a clone (--clone; cloned from this repository, pulled if there) so the tree other
people edit is never the one measured, and every run is under ``nice -n 19``.

Use: bench_mutation.py [--per-module N] [--seed S] [--jobs J] [--modules a.py,b.py] [--quick]
                       [--clone DIR | --tree DIR] [--json results/mutation.json] [--text results/mutation.txt]
     bench_mutation.py --again results/mutation.json --json again.json   # its survivors, after a fix
     bench_mutation.py --replay results/mutation.json [--merge again.json]  # print it again, reclassified
     bench_mutation.py --again ci.json [ci-again.json ...] --profile nightly [--survivor-classes gap,...]
                       [--killed-sample N] --json nightly.json    # the kill rate at nightly (below)
     bench_mutation.py --replay nightly.json --add nightly-more.json   # re-runs done in parts, as one

The kill rate at nightly without running the whole sample at nightly (~13 times ci's cost): --again with
several saved ci runs takes every mutant none of them killed (a later --again run's kill counts), runs it
under --profile, and, with --killed-sample N, N mutants they did kill (seeded by --seed), to test the
assumption the figure rests on: a nightly search finds what ci's does (nightly is not derandomized, so this
is measured, not given). kill_rate_nightly counts every ci kill, and the survivors the nightly run killed;
a survivor left out by --survivor-classes counts as surviving. The same figures come back with --replay.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mutation import (INCOMPETENT, MODULES, Mutant, Outcome, enumerate_mutants, run_mutant,  # noqa: E402
                      with_diff)

REPO = HERE.parent
LOADER = ("mutant_dut.py", "mutation.py")  # copied into the clone: it may be older than this bench
CLASSES = HERE / "mutation_survivors.toml"
#: --quick: two hand-picked mutants of the reference driver that the suite kills within seconds, and their
#: killers: (module, operator, line, mutated line, killing requirement).
QUICK = (("refmodel/balloon/driver.py", "core/NumberReplacer", "dev.write_status(0)", "dev.write_status( -1)",
          "STATUS-DRV-1"),
         ("refmodel/balloon/driver.py", "core/ReplaceBinaryOperator_BitAnd_RShift",
          "dev.write_status(status & ~DeviceStatus.FEATURES_OK | DeviceStatus.FAILED)  # INIT-DRV-6",
          "dev.write_status(status >> ~DeviceStatus.FEATURES_OK | DeviceStatus.FAILED)  # INIT-DRV-6",
          "STATUS-DRV-2"))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def error_kind(detail: str) -> str:
    """What an error kill was: the mutant's own check of its peer raising against the (correct) reference
    peer, a Python exception, a hang, or the suite's peer refusing what the mutant did."""
    if "against the reference" in detail:
        return "the implementation's own check blamed the suite's correct peer"
    if "timed out" in detail or "no verdict within" in detail:
        return "a hang"
    if "the reference side broke" in detail:
        return "the suite's peer hit its own rule (harness error)"
    if re.search(r"raised \w*(Error|Exception)\b|: \w*(Error|Exception)\b|building the", detail):
        return "a crash (exception)"
    return "other (misuse of the queue or memory)"


def classes() -> list[dict]:
    return tomllib.loads(CLASSES.read_text(encoding="utf-8")).get("survivor", []) if CLASSES.exists() else []


def classify(m: Mutant, table: list[dict]) -> dict | None:
    for c in table:
        if c["module"] == m.module and c["operator"] == m.operator and c["before"] == m.before \
                and c["after"] == m.after:
            return c
    return None


def text_key(r: dict) -> tuple[str, ...]:
    """A mutant's identity across runs and commits: its text (and its next line, which tells apart
    mutants of equal lines), not its line number."""
    return r["module"], r["operator"], r["before"], r["after"], r.get("following", "")


def classify_record(r: dict, table: list[dict]) -> dict | None:
    return next((c for c in table if (c["module"], c["operator"], c["before"], c["after"]) == text_key(r)[:4]),
                None)


def saved_pool(paths: list[Path]) -> dict[str, dict]:
    """The competent mutants of saved runs, one record per text; a mutant any run killed is killed (its
    first killing record). The union of several samples (a mutant in two samples counts once); within one
    run, mutants of equal text saved without their next line are told apart by line number."""
    pool: dict[str, dict] = {}
    for path in paths:
        rows = [r for r in json.loads(Path(path).read_text(encoding="utf-8"))["mutants"]
                if r["killer"] != INCOMPETENT]
        seen = collections.Counter(text_key(r) for r in rows)
        for r in rows:
            k = json.dumps(text_key(r) + ((r["line"],) if seen[text_key(r)] > 1 else ()))
            if k not in pool or (r["killed"] and not pool[k]["killed"]):
                pool[k] = r
    return pool


def nightly_summary(paths: list[Path], keys_of: list[str], outcomes: list[Outcome], table: list[dict],
                    profile: str) -> tuple[list[str], str]:
    """The kill rate of the saved (ci) runs ``paths``, and at ``profile`` with this re-run's outcomes (of
    the saved mutants ``keys_of``, saved_pool's keys): the report's lines and the key=value pairs to append
    to its last line."""
    pool = saved_pool(paths)
    rerun = {k: o for k, o in zip(keys_of, outcomes) if o.killer != INCOMPETENT}

    def judged_of(killed: set) -> tuple[int, int, list[tuple[dict, str]]]:
        """(killed, judged, killed though classified equivalent or conformant) over the pool."""
        out_of = [k for k, r in pool.items() if k not in killed
                  and (classify_record(r, table) or {}).get("class") in ("equivalent", "conformant")]
        odd = [(pool[k], classify_record(pool[k], table)["class"]) for k in killed  # type: ignore[index]
               if not pool[k]["killed"] and (classify_record(pool[k], table) or {}).get("class")
               in ("equivalent", "conformant")]
        return len(killed), len(pool) - len(out_of), odd

    ci_killed = {k for k, r in pool.items() if r["killed"]}
    new = {k for k, o in rerun.items() if o.killed and not pool[k]["killed"]}
    kept = [k for k, o in rerun.items() if pool[k]["killed"]]
    lost = [k for k in kept if not rerun[k].killed]
    k_ci, n_ci, _ = judged_of(ci_killed)
    k_n, n_n, odd = judged_of(ci_killed | new)
    lo_ci, hi_ci = wilson(k_ci, n_ci)
    lo_n, hi_n = wilson(k_n, n_n)
    survivors = [k for k, r in pool.items() if not r["killed"]]
    not_rerun = [k for k in survivors if k not in rerun]
    lines = ["", f"over the saved runs ({', '.join(str(p) for p in paths)}): {len(pool)} competent mutants, "
             f"{len(ci_killed)} killed, {len(survivors)} survivors; {len(survivors) - len(not_rerun)} survivors "
             f"re-run at {profile}" + (f" ({len(not_rerun)} not re-run, counted as surviving)" if not_rerun else ""),
             f"kill rate at ci: {k_ci}/{n_ci} = {k_ci / max(1, n_ci):.1%}, 95% CI (Wilson) {lo_ci:.1%} .. "
             f"{hi_ci:.1%}",
             f"kill rate at {profile}: {k_n}/{n_n} = {k_n / max(1, n_n):.1%}, 95% CI (Wilson) {lo_n:.1%} .. "
             f"{hi_n:.1%}: every ci kill, and {len(new)} survivors killed at {profile}"]
    if kept:
        lines.append(f"the assumption (a {profile} search finds what ci's does): {len(kept) - len(lost)} of "
                     f"{len(kept)} ci-killed mutants re-run at {profile} killed again"
                     + (f"; not killed: {', '.join(pool[k]['key'] for k in lost)}" if lost else ""))
        same = sum(rerun[k].killer == pool[k]["killer"] for k in kept if rerun[k].killed)
        lines.append(f"  {same} of them by the same killer as at ci")
    for k in sorted(new):
        c = classify_record(pool[k], table)
        lines.append(f"  killed at {profile}, survived ci: {pool[k]['key']}: {rerun[k].killer} in "
                     f"{rerun[k].detect_s or 0:.1f} s (classified {c['class'] if c else 'unclassified'})")
    for r, c in odd:
        lines.append(f"  CHECK: {r['key']} is classified {c} but {profile} killed it")
    keys = (f"kill_rate_{profile}={k_n / max(1, n_n):.3f} kill_rate_{profile}_ci={lo_n:.3f}-{hi_n:.3f} "
            f"kill_rate_ci_all={k_ci / max(1, n_ci):.3f} kill_rate_ci_all_ci={lo_ci:.3f}-{hi_ci:.3f} "
            f"{profile}_new_kills={len(new)} ci_kills_rerun={len(kept)} ci_kills_lost={len(lost)}")
    return lines, keys


def prepare(args: argparse.Namespace) -> Path:
    """The tree the suite runs in: --tree as it is, or --clone (cloned, else pulled), with this bench's
    loader copied in (it may be newer than the clone's commit)."""
    if args.tree:
        return Path(args.tree).resolve()
    clone = Path(args.clone)
    if (clone / ".git").exists():
        for name in LOADER:  # this bench's copies from the last run, which a pull would refuse to overwrite
            path = f"bench/{name}"
            tracked = subprocess.run(["git", "-C", str(clone), "ls-files", "--error-unmatch", path],
                                     capture_output=True).returncode == 0
            if tracked:
                subprocess.run(["git", "-C", str(clone), "checkout", "-q", "--", path], check=True)
            else:
                (clone / path).unlink(missing_ok=True)
        subprocess.run(["git", "-C", str(clone), "pull", "-q", "--ff-only"], check=True)
    else:
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    for name in LOADER:
        shutil.copyfile(HERE / name, clone / "bench" / name)
    return clone


def pick(tree: Path, args: argparse.Namespace) -> tuple[list[Mutant], dict[str, tuple[int, int]]]:
    """The sample, and per module (mutants in all, left out as annotations)."""
    sample, sizes = [], {}
    if args.quick:
        for module, op, before, after, _ in QUICK:
            found, left = enumerate_mutants(tree, module)
            hit = next((d for m in found if m.operator == op and m.before == before
                        if (d := with_diff(m, tree)).after == after), None)
            if hit is None:
                raise SystemExit(f"bench_mutation --quick: {module} no longer has the line {before!r}")
            sample.append(hit)
            sizes[module] = (len(found), left)
        return sample, sizes
    if args.again:  # the survivors of saved runs, found again by their text in today's tree
        pool = saved_pool(args.again)
        table = classes()
        wanted = set(args.survivor_classes) if args.survivor_classes else None
        saved = [(k, r) for k, r in pool.items() if not r["killed"] and r["module"] in args.modules
                 and (wanted is None or (classify_record(r, table) or {}).get("class", "unclassified")
                      in wanted)]
        if args.killed_sample:
            killed = sorted(((k, r) for k, r in pool.items() if r["killed"] and r["module"] in args.modules),
                            key=lambda kr: kr[0])
            saved += random.Random(f"{args.seed}:killed").sample(killed, min(args.killed_sample,
                                                                             len(killed)))
        args.pool_keys = []
        for module in dict.fromkeys(r["module"] for _, r in saved):
            found, left = enumerate_mutants(tree, module)
            sizes[module] = (len(found), left)
            for k, r in ((k, r) for k, r in saved if r["module"] == module):
                same = sorted((m for m in found if m.operator == r["operator"] and m.before == r["before"]),
                              key=lambda m: (m.following != r.get("following", m.following),
                                             abs(m.line - r["line"])))  # the same next line, the nearest
                hits = [d for m in same if (d := with_diff(m, tree)).after == r["after"]]
                hit = hits[0] if hits else None
                if hit is None:
                    print(f"{r['key']}: its line is gone from the tree", file=sys.stderr)
                elif "following" not in r and len(hits) > 1 and r["line"] not in {h.line for h in hits}:
                    # saved without its next line, and today several lines read the same (two @property)
                    # with none at its number: the nearest would be a guess (once a different mutant)
                    print(f"{r['key']}: {len(hits)} mutants of the same text today and none at its line: "
                          "left out", file=sys.stderr)
                else:
                    sample.append(hit)
                    args.pool_keys.append(k)
        return sample, sizes
    for module in args.modules:
        found, left = enumerate_mutants(tree, module)
        sizes[module] = (len(found), left)
        rng = random.Random(f"{args.seed}:{module}")
        sample += rng.sample(found, min(args.per_module, len(found)))
    return [with_diff(m, tree) for m in sample], sizes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-module", type=int, default=14, help="mutants sampled per module (default 14)")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--modules", type=lambda s: s.split(","), default=list(MODULES))
    ap.add_argument("--quick", action="store_true", help="two hand-picked mutants, each with its killer")
    ap.add_argument("--clone", default=str(Path(tempfile.gettempdir()) / "virtio-mutation-clone"))
    ap.add_argument("--tree", help="run in this tree as it is (no clone)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it counts as a hang")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--text", type=Path)
    ap.add_argument("--merge", type=Path, help="with --replay: a later --again run's kills count")
    ap.add_argument("--again", type=Path, nargs="+",
                    help="run the survivors of saved --json runs again (several: their union)")
    ap.add_argument("--survivor-classes", type=lambda s: s.split(","), default=[],
                    help="with --again: only survivors of these classes (gap,conformant,equivalent,unclassified)")
    ap.add_argument("--killed-sample", type=int, default=0,
                    help="with --again: also N mutants the saved runs killed (seeded by --seed)")
    ap.add_argument("--replay", type=Path, help="print a saved --json run again, with today's classification")
    ap.add_argument("--add", type=Path, nargs="+", default=[],
                    help="with --replay of an --again run: more re-runs of the same saved runs, added to it")
    args = ap.parse_args()
    if args.replay:  # render a saved run again (after mutation_survivors.toml changed)
        saved = json.loads(args.replay.read_text(encoding="utf-8"))
        for more in args.add:  # further re-runs of the same saved runs: their mutants join this one's
            extra = json.loads(more.read_text(encoding="utf-8"))
            if extra.get("again_of") != saved.get("again_of") or extra["profile"] != saved["profile"]:
                raise SystemExit(f"bench_mutation --add {more}: not a re-run of the same saved runs at the "
                                 f"same profile as {args.replay}")
            saved["mutants"] += extra["mutants"]
            saved["sizes"] = {**saved["sizes"], **extra["sizes"]}
            saved["seconds"] += extra["seconds"]
            if extra["commit"] != saved["commit"].split(" ")[0]:
                saved["commit"] += f" and {extra['commit']}"
        fields = {f.name for f in attrs.fields(Mutant)}
        sample = [Mutant(**{k: (tuple(v) if k == "sides" else v) for k, v in r.items() if k in fields})
                  for r in saved["mutants"]]
        outcomes = [Outcome(**{f.name: r[f.name] for f in attrs.fields(Outcome)}) for r in saved["mutants"]]
        outcomes = [attrs.evolve(o, sides_run=tuple(o.sides_run)) for o in outcomes]
        if args.merge:  # a later --again run: its outcome replaces the survivor's, matched by text
            later = {(r["module"], r["operator"], r["before"], r["after"]): r
                     for r in json.loads(args.merge.read_text(encoding="utf-8"))["mutants"]}
            for i, (m, o) in enumerate(zip(sample, outcomes)):
                r = later.get((m.module, m.operator, m.before, m.after))
                if r is not None and not o.killed and r["killed"] and r["killer"] != INCOMPETENT:
                    outcomes[i] = attrs.evolve(o, killed=True, killer=r["killer"],
                                               detail=r["detail"] + " (re-run)", detect_s=r["detect_s"],
                                               sides_run=tuple(r["sides_run"]))
        sizes = {k: tuple(v) for k, v in saved["sizes"].items()}
        if args.merge:
            saved["commit"] += f"; its survivors re-run at {json.loads(args.merge.read_text())['commit']}"
        commit, elapsed, args.jobs = saved["commit"], saved["seconds"], saved["jobs"]
        args.again = [Path(p) for p in saved.get("again_of", [])]
        args.pool_keys = [r.get("pool_key", "") for r in saved["mutants"]]
        args.seed, args.per_module, args.profile = saved["seed"], saved["per_module"], saved["profile"]
    else:
        tree = prepare(args)
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        sample, sizes = pick(tree, args)
        start = time.perf_counter()

        def one(m: Mutant) -> Outcome:
            o = run_mutant(tree, m, args.profile, args.timeout)
            print(f"{m.key}: {o.killer if o.killed else 'survived'} ({o.wall_s:.0f} s)", file=sys.stderr,
                  flush=True)
            return o

        with ThreadPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(one, sample))
        elapsed = time.perf_counter() - start
    lines = report(sample, outcomes, sizes, classes(), args, commit, elapsed)
    if args.again and not args.quick and args.profile not in {
            json.loads(Path(p).read_text(encoding="utf-8"))["profile"] for p in args.again}:
        more, keys = nightly_summary(args.again, args.pool_keys, outcomes, classes(), args.profile)
        lines[-1:-1] = more + [""]
        lines[-1] += " " + keys
    print("\n".join(lines))
    if args.text:
        args.text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.json and not args.replay:
        args.json.write_text(json.dumps(
            {"commit": commit, "profile": args.profile, "seed": args.seed, "per_module": args.per_module,
             "jobs": args.jobs, "seconds": round(elapsed), "sizes": sizes,
             **({"again_of": [str(p) for p in args.again],
                 "survivor_classes": args.survivor_classes, "killed_sample": args.killed_sample}
                if args.again else {}),
             "mutants": [{**attrs.asdict(m), "key": m.key, **attrs.asdict(o),
                          **({"pool_key": pk} if pk is not None else {})}
                         for m, o, pk in zip(sample, outcomes, getattr(args, "pool_keys", None)
                                             or [None] * len(sample))]},
            indent=1) + "\n", encoding="utf-8")
    if args.quick:
        for (*_, want), m, o in zip(QUICK, sample, outcomes):
            if o.killer != want:
                print(f"quick: {m.key} was {'killed by ' + o.killer if o.killed else 'not killed'}, "
                      f"expected {want}", file=sys.stderr)
                return 1
    return 0


def report(sample: list[Mutant], outcomes: list[Outcome], sizes: dict, table: list[dict],
           args: argparse.Namespace, commit: str, elapsed: float) -> list[str]:
    out = [f"# bench_mutation: cosmic-ray mutants of the reference at {commit}, {args.profile} profile, "
           f"--max-failures 0; seed {args.seed}, {args.per_module if not args.quick else 'quick'} per module",
           "", "all: the module's mutants that change running code (annot: left out, in annotations or the "
           "exception classes the suite shares); incomp: sampled but not compiling, left out of every rate",
           "", f"{'module':34} {'all':>5} {'annot':>5} {'sampled':>7} {'incomp':>6} {'killed':>6} "
           f"{'survived':>8} "
           f"{'equiv':>5} {'conf':>5} {'kill rate':>18}"]
    tot = {"n": 0, "k": 0, "s": 0, "e": 0, "i": 0, "c": 0}
    survivors = []
    for module in sizes:
        rows = [(m, o) for m, o in zip(sample, outcomes) if m.module == module]
        bad = sum(o.killer == INCOMPETENT for _, o in rows)
        rows = [(m, o) for m, o in rows if o.killer != INCOMPETENT]
        k = sum(o.killed for _, o in rows)
        surv = [(m, o, classify(m, table)) for m, o in rows if not o.killed]
        e = sum(1 for *_, c in surv if c and c["class"] == "equivalent")
        conf = sum(1 for *_, c in surv if c and c["class"] == "conformant")
        rate = f"{k}/{len(rows) - e - conf}" + (f" = {k / (len(rows) - e - conf):.0%}" if len(rows) > e + conf
                                                  else "")
        out.append(f"{module:34} {sizes[module][0]:5} {sizes[module][1]:5} {len(rows) + bad:7} {bad:6} {k:6} "
                   f"{len(surv):8} {e:5} {conf:5} {rate:>18}")
        tot["n"] += len(rows)
        tot["k"] += k
        tot["s"] += len(surv)
        tot["e"] += e
        tot["i"] += bad
        tot["c"] += conf
        survivors += surv
    judged = tot["n"] - tot["e"] - tot["c"]  # the mutants a conforming implementation must not behave like
    lo, hi = wilson(tot["k"], judged)
    competent = [o for o in outcomes if o.killer != INCOMPETENT]
    detect = sorted(o.detect_s for o in competent if o.killed and o.detect_s is not None)
    out += ["", f"kill rate: {tot['k']}/{judged}" + (f" = {tot['k'] / judged:.1%}" if judged else "")
            + f", 95% CI (Wilson) {lo:.1%} .. {hi:.1%}, of the mutants neither equivalent ({tot['e']}) nor "
            f"conformant ({tot['c']}); of every competent mutant: {tot['k']}/{tot['n']}"]
    if detect:
        wall = statistics.median(o.wall_s for o in competent)
        out.append(f"time to detect (killed, from the killing run's start): median "
                   f"{statistics.median(detect):.1f} s, slowest {detect[-1]:.1f} s; wall per mutant median "
                   f"{wall:.1f} s; {elapsed:.0f} s in all, {args.jobs} jobs")
    killers: dict[str, int] = {}
    for o in outcomes:
        if o.killed:
            killers[o.killer] = killers.get(o.killer, 0) + 1
    by = sorted(killers.items(), key=lambda kv: (-kv[1], kv[0]))
    errors = collections.Counter(error_kind(o.detail) for o in competent
                                 if o.killed and o.killer.startswith("error:"))
    out += [f"of the killed: {tot['k'] - sum(errors.values())} by a failing requirement, "
            f"{sum(errors.values())} by an error: " + ", ".join(f"{v} {k}" for k, v in errors.most_common())]
    out += ["", "killed by: " + ", ".join(f"{k} {v}" for k, v in by)]
    out += ["", "killed:"] + [f"  {m.key}: {o.killer} in {o.detect_s or 0:.1f} s ({'+'.join(o.sides_run)})"
                              + (" [a survivor, killed after the fix]" if o.detail.endswith("(re-run)")
                                 else "")
                              + f"  - {m.before}  + {m.after}" for m, o in zip(sample, outcomes) if o.killed]
    out += ["", "survivors:"]
    for m, o, c in survivors:
        what = "UNCLASSIFIED"
        if c:
            what = c["class"] + (f" ({c['requirement']})" if c.get("requirement") else "") + f": {c['why']}"
        out += [f"  {m.key} ({'+'.join(o.sides_run)})", f"    - {m.before}", f"    + {m.after}",
                f"    {what}"]
    unclassified = sum(1 for *_, c in survivors if c is None)
    out += ["", f"mutants={tot['n']} incompetent={tot['i']} killed={tot['k']} survived={tot['s']} "
            f"equivalent={tot['e']} conformant={tot['c']} unclassified={unclassified} "
            f"kill_rate={tot['k'] / max(1, judged):.3f} "
            f"kill_rate_ci={lo:.3f}-{hi:.3f} "
            f"median_detect_s={statistics.median(detect) if detect else 0:.1f} "
            f"max_detect_s={detect[-1] if detect else 0:.1f} seconds={elapsed:.0f}"]
    return out


if __name__ == "__main__":
    sys.exit(main())
