"""How stable detection is: each built-in mutant under the derandomized ci profile, again with an
irrelevant constant added to a local module (``_UNUSED = 0xA5``, the edit that once flipped a ci verdict),
and under several random seeds. A mutant must be caught, with its own requirement ID, every time.
Prints a row per mutant and ends with one ``key=value`` line; asserts nothing.
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


def caught(name: str, role: str, *, profile: str) -> tuple[bool, float, str]:
    impl = BUILTIN[name, role]
    start = time.perf_counter()
    res = run(impl, profile, max_failures=0)
    took = time.perf_counter() - start
    fails = sorted(v.requirement.id for v in res.verdicts if v.verdict == "fail")
    ok = bool(fails) and set(fails) <= set(impl.breaks)
    return ok, took, ",".join(fails) or "MISSED"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="random seeds per mutant, beside the ci runs")
    p.add_argument("--mutants", type=int, default=0, help="only the first N mutants (0: all)")
    args = p.parse_args()
    mutants = sorted((n, r) for (n, r), i in BUILTIN.items() if i.breaks)
    if args.mutants:
        mutants = mutants[:args.mutants]
    print(f"{'mutant':44} {'role':7} {'ci':>6} {'ci+const':>9} {'seeds':>7}  slowest  missed as")
    runs = missed = 0
    ci_times: list[float] = []
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
        bad = [f"{r[2]}" for r in allr if not r[0]]
        missed += len(bad)
        ci_times.append(results[0][1])
        if bad:
            worst_mutants.append(name)
        slowest = max(r[1] for r in allr)
        print(f"{name:44} {role:7} {'ok' if results[0][0] else 'MISS':>6} {'ok' if results[1][0] else 'MISS':>9} "
              f"{sum(r[0] for r in seeded)}/{len(seeded):<5} {slowest:7.2f}  {' '.join(bad)}", flush=True)
    med, worst = statistics.median(ci_times), max(ci_times)
    print(f"\nnot caught every time: {', '.join(worst_mutants) or 'none'}")
    print(f"mutants={len(mutants)} runs={runs} missed={missed} stable_mutants={len(mutants) - len(worst_mutants)} "
          f"ci_detect_median_s={med:.2f} ci_detect_max_s={worst:.2f}")


if __name__ == "__main__":
    main()
