"""Each mutant's first-failure run (ci profile, stop at the first failure), made once per worker process.

test_conformance judges what the run found and test_replay replays what it printed: the same derandomized
run, so a worker that runs both makes it once. Both mark their tests ``xdist_group("mutant-runs")`` for
``--dist loadgroup``; with pytest-xdist 3.8 a probe still spread a group over both workers (not understood
yet), so tools/test does not pass it."""

from __future__ import annotations

import functools

import pytest

from conformance.registry import BUILTIN
from conformance.runner import RunResult, run

GROUP = pytest.mark.xdist_group("mutant-runs")


@functools.cache
def first_failure_run(name: str, role: str) -> RunResult:
    return run(BUILTIN[name, role], "ci", max_failures=0)
