"""Spread the tests over pytest-xdist's workers so that they finish together.

`tools/test` runs `--dist loadgroup`, and `pytest_xdist_make_scheduler` (tests/conftest.py) answers with
:class:`LongestFirstScheduling`: xdist hands out one work unit at a time in collection order, and the
workers collect the units longest first (the LPT rule), by the seconds in `tests/durations.json`, so no long
test starts last on one worker while the other sits idle. A unit is one test, or a whole module of
:data:`SHARED_MODULES`, whose tests share a module-scoped fixture (a Sphinx build, a built wheel, a booted
guest) that should be made once and not once per worker.

The units are decided here, on both sides, and not through xdist's ``xdist_group`` marks: xdist 3.8 passes
a group by rewriting the test's node ID, which pytest 9 ignores (pytest-dev/pytest-xdist#1386).

Re-record the figures after the suite changes shape:
`VIRTIO_TEST_DURATIONS=tests/durations.json ./tools/test -p no:cacheprovider`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
UNKNOWN_SECONDS = 1.0  # a test not yet recorded runs early, in case it is long
#: Modules whose tests share a module-scoped fixture: each goes to one worker whole.
#: test_modules_sharing_a_fixture_are_the_listed_ones (tests/suite/test_scheduling.py) keeps it true.
SHARED_MODULES = frozenset({
    "tests/adapters/test_linux_qemu.py",  # factory: a booted guest
    "tests/adapters/test_rust_vmm.py",  # version: a crate built per version
    "tests/docs/test_docs.py",  # site: the Sphinx build
    "tests/suite/test_faults.py",  # workdir
    "tests/suite/test_replay.py",  # first_failures: every mutant's script replayed
    "tests/suite/test_wheel.py",  # wheel, venv
})


def unit_of(nodeid: str) -> str:
    module = nodeid.split("::")[0]
    return module if module in SHARED_MODULES else nodeid


def modules_sharing_a_fixture(items: list[pytest.Item]) -> set[str]:
    """The modules whose tests use a module-, class- or package-scoped fixture of their own making
    (unittest's per-class setUpClass fixtures cost nothing and are left out)."""
    out = set()
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        for name, defs in (info.name2fixturedefs.items() if info else ()):
            if defs and defs[-1].scope in ("module", "class", "package") and \
                    not name.startswith("_unittest_setUpClass_fixture_"):
                out.add(item.nodeid.split("::")[0])
    return out


def order_for_workers(items: list[pytest.Item]) -> None:
    """Sort `items` in place: units longest first, a unit's tests together in their collection order."""
    try:
        seconds = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        seconds = {}
    units: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        units[unit_of(item.nodeid)].append(item)
    weight = {name: sum(float(seconds.get(i.nodeid, UNKNOWN_SECONDS)) for i in members)
              for name, members in units.items()}
    ordered = sorted(units, key=lambda name: -weight[name])  # stable: ties keep collection order
    items[:] = [item for name in ordered for item in units[name]]


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class LongestFirstScheduling(LoadScopeScheduling):
        """xdist's scope scheduling with this module's units, in the workers' (longest-first) order."""

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False  # keep the workers' order, not xdist's tests-per-scope one
    return LongestFirstScheduling(config, log)


class DurationRecorder:
    """Sums setup, call and teardown seconds per test (on the xdist controller) into a JSON file."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration

    def pytest_sessionfinish(self) -> None:
        figures = {k: round(v, 2) for k, v in sorted(self.seconds.items())}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(figures, indent=0) + "\n")
        tmp.replace(self.path)


def configure(config: pytest.Config) -> None:
    out = os.environ.get("VIRTIO_TEST_DURATIONS")
    if out and not os.environ.get("PYTEST_XDIST_WORKER"):
        config.pluginmanager.register(DurationRecorder(Path(out)), "virtio-durations")
