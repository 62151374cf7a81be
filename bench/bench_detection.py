"""How stable detection is: each built-in mutant under the derandomized ci profile, again with an
irrelevant constant added to a local module (``_UNUSED = 0xA5``, the edit that once flipped a ci verdict),
and under several random seeds. A mutant must be caught, with its own requirement ID, every time.
Prints a row per mutant and ends with one ``key=value`` line; asserts nothing.

Times of the ci run: wall (``ci_detect_*_s``, the whole run: search, shortening, replay) and CPU time of this
process (``time.process_time``, ``ci_detect_cpu_*_s``): the runs are in-process, so CPU time is what the
search costs whatever else loads the machine. ``first_fail``: CPU time to the run's first FAIL or ERROR line
(the search and Hypothesis' shrinking, before the printed counterexample is shortened and replayed), as
bench_mutation's time to detect. ``--only`` runs the named mutants.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hypothesis.core  # noqa: E402

from conformance.registry import BUILTIN  # noqa: E402
from conformance.runner import run  # noqa: E402

#: What a vendor's unrelated edit looks like: constants Hypothesis would otherwise mine for draws.
IRRELEVANT = "_UNUSED = 0xA5\n_MAGIC = 0x5A5A\n_NAME = 'irrelevant'\nLIMITS = (3, 7, 11, 4095, 65537)\n"


@contextlib.contextmanager
def irrelevant_constants() -> Iterator[None]:
    """A local module with constants, loaded as a vendor's implementation module would be."""
    with tempfile.TemporaryDirectory(prefix="vc-irrelevant-") as tmp:
        Path(tmp, "vendor_irrelevant_constants.py").write_text(IRRELEVANT)
        sys.path.insert(0, tmp)
        try:
            importlib.import_module("vendor_irrelevant_constants")
            yield
        finally:
            sys.path.remove(tmp)
            sys.modules.pop("vendor_irrelevant_constants", None)


@contextlib.contextmanager
def forced_seed(seed: int | None) -> Iterator[None]:
    """Run non-derandomized with ``seed`` (what pytest's --hypothesis-seed does)."""
    old = hypothesis.core.global_force_seed
    hypothesis.core.global_force_seed = seed
    try:
        yield
    finally:
        hypothesis.core.global_force_seed = old


@attrs.frozen
class Caught:
    ok: bool  # failed, and only with the mutant's own IDs
    wall: float  # seconds of the whole run
    cpu: float  # CPU seconds of the whole run (this process)
    first_cpu: float | None  # CPU seconds to the first FAIL or ERROR line
    fails: str  # the failing IDs, or MISSED


def caught(name: str, role: str, *, profile: str) -> Caught:
    impl = BUILTIN[name, role]
    first: list[float] = []
    start, cpu0 = time.perf_counter(), time.process_time()

    def progress(line: str) -> None:
        if not first and line.startswith(("  FAIL ", "  ERROR ", "  HARNESS ERROR ")):
            first.append(time.process_time() - cpu0)

    res = run(impl, profile, max_failures=0, progress=progress)
    took, cpu = time.perf_counter() - start, time.process_time() - cpu0
    fails = sorted(v.requirement.id for v in res.verdicts if v.verdict == "fail")
    ok = bool(fails) and set(fails) <= set(impl.breaks)
    return Caught(ok, took, cpu, first[0] if first else None, ",".join(fails) or "MISSED")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="random seeds per mutant, beside the ci runs")
    p.add_argument("--mutants", type=int, default=0, help="only the first N mutants (0: all)")
    p.add_argument("--only", type=lambda s: s.split(","), default=[], help="only these mutants (names, a,b)")
    args = p.parse_args()
    mutants = sorted((n, r) for (n, r), i in BUILTIN.items() if i.breaks)
    if args.only:
        unknown = set(args.only) - {n for n, _ in mutants}
        if unknown:
            raise SystemExit(f"bench_detection --only: no built-in mutant {', '.join(sorted(unknown))}")
        mutants = [(n, r) for n, r in mutants if n in args.only]
    if args.mutants:
        mutants = mutants[:args.mutants]
    print("ci wall / cpu: the whole ci run (s); first: CPU s to its first FAIL; slowest: wall s over every run")
    print(f"{'mutant':44} {'role':7} {'ci':>6} {'ci+const':>9} {'seeds':>7} {'ci wall':>8} {'ci cpu':>7} "
          f"{'first':>6}  slowest  missed as")
    runs = missed = 0
    ci_times: list[float] = []
    ci_cpu: list[float] = []
    ci_first: list[float] = []
    worst_mutants = []
    for name, role in mutants:
        results = [caught(name, role, profile="ci")]
        with irrelevant_constants():
            results.append(caught(name, role, profile="ci"))
        seeded = []
        for s in range(args.seeds):
            with forced_seed(1000 + s):
                seeded.append(caught(name, role, profile="dev"))
        allr = results + seeded
        runs += len(allr)
        bad = [r.fails for r in allr if not r.ok]
        missed += len(bad)
        ci = results[0]
        ci_times.append(ci.wall)
        ci_cpu.append(ci.cpu)
        if ci.first_cpu is not None:
            ci_first.append(ci.first_cpu)
        if bad:
            worst_mutants.append(name)
        slowest = max(r.wall for r in allr)
        first = f"{ci.first_cpu:6.2f}" if ci.first_cpu is not None else f"{'-':>6}"
        print(f"{name:44} {role:7} {'ok' if ci.ok else 'MISS':>6} {'ok' if results[1].ok else 'MISS':>9} "
              f"{sum(r.ok for r in seeded)}/{len(seeded):<5} {ci.wall:8.2f} {ci.cpu:7.2f} {first}  "
              f"{slowest:7.2f}  {' '.join(bad)}", flush=True)
    med, worst = statistics.median(ci_times), max(ci_times)
    cpu_med, cpu_worst = statistics.median(ci_cpu), max(ci_cpu)
    slow = [f"{n} ({c:.1f} s)" for (n, _), c in zip(mutants, ci_cpu) if c > 30]
    print(f"\nnot caught every time: {', '.join(worst_mutants) or 'none'}")
    print(f"ci runs over 30 CPU s: {', '.join(slow) or 'none'}")
    print(f"ci run: wall median {med:.2f} s, slowest {worst:.2f} s; CPU median {cpu_med:.2f} s, slowest "
          f"{cpu_worst:.2f} s; CPU to the first FAIL median "
          f"{statistics.median(ci_first) if ci_first else 0:.2f} s, slowest {max(ci_first, default=0):.2f} s")
    print(f"mutants={len(mutants)} runs={runs} missed={missed} stable_mutants={len(mutants) - len(worst_mutants)} "
          f"ci_detect_median_s={med:.2f} ci_detect_max_s={worst:.2f} "
          f"ci_detect_cpu_median_s={cpu_med:.2f} ci_detect_cpu_max_s={cpu_worst:.2f} "
          f"ci_first_fail_cpu_median_s={statistics.median(ci_first) if ci_first else 0:.2f} "
          f"ci_first_fail_cpu_max_s={max(ci_first, default=0):.2f} ci_over_30_cpu_s={len(slow)}")


if __name__ == "__main__":
    main()
