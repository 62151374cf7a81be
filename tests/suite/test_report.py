"""Reports show completeness: checked / checkable per implementation, the level each verdict came from (a
run of the reference merges its split virtqueues' virtqueue-level run), and skipped verdicts that name the
capability the implementation lacks."""

from __future__ import annotations

import importlib
import io
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conformance.checks import CAPABILITY_CHECKS, VIRTQUEUE_ONLY
from conformance.registry import BUILTIN, Implementation
from conformance.report import print_table, to_json, write_json, write_junit
from conformance.runner import Failure, RunError, RunResult, Verdict, merge, run, run_levels
from refmodel.balloon.device import BalloonDevice
from spec.catalogue import catalogue
from suite_mutant_runs import reference_ci_run

ROOT = Path(__file__).resolve().parents[2]


def capneeds():
    """docs/_ext/capneeds.py, the scan the adapter page is built from, imported as the docs build does."""
    ext = str(ROOT / "docs" / "_ext")
    if ext not in sys.path:
        sys.path.insert(0, ext)
    return importlib.import_module("capneeds")


def test_the_capability_table_is_what_the_machines_source_says():
    uses = capneeds().capability_uses()
    assert {c: ids for c, ids in CAPABILITY_CHECKS.items()} == {c: u.ids for c, u in uses.items() if u.ids}


def _bare_device() -> Implementation:
    """The reference device declaring no capability."""
    bare = type("Bare", (BalloonDevice,), {"capabilities": frozenset()})
    return Implementation("bare", "device", bare, "the reference device without capabilities")


def test_a_skipped_check_names_the_capability_the_implementation_lacks():
    res = run(_bare_device(), "dev")
    by_id = res.by_id()
    for cap, ids in CAPABILITY_CHECKS.items():
        for req_id in ids:
            v = by_id[req_id]
            assert v.verdict == "skipped" and cap in v.missing and cap.name in v.reason, (req_id, v)
    entry = next(e for e in to_json([res])["requirements"] if e["id"] == "BAL-FPH-DEV-1")
    assert set(entry["missing_capabilities"]) == {"HINTING", "HINT_STOP"}
    out = io.StringIO()
    print_table([res], out)
    line = next(ln for ln in out.getvalue().splitlines() if ln.startswith("BAL-FPH-DEV-1 "))
    assert "skipped" in line and "needs capability HINTING, HINT_STOP" in line
    assert "for want of HINTED_PAGES, HINTING, HINT_STOP, STATS" in out.getvalue()
    # With every capability, nothing is skipped for want of one.
    full = run(BUILTIN["reference", "device"], "dev")
    assert not [v for v in full.verdicts if v.missing]


def test_completeness_counts_checked_of_checkable_in_the_json_and_the_table(tmp_path):
    res = run(BUILTIN["reference", "driver"], "dev")
    checked, checkable = res.completeness
    verdicts = [v.verdict for v in res.verdicts]
    assert checked == verdicts.count("pass") + verdicts.count("fail") > 0
    assert checkable == checked + verdicts.count("skipped") < len(verdicts)
    report = to_json([res])
    assert report["completeness"] == [{"implementation": "reference", "role": "driver", "levels": ["balloon"],
                                       "checked": checked, "checkable": checkable}]
    assert {"summary", "requirements", "errors", "observations", "versions", "seconds"} <= set(report)
    out = io.StringIO()
    print_table([res], out)
    assert f"completeness: {checked} of {checkable} checkable requirements checked" in out.getvalue()
    write_junit([res], tmp_path / "r.xml")
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "r.xml").iter("property")}
    assert props == {"checked": str(checked), "checkable": str(checkable), "levels": "balloon"}


def test_a_run_of_the_reference_merges_both_levels_naming_each(tmp_path):
    path = tmp_path / "r.json"
    # ci, not dev: derandomized, so every virtqueue-only check is reached (a short random run may miss one).
    # The run `virtio-conformance run --role device --profile ci` makes (test_conformance judges it too),
    # written as the CLI writes it.
    res = reference_ci_run("device")
    assert not res.failed
    write_json([res], path)
    report = json.loads(path.read_text())
    levels = {e["id"]: e["level"] for e in report["requirements"]}
    verdicts = {e["id"]: e["verdict"] for e in report["requirements"]}
    queue_only = sorted(i for i in VIRTQUEUE_ONLY if i.startswith("SPLIT-DEV"))
    assert {i: (verdicts[i], levels[i]) for i in queue_only} == {i: ("pass", "virtqueue") for i in queue_only}
    assert levels["BAL-FPH-DEV-2"] == "balloon" and levels["SPLIT-DEV-D4"] in ("balloon", "balloon+virtqueue")
    assert report["completeness"][0]["levels"] == ["balloon", "virtqueue"]


def test_the_balloon_level_alone_says_where_a_virtqueue_check_lives():
    balloon = run(BUILTIN["reference", "driver"], "dev")
    alone = balloon.by_id()
    assert alone["SPLIT-DRV-20"].verdict == "skipped" and "--level virtqueue" in alone["SPLIT-DRV-20"].reason
    queues = run(BUILTIN["virtq-reference", "driver"], "ci")  # derandomized: the check is reached
    merged = merge(balloon, queues).by_id()
    assert merged["SPLIT-DRV-20"].verdict == "pass" and merged["SPLIT-DRV-20"].level == "virtqueue"
    # A mutant is not the reference: its run is the balloon level only.
    assert run_levels(BUILTIN["mutant-stale-actual", "driver"], "dev", max_failures=0).levels == ("balloon",)


def test_merge_prefers_a_failure_then_a_pass_and_keeps_the_level():
    cat = catalogue()
    ids = ("SPLIT-DEV-1", "SPLIT-DEV-3", "SPLIT-DEV-14", "BAL-FPH-DEV-2")
    fail = Failure("SPLIT-DEV-3", "broken", ("state.teardown()",))
    balloon = [Verdict(cat["SPLIT-DEV-1"], "skipped"), Verdict(cat["SPLIT-DEV-3"], "pass"),
               Verdict(cat["SPLIT-DEV-14"], "pass"), Verdict(cat["BAL-FPH-DEV-2"], "pass")]
    queue = [Verdict(cat["SPLIT-DEV-1"], "pass", level="virtqueue"),
             Verdict(cat["SPLIT-DEV-3"], "fail", "broken", fail, level="virtqueue"),
             Verdict(cat["SPLIT-DEV-14"], "pass", level="virtqueue"),
             Verdict(cat["BAL-FPH-DEV-2"], "not-applicable", level="virtqueue")]
    impl = BUILTIN["reference", "device"]
    merged = merge(RunResult(impl, "dev", tuple(balloon), (), 1.0, 1),
                   RunResult(BUILTIN["virtq-reference", "device"], "dev", tuple(queue),
                             (RunError("implementation", "hung", ()),), 2.0, 1, levels=("virtqueue",)))
    got = {i: (merged.by_id()[i].verdict, merged.by_id()[i].level) for i in ids}
    assert got == {"SPLIT-DEV-1": ("pass", "virtqueue"), "SPLIT-DEV-3": ("fail", "virtqueue"),
                   "SPLIT-DEV-14": ("pass", "balloon+virtqueue"), "BAL-FPH-DEV-2": ("pass", "balloon")}
    assert merged.failed and merged.completeness == (4, 4) and merged.seconds == 3.0
    assert merged.errors[0].detail == "virtqueue level (virtq-reference): hung"
