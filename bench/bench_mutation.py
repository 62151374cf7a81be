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
    if args.again:  # the survivors of a saved run, found again by their text in today's tree
        saved = [r for r in json.loads(args.again.read_text(encoding="utf-8"))["mutants"]
                 if not r["killed"] and r["killer"] != INCOMPETENT and r["module"] in args.modules]
        for module in dict.fromkeys(r["module"] for r in saved):
            found, left = enumerate_mutants(tree, module)
            sizes[module] = (len(found), left)
            for r in (r for r in saved if r["module"] == module):
                same = sorted((m for m in found if m.operator == r["operator"] and m.before == r["before"]),
                              key=lambda m: (m.following != r.get("following", m.following),
                                             abs(m.line - r["line"])))  # the same next line, the nearest
                hit = next((d for m in same if (d := with_diff(m, tree)).after == r["after"]), None)
                if hit is None:
                    print(f"{r['key']}: its line is gone from the tree", file=sys.stderr)
                else:
                    sample.append(hit)
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
    ap.add_argument("--again", type=Path, help="run the survivors of a saved --json run again")
    ap.add_argument("--replay", type=Path, help="print a saved --json run again, with today's classification")
    args = ap.parse_args()
    if args.replay:  # render a saved run again (after mutation_survivors.toml changed)
        saved = json.loads(args.replay.read_text(encoding="utf-8"))
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
    print("\n".join(lines))
    if args.text:
        args.text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.json and not args.replay:
        args.json.write_text(json.dumps(
            {"commit": commit, "profile": args.profile, "seed": args.seed, "per_module": args.per_module,
             "jobs": args.jobs, "seconds": round(elapsed), "sizes": sizes,
             "mutants": [{**attrs.asdict(m), "key": m.key, **attrs.asdict(o)}
                         for m, o in zip(sample, outcomes)]},
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
