"""Reports: the terminal table, the JSON report (a fixed interface) and JUnit XML.

JSON shape (scripts depend on it)::

    {"implementation": str, "role": "device" | "driver" | "device+driver", "profile": str,
     "versions": {implementation: version or description},
     "requirements": [{"id", "verdict", "role", "section", "keyword", "text", "reason",
                       "known_deviation", "counterexample"?: [str], "implementation"?: str}],
     "errors": [{"implementation", "kind", "detail", "counterexample"}],
     "observations": {topic: [str]},
     "summary": {verdict: count}, "seconds": float}

``observations`` records what the implementation chose where the spec leaves a choice: per topic, the
interpretations or properties that held in every example (an empty list: none held throughout).

``verdict`` is one of ``pass``, ``fail``, ``not-applicable``, ``not-checkable``, ``skipped``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from conformance.runner import VERDICTS, RunResult


def to_json(results: Sequence[RunResult]) -> dict[str, Any]:
    names = sorted({r.implementation.name for r in results})
    roles = "+".join(r.implementation.role for r in results)
    reqs = []
    for res in results:
        for v in res.verdicts:
            r = v.requirement
            entry: dict[str, Any] = {"id": r.id, "verdict": v.verdict, "role": r.role, "section": r.section,
                                     "keyword": r.keyword, "text": r.text, "reason": v.reason,
                                     "known_deviation": v.known_deviation, "implementation": res.implementation.name}
            if v.failure is not None:
                entry["counterexample"] = list(v.failure.counterexample)
            reqs.append(entry)
    errors = [{"implementation": res.implementation.name, "kind": e.kind, "detail": e.detail,
               "counterexample": list(e.counterexample)} for res in results for e in res.errors]
    summary = Counter(e["verdict"] for e in reqs)
    versions = {r.implementation.name: getattr(r.implementation.factory, "version", None) or r.implementation.description
                for r in results}
    return {"implementation": "+".join(names), "role": roles, "profile": results[0].profile if results else "",
            "versions": versions,
            "requirements": reqs, "errors": errors,
            "observations": {f"{r.implementation.name}: {k}" if len(results) > 1 else k: list(v)
                             for r in results for k, v in r.observations.items()}, "summary": {k: summary.get(k, 0) for k in VERDICTS},
            "seconds": round(sum(r.seconds for r in results), 3)}


def write_json(results: Sequence[RunResult], path: Path) -> None:
    path.write_text(json.dumps(to_json(results), indent=2) + "\n", encoding="utf-8")


def write_junit(results: Sequence[RunResult], path: Path) -> None:
    suites = ET.Element("testsuites")
    for res in results:
        cases = res.verdicts
        suite = ET.SubElement(suites, "testsuite", name=f"virtio-conformance {res.implementation.name} "
                              f"({res.implementation.role})", tests=str(len(cases)),
                              failures=str(sum(v.verdict == "fail" for v in cases)),
                              errors=str(len(res.errors)),
                              skipped=str(sum(v.verdict not in ("pass", "fail") for v in cases)),
                              time=f"{res.seconds:.3f}")
        for v in cases:
            r = v.requirement
            case = ET.SubElement(suite, "testcase", classname=f"{res.implementation.name}.{r.role}",
                                 name=f"{r.id} §{r.section} {r.keyword}")
            if v.verdict == "fail":
                f = ET.SubElement(case, "failure", message=f"{r.id}: {v.reason}")
                f.text = "\n".join(v.failure.counterexample) if v.failure else v.reason
            elif v.verdict != "pass":
                ET.SubElement(case, "skipped", message=f"{v.verdict}: {v.reason}")
        for e in res.errors:
            case = ET.SubElement(suite, "testcase", classname=res.implementation.name, name=f"error: {e.kind}")
            err = ET.SubElement(case, "error", message=e.detail)
            err.text = "\n".join(e.counterexample)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


_MARK = {"pass": "pass", "fail": "FAIL", "not-applicable": "n/a", "not-checkable": "uncheckable",
         "skipped": "skipped"}


def print_table(results: Sequence[RunResult], out: TextIO) -> None:
    for res in results:
        impl = res.implementation
        out.write(f"\n{impl.name} ({impl.role}), {res.profile} profile, {res.searches} search(es), "
                  f"{res.seconds:.1f} s\n")
        out.write(f"{'requirement':16} {'section':10} {'keyword':10} verdict\n")
        for v in res.verdicts:
            r = v.requirement
            mark = _MARK[v.verdict] + (" (known deviation)" if v.known_deviation else "")
            why = f"  {v.reason}" if v.verdict == "fail" else ""
            out.write(f"{r.id:16} {r.section:10} {r.keyword:10} {mark}{why}\n")
        counts = Counter(v.verdict for v in res.verdicts)
        out.write("summary: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in VERDICTS) + "\n")
        for v in res.verdicts:
            if v.failure is not None:
                out.write(f"\ncounterexample for {v.requirement.id} ({v.requirement.cite()}):\n")
                for line in v.failure.counterexample:
                    out.write(f"    {line}\n")
        for e in res.errors:
            out.write(f"\nERROR ({e.kind}): {e.detail}\n")
            for line in e.counterexample:
                out.write(f"    {line}\n")
