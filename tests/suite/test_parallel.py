"""Spread over worker processes (as pytest-xdist spreads the nightly and matrix runs), runs with fixed
seeds give the verdicts of a serial run (bench/bench_parallel.py does it for more runs and times it)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench():
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))  # importable by name: the workers (fresh interpreters) import it too
    return importlib.import_module("bench_parallel")


def test_two_workers_give_the_verdicts_of_a_serial_run():
    bench = _bench()
    cases = [("virtq-mutant-first-descriptor-only", "device", "dev", 9),
             ("virtq-mutant-kicks-always", "driver", "dev", 8)]
    same, serial, _, _ = bench.compare(cases, 2)
    assert same == [True, True]
    assert ("SPLIT-DEV-1", "fail") in serial[0][0]  # real verdicts are compared, the mutant's included
