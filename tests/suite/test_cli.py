"""The fixed interface: `virtio-conformance list|run`, its exit status, JSON and JUnit reports, and
one-line errors for bad input. A hanging, crashing or garbage-returning implementation becomes a
reported failure, never a hung or crashed suite."""

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance.cli import main
from conformance.registry import resolve
from conformance.runner import run

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "conformance.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT / "tests")


def test_list_names_reference_and_mutants():
    out = cli("list")
    assert out.returncode == 0
    names = {line.split()[0] for line in out.stdout.splitlines()}
    assert "reference" in names and sum(n.startswith("mutant-") for n in names) >= 20
    assert "[breaks BAL-FPH-DEV-2]" in out.stdout


def test_run_reference_passes_and_writes_reports(tmp_path):
    # dev: the reports' shape is the point here; test_conformance runs the reference under ci.
    out = cli("run", "--profile", "dev", "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"),
              "--quiet")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"implementation", "role", "requirements"} <= set(report)
    assert report["role"] == "device+driver"
    verdicts = {r["verdict"] for r in report["requirements"]}
    assert verdicts <= {"pass", "fail", "not-applicable", "not-checkable", "skipped"} and "pass" in verdicts
    assert all({"id", "verdict"} <= set(r) for r in report["requirements"])
    assert "fail" not in verdicts
    suites = ET.parse(tmp_path / "r.xml").getroot()
    assert len(suites.findall("testsuite")) == 2
    assert "summary:" in out.stdout


def test_run_mutant_fails_with_the_requirement_and_a_counterexample(tmp_path):
    out = cli("run", "--dut", "mutant-stale-actual", "--report", str(tmp_path / "r.json"), "--max-failures", "1")
    assert out.returncode == 1
    report = json.loads((tmp_path / "r.json").read_text())
    failed = [r for r in report["requirements"] if r["verdict"] == "fail"]
    assert [r["id"] for r in failed] == ["BAL-OP-DRV-11"]
    assert any(line.startswith("state = ") for line in failed[0]["counterexample"])
    assert "BAL-OP-DRV-11" in out.stdout and "FAIL" in out.stdout


