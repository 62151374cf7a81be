"""Conformance suite speed: state-machine steps/s against the reference pair, and time to detect
each mutant with the ci profile. Targets (issue 4): >= 2,000 steps/s; median detection <= 5 s and
every mutant <= 60 s. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from conformance.checks import Recorder  # noqa: E402
from conformance.profiles import profile, shrink_budget  # noqa: E402
from conformance.registry import BUILTIN, machine_for  # noqa: E402
from conformance.runner import run  # noqa: E402


def steps_per_second(role: str, examples: int) -> tuple[float, int]:
    """Run the reference machine for ``examples`` examples; count executed steps (rules + invariants)."""
    base = machine_for(BUILTIN["reference", role])
    count = 0

    class Counting(base):  # type: ignore[misc, valid-type]
        def check_invariants(self, *args, **kwargs):  # called once after every step
            nonlocal count
            count += 1
            return super().check_invariants(*args, **kwargs)

    Counting.recorder = Recorder()
    settings = profile("dev").__class__(profile("dev"), max_examples=examples, derandomize=True)
    start = time.perf_counter()
    with shrink_budget("dev"):
        run_state_machine_as_test(Counting, settings=settings)
    return count / (time.perf_counter() - start), count


def detection_times(names: list[tuple[str, str]]) -> list[tuple[str, str, float, str]]:
    out = []
    for name, role in names:
        impl = BUILTIN[name, role]
        start = time.perf_counter()
        res = run(impl, "ci", max_failures=0)
        took = time.perf_counter() - start
        fails = [v.requirement.id for v in res.verdicts if v.verdict == "fail"]
        ok = bool(fails) and set(fails) <= set(impl.breaks)
        out.append((name, role, took, (",".join(fails) or "MISSED") + ("" if ok else " (WRONG)")))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=300, help="examples per role for the steps/s figure")
    p.add_argument("--mutants", type=int, default=0, help="time only the first N mutants (0: all)")
    args = p.parse_args()
    rates = {}
    for role in ("device", "driver"):
        rate, steps = steps_per_second(role, args.examples)
        rates[role] = rate
        print(f"reference {role:6} machine: {steps:6d} steps in {args.examples} examples, {rate:8,.0f} steps/s")
    mutants = sorted((n, r) for (n, r), i in BUILTIN.items() if i.breaks)
    if args.mutants:
        mutants = mutants[:args.mutants]
    times = detection_times(mutants)
    print(f"\n{'mutant':42} {'role':7} {'seconds':>8}  caught as")
    for name, role, took, caught in times:
        print(f"{name:42} {role:7} {took:8.2f}  {caught}")
    secs = [t for _, _, t, _ in times]
    missed = sum("MISSED" in c or "WRONG" in c for *_, c in times)
    med, worst = statistics.median(secs), max(secs)
    print(f"\nmedian detection {med:.2f} s, slowest {worst:.2f} s, {missed} missed or misnamed of {len(times)}")
    print(f"device_steps_per_s={rates['device']:.0f} driver_steps_per_s={rates['driver']:.0f} "
          f"mutants={len(times)} detect_median_s={med:.2f} detect_max_s={worst:.2f} missed={missed}")


if __name__ == "__main__":
    main()
