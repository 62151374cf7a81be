"""Benchmarks stay runnable and end with one key=value line (no timing is asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SMALL_ARGS = {
    "bench_split_ring.py": ["--ops", "200", "--repeat", "1"],
    "bench_migration.py": ["--log2-pages", "20"],
    "bench_conformance.py": ["--examples", "5", "--mutants", "2"],
    "bench_detection.py": ["--mutants", "2", "--seeds", "1"],
    "bench_packed_ring.py": ["--ops", "200", "--repeat", "1"],
    "bench_orderings.py": [],
    "bench_proposals.py": ["--max-gib", "4"],
    "bench_fuzz.py": ["--inputs", "2000"],
    # One committed run (the calibration's own is read anyway): every results file is for bench runs.
    "bench_timing_model.py": ["--results",
                              str(BENCH.parent / "results" / "migration-linux-qemu-7.2-linux-6.1-1024.json")],
    "bench_qemu.py": ["--requests", "50", "--ram-mib", "32"],
    # C faults only: the QEMU and UML points are for bench runs (results/faults.txt), not the tests.
    "bench_faults.py": ["--points", "3", "--kinds", "c-segv,c-hang"],
    "bench_parallel.py": ["--mutants", "1", "--profile", "dev"],
    # Two hand-picked mutants of the reference driver, each checked for its killing ID (seconds, no clone).
    "bench_mutation.py": ["--quick", "--tree", str(BENCH.parent)],
    # A real Linux guest under QEMU TCG; the full-size figures are for bench runs, not the tests.
    "bench_linux_migration.py": ["--mem-mib", "384", "--keep-mib", "32", "--fill-mib", "128", "--settle", "3"],
    # One boot on the QEMU-guest route, no suite run: the per-example figures are for bench runs.
    "bench_routes.py": ["--routes", "qemu-guest", "--boots", "1", "--no-suite"],
}


@pytest.mark.parametrize("script", sorted(SMALL_ARGS))
def test_benchmark_runs_and_ends_with_key_values(script):
    out = subprocess.run([sys.executable, str(BENCH / script), *SMALL_ARGS[script]], check=True,
                         capture_output=True, text=True, timeout=300).stdout
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"(\w+=[\w.+-]+ )*\w+=[\w.+-]+", last), last


def test_every_benchmark_is_smoke_tested():
    assert {p.name for p in BENCH.glob("bench_*.py")} == set(SMALL_ARGS)