def test_known_deviations_turn_a_failure_into_an_accepted_one(tmp_path):
    dev = tmp_path / "known.txt"
    dev.write_text("# adopting gradually\nBAL-OP-DRV-11\n")
    out = cli("run", "--dut", "mutant-stale-actual", "--known-deviations", str(dev), "--report",
              str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stdout[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    entry = next(r for r in report["requirements"] if r["id"] == "BAL-OP-DRV-11")
    assert entry["verdict"] == "fail" and entry["known_deviation"]


def test_a_scoped_known_deviation_accepts_a_failure_only_on_the_builds_it_names(tmp_path):
    """The same failing driver, posing as two QEMU builds (its description is what the report's versions
    names): ``qemu>10.0`` accepts its failure on 11.1.3 and leaves it a plain FAIL on 10.0.2."""
    import attrs

    from conformance.cli import load_known_deviations
    from conformance.report import print_table, to_json

    dev = tmp_path / "known.txt"
    dev.write_text("# after 10.0 only\nBAL-OP-DRV-11  qemu>10.0  # stale actual\n")
    known = load_known_deviations(str(dev))
    stale = resolve("mutant-stale-actual", "driver")
    verdicts = {}
    for version in ("10.0.2", "11.1.3"):
        impl = attrs.evolve(stale, name=f"stale-actual-as-qemu-{version}",
                            description=f"QEMU {version} (posing)")
        res = run(impl, "dev", known_deviations=known, max_failures=1)
        verdicts[version] = (res, res.by_id()["BAL-OP-DRV-11"], to_json([res]))
    res, v, report = verdicts["10.0.2"]
    assert v.verdict == "fail" and not v.known_deviation and v.deviation is None and res.failed
    entry = next(r for r in report["requirements"] if r["id"] == "BAL-OP-DRV-11")
    assert entry["known_deviation"] is False and entry["known_deviation_entry"] is None
    res, v, report = verdicts["11.1.3"]
    assert v.verdict == "fail" and v.known_deviation and not res.failed, res.verdicts
    entry = next(r for r in report["requirements"] if r["id"] == "BAL-OP-DRV-11")
    assert entry["known_deviation"] is True
    assert entry["known_deviation_entry"] == {"file": str(dev), "line": 2, "applies_to": ["qemu>10.0"]}
    assert report["versions"] == {"stale-actual-as-qemu-11.1.3": "QEMU 11.1.3 (posing)"}
    # The text table names the accepting line too, as the JSON does.
    table = io.StringIO()
    print_table([res], table)
    row = next(line for line in table.getvalue().splitlines() if line.startswith("BAL-OP-DRV-11 "))
    assert f"(known deviation, {dev} line 2 (qemu>10.0))" in row, row


@pytest.mark.parametrize("args, message", [
    (["run", "--dut", "no-such-thing"], "no such implementation"),
    (["run", "--dut", "nosuchmodule:factory", "--role", "device"], "cannot import 'nosuchmodule'"),
    (["run", "--dut", "dut.bad_devices:missing", "--role", "device"], "has no attribute 'missing'"),
    (["run", "--dut", "dut.bad_devices:NOT_CALLABLE", "--role", "device"], "is not callable"),
    (["run", "--dut", "dut.bad_devices:reference"], "give --role device or --role driver"),
    (["run", "--dut", "mutant-stale-actual", "--role", "device"], "is a driver; use --role driver"),
])
def test_bad_dut_is_a_one_line_error(args, message):
    out = cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_unknown_known_deviation_is_a_one_line_error(tmp_path):
    bad = tmp_path / "k.txt"
    bad.write_text("NOPE-1\n")
    out = cli("run", "--known-deviations", str(bad))
    assert out.returncode == 2 and "unknown requirement 'NOPE-1'" in out.stderr


def test_third_party_python_device_passes(tmp_path):
    out = cli("run", "--dut", "dut.bad_devices:reference", "--role", "device", "--quiet")
    assert out.returncode == 0, out.stdout[-2000:]


@pytest.mark.parametrize("factory, expect", [
    ("hangs", "did not return within 0.5 s"),
    ("crashes", "raised KeyError"),
    ("garbage", "returned 'DRIVER_OK'"),
])
def test_misbehaving_device_is_reported_not_fatal(factory, expect, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    impl = resolve(f"dut.bad_devices:{factory}", "device")
    res = run(impl, "dev", timeout=0.5)
    assert res.failed and res.errors, res.verdicts
    assert expect in res.errors[0].detail
    assert any(line.startswith("state.") for line in res.errors[0].counterexample)


def test_main_returns_exit_codes_in_process(capsys):
    assert main(["run", "--dut", "mutant-offers-undefined-bit", "--quiet", "--max-failures", "0"]) == 1
    assert "FEAT-DEV-3" in capsys.readouterr().out
    assert main(["list"]) == 0


def test_a_third_party_virtqueue_runs_at_the_virtqueue_level(tmp_path):
    report = tmp_path / "q.json"
    assert main(["run", "--level", "virtqueue", "--dut", "refmodel.virtio.split.device:SplitQueueDevice", "--role",
                 "device", "--profile", "dev", "--quiet", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    verdicts = {r["id"]: r["verdict"] for r in data["requirements"]}
    assert verdicts["SPLIT-DEV-14"] == "pass" and verdicts["BAL-OP-DEV-1"] == "not-applicable"
    assert main(["run", "--level", "virtqueue", "--dut", "mutant-stale-actual", "--role", "driver", "--quiet"]) == 2


def test_known_deviations_by_name_are_the_packaged_list():
    from conformance.cli import load_known_deviations

    assert {"BAL-FPH-D5", "SPLIT-DEV-D3"} <= load_known_deviations("qemu")
    assert main(["run", "--dut", "reference", "--role", "device", "--profile", "dev", "--quiet",
                 "--known-deviations", "qemu"]) == 0


def test_an_unknown_known_deviations_name_lists_the_names():
    out = cli("run", "--known-deviations", "qemu-9000")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "qemu-9000: no such file" in lines[0] and "(one of: qemu, linux)" in lines[0]


def test_c_header_and_examples_are_found_for_a_compiler(tmp_path, capsys):
    c_dir = ROOT / "conformance" / "adapters" / "c"
    def printed(*args):
        assert main(list(args)) == 0
        return capsys.readouterr().out.strip()

    assert printed("c-header") == str(c_dir / "virtio_conformance.h")
    assert printed("c-header", "--include-dir") == str(c_dir)
    assert printed("c-example", "device") == str(c_dir / "example_device.c")
    copied = tmp_path / "ex" / "example_driver.c"
    assert printed("c-example", "driver", "--output", str(tmp_path / "ex")) == str(copied)
    assert copied.read_bytes() == (c_dir / "example_driver.c").read_bytes()
    assert (tmp_path / "ex" / "virtio_conformance.h").is_file()


def test_module_factory_is_imported_from_the_current_directory(tmp_path, monkeypatch):
    """An installed console script has its bin directory, not the cwd, first on sys.path."""
    (tmp_path / "cwd_only_dut.py").write_text("from refmodel.balloon.device import BalloonDevice\n"
                                             "def make(mem):\n    return BalloonDevice(mem)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cwd_only_dut", raising=False)
    impl = resolve("cwd_only_dut:make", "device")
    assert impl.factory.__module__ == "cwd_only_dut" and sys.path[0] == str(tmp_path)


def test_a_factory_that_raises_is_one_error_before_any_search(tmp_path, monkeypatch):
    (tmp_path / "raising_dut.py").write_text("def make(mem):\n    raise RuntimeError('no licence')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "raising_dut", raising=False)
    res = run(resolve("raising_dut:make", "device"), "dev")
    assert res.failed and res.searches == 0
    assert [(e.kind, e.detail) for e in res.errors] == [
        ("implementation", "building the device raised RuntimeError: no licence")]


@pytest.mark.parametrize("name", ["FlakyStrategyDefinition", "FlakyReplay"])
def test_hypothesis_flakiness_stops_the_search_as_nondeterministic(name, monkeypatch):
    import hypothesis.errors

    import conformance.runner

    def flaky(*args, **kwargs):
        raise getattr(hypothesis.errors, name)("the strategy changed between runs")

    monkeypatch.setattr(conformance.runner, "run_state_machine_as_test", flaky)
    res = run(resolve("reference", "device"), "dev")
    assert [e.kind for e in res.errors] == ["nondeterministic"] and not res.failed
    assert res.errors[0].detail.startswith(f"search stopped: {name}: the strategy changed")


def test_run_packed_virtqueue_reference_names_the_ring(tmp_path):
    report = tmp_path / "p.json"
    assert main(["run", "--level", "virtqueue", "--ring", "packed", "--profile", "dev", "--quiet", "--report",
                 str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["ring"] == "packed" and data["implementation"] == "virtq-packed-reference"
    assert data["role"] == "device+driver" and data["summary"]["fail"] == 0
    verdicts = {(r["id"], r["implementation"]): r["verdict"] for r in data["requirements"]}
    assert verdicts["PACKED-DEV-D2", "virtq-packed-reference"] == "pass"
    assert verdicts["PACKED-DRV-D10", "virtq-packed-reference"] == "pass"
    assert verdicts["SPLIT-DEV-14", "virtq-packed-reference"] == "not-applicable"


def test_run_packed_mutant_fails_with_its_requirement(tmp_path):
    report = tmp_path / "m.json"
    assert main(["run", "--level", "virtqueue", "--ring", "packed", "--dut",
                 "virtq-packed-mutant-kicks-always", "--quiet", "--max-failures", "0", "--report",
                 str(report)]) == 1
    data = json.loads(report.read_text())
    assert data["ring"] == "packed" and data["role"] == "driver"
    assert [r["id"] for r in data["requirements"] if r["verdict"] == "fail"] == ["PACKED-DRV-D11"]


def test_a_split_virtqueue_report_names_its_ring_and_a_balloon_report_none(tmp_path):
    report = tmp_path / "s.json"
    assert main(["run", "--level", "virtqueue", "--dut", "virtq-reference", "--role", "device", "--profile",
                 "dev", "--quiet", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["ring"] == "split"
    assert main(["run", "--dut", "mutant-offers-undefined-bit", "--quiet", "--max-failures", "0", "--report",
                 str(report)]) == 1
    assert "ring" not in json.loads(report.read_text())


def test_a_third_party_packed_virtqueue_runs_with_ring_packed(tmp_path):
    report = tmp_path / "t.json"
    assert main(["run", "--level", "virtqueue", "--ring", "packed", "--dut",
                 "refmodel.virtio.packed.driver:PackedQueueDriver", "--role", "driver", "--profile", "dev",
                 "--quiet", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["ring"] == "packed" and data["versions"] == {
        "refmodel.virtio.packed.driver:PackedQueueDriver": "third-party driver-side packed virtqueue from "
                                                           "refmodel.virtio.packed.driver:PackedQueueDriver"}
    assert {r["id"]: r["verdict"] for r in data["requirements"]}["PACKED-DRV-D5"] == "pass"


@pytest.mark.parametrize("args, message", [
    (["run", "--ring", "packed", "--dut", "refmodel.balloon.device:BalloonDevice", "--role", "device", "--quiet"],
     "does not offer VIRTIO_F_RING_PACKED"),
    (["run", "--level", "virtqueue", "--ring", "packed", "--dut", "virtq-mutant-kicks-always"],
     "is a split virtqueue; use --ring split"),
    (["run", "--level", "virtqueue", "--dut", "virtq-packed-reference", "--ring", "split", "--role",
      "device"], "is a packed virtqueue; use --ring packed"),
    (["run", "--level", "virtqueue", "--ring", "packed", "--dut", "rust-vmm-virtio-queue-0.14", "--role",
      "device"], "use --ring split"),
    (["run", "--level", "virtqueue", "--ring", "coiled"], "argument --ring: invalid choice: 'coiled'"),
])
def test_bad_ring_is_a_one_line_error(args, message):
    out = cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
