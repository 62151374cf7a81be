"""Parallel runs give the verdicts of a serial run: the reference and a few mutants, each with a fixed
seed, run one after another in this process, then spread over worker processes (fresh interpreters, as
pytest-xdist's workers are); per run the verdict of every requirement and the kinds of errors must match.

Prints a row per run, the wall time of each way measured side by side, and ends with one ``key=value``
line (``verdicts_equal=1`` when every run matched).

Use: bench_parallel.py [--workers 2] [--profile ci] [--mutants N] [--seed S]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.registry import BUILTIN  # noqa: E402
from conformance.runner import run  # noqa: E402

#: The reference pair first, then mutants whose searches differ in length (one per requirement area).
CASES = [("reference", "device"), ("reference", "driver"), ("mutant-reused-command-id", "device"),
         ("mutant-stale-actual", "driver"), ("mutant-wrong-used-len", "device"),
         ("mutant-missing-stop", "driver"),
         ("mutant-no-config-notification", "device"), ("mutant-double-echo", "driver")]

Signature = tuple[tuple[tuple[str, str], ...], tuple[str, ...]]


def verdicts_of(case: tuple[str, str, str, int]) -> tuple[Signature, float]:
    """One run's verdicts, (requirement, verdict) for each, and the kinds of its errors; and its seconds."""
    name, role, profile, seed = case
    start = time.perf_counter()
    res = run(BUILTIN[name, role], profile, seed=seed)
    sig = (tuple(sorted((v.requirement.id, v.verdict) for v in res.verdicts)),
           tuple(sorted(e.kind for e in res.errors)))
    return sig, time.perf_counter() - start


def compare(cases: list[tuple[str, str, str, int]],
            workers: int) -> tuple[list[bool], list[Signature], float, float]:
    """Whether each case's verdicts match, the serial verdicts, and the serial and parallel wall times."""
    start = time.perf_counter()
    serial = [verdicts_of(c) for c in cases]
    serial_s = time.perf_counter() - start
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker, as pytest-xdist has
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        parallel = list(pool.map(verdicts_of, cases))
    parallel_s = time.perf_counter() - start
    return [s[0] == p[0] for s, p in zip(serial, parallel)], [s[0] for s in serial], serial_s, parallel_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--mutants", type=int, default=len(CASES) - 2, help="mutants after the reference pair")
    ap.add_argument("--seed", type=int, default=20260)
    args = ap.parse_args()
    chosen = CASES[:2 + args.mutants]
    cases = [(n, r, args.profile, args.seed + i) for i, (n, r) in enumerate(chosen)]
    same, _, serial_s, parallel_s = compare(cases, args.workers)
    for (n, r, _, seed), ok in zip(cases, same):
        print(f"{n:34} {r:7} seed {seed}: {'same verdicts' if ok else 'DIFFERENT verdicts'}")
    print(f"serial {serial_s:.1f} s, {args.workers} workers {parallel_s:.1f} s "
          f"(ratio {serial_s / parallel_s:.2f}; the cores are shared, so the ratio is a floor)")
    print(f"runs={len(cases)} workers={args.workers} profile={args.profile} verdicts_equal={int(all(same))} "
          f"serial_s={serial_s:.1f} parallel_s={parallel_s:.1f} speedup={serial_s / parallel_s:.2f}")


if __name__ == "__main__":
    main()
