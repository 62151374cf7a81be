"""The default run's scheduling (tests/scheduling.py): units, their order, and the shared-fixture list."""

import subprocess
import sys
import types
from pathlib import Path

import scheduling

ROOT = Path(__file__).resolve().parents[2]

LISTER = """
import sys, pytest
sys.path.insert(0, "tests")
import scheduling
class Lister:
    def pytest_collection_finish(self, session):
        print("MODULES", sorted(scheduling.modules_sharing_a_fixture(session.items)))
sys.exit(pytest.main(["-p", "no:xdist", "-p", "no:cacheprovider", "--collect-only", "-q", "tests"],
                     plugins=[Lister()]))
"""


def test_modules_sharing_a_fixture_are_the_listed_ones():
    out = subprocess.run([sys.executable, "-c", LISTER], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("MODULES "))
    assert set(eval(line.removeprefix("MODULES "))) == scheduling.SHARED_MODULES


def _items(*nodeids):
    return [types.SimpleNamespace(nodeid=n) for n in nodeids]


def test_units_go_longest_first_and_a_shared_module_stays_whole(monkeypatch, tmp_path):
    shared = sorted(scheduling.SHARED_MODULES)[0]
    figures = tmp_path / "durations.json"
    figures.write_text('{"t/a.py::fast": 0.1, "t/a.py::slow": 30, "%s::x": 20, "%s::y": 15}' % (shared, shared))
    monkeypatch.setattr(scheduling, "DURATIONS", figures)
    items = _items("t/a.py::fast", f"{shared}::x", "t/a.py::new", "t/a.py::slow", f"{shared}::y")
    scheduling.order_for_workers(items)
    # the module's 35 s as one unit, then 30 s, then an unrecorded test (1 s), then 0.1 s
    assert [i.nodeid for i in items] == [f"{shared}::x", f"{shared}::y", "t/a.py::slow", "t/a.py::new",
                                         "t/a.py::fast"]
    assert scheduling.unit_of(f"{shared}::y") == shared and scheduling.unit_of("t/a.py::slow") == "t/a.py::slow"
