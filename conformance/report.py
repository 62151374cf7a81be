"""Reports: the terminal table, the JSON report (a fixed interface) and JUnit XML.

JSON shape (scripts depend on it; keys are only ever added)::

    {"implementation": str, "role": "device" | "driver" | "device+driver", "profile": str,
     "seed": int | null, "proposals": [str],
     "versions": {implementation: version or description},
     "route": {implementation: route},
     "requirements": [{"id", "verdict", "role", "section", "keyword", "text", "reason",
                       "known_deviation", "known_deviation_entry": {"file", "line", "applies_to": [str]}
                       | null, "level", "missing_capabilities": [str], "profile",
                       "counterexample"?: [str], "implementation"?: str}],
     "errors": [{"implementation", "kind", "detail", "counterexample"}],
     "observations": {topic: [str]},
     "completeness": [{"implementation", "role", "levels": [str], "checked": int, "checkable": int}],
     "summary": {verdict: count}, "seconds": float}

``observations`` records what the implementation chose where the spec leaves a choice: per topic, the
interpretations or properties that held in every example (an empty list: none held throughout).

``verdict`` is one of ``pass``, ``fail``, ``not-applicable``, ``not-checkable``, ``skipped``.

``level`` names the machine the verdict came from: ``balloon`` (a whole device or driver), ``virtqueue``
(one split virtqueue on its own), or ``balloon+virtqueue`` (both passed it). A run of the reference
(``run --dut reference``) also runs its split virtqueues at the virtqueue level and merges the verdicts
(:func:`conformance.runner.merge`): a fail at either level, else a pass at either, else the balloon
level's verdict.

``known_deviation_entry`` names, for a failure a known deviation accepted (``known_deviation`` true), the
line of the ``--known-deviations`` list that accepted it: ``file`` as given (a packaged list's name, or a
path), ``line``, and ``applies_to``, the line's conditions on the build (``["qemu>10.0"]``; empty: every
build). null otherwise (and for IDs passed to :func:`conformance.runner.run` as a plain set).

``missing_capabilities`` lists, for a ``skipped`` verdict, the capabilities
(:class:`refmodel.capabilities.Capability` names) whose absence kept its check from running; empty
otherwise.

``completeness`` is one entry per implementation and role: ``checkable`` counts its requirements that
are applicable to the features in play and checkable per the catalogue (verdict pass, fail or skipped),
``checked`` those with a pass or fail verdict (the JUnit XML carries both as properties of each testsuite).
``route`` names, for a real guest's driver, how it reached the suite (``uml``: User-Mode Linux over
vhost-user; ``qemu-guest``: a QEMU TCG guest over virtio-pci and vhost-user); others have none.
``seed`` is the forced Hypothesis seed (``run --seed``). ``proposals`` names the proposal profiles the run
selected (``run --proposal``, issue 17); each requirement's ``profile`` is its catalogue profile
(``virtio-1.4``, or the proposal's name).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from conformance.runner import VERDICTS, RunResult, implementation_version


def to_json(results: Sequence[RunResult]) -> dict[str, Any]:
    names = sorted({r.implementation.name for r in results})
    roles = "+".join(r.implementation.role for r in results)
    reqs = []
    for res in results:
        for v in res.verdicts:
            r = v.requirement
            entry: dict[str, Any] = {"id": r.id, "verdict": v.verdict, "role": r.role, "section": r.section,
                                     "keyword": r.keyword, "text": r.text, "reason": v.reason,
                                     "known_deviation": v.known_deviation,
                                     "known_deviation_entry": v.deviation.to_json() if v.deviation else None,
                                     "implementation": res.implementation.name, "level": v.level,
                                     "missing_capabilities": [c.name for c in v.missing],
                                     "profile": r.profile}
            if v.failure is not None:
                entry["counterexample"] = list(v.failure.counterexample)
            reqs.append(entry)
    errors = [{"implementation": res.implementation.name, "kind": e.kind, "detail": e.detail,
               "counterexample": list(e.counterexample)} for res in results for e in res.errors]
    summary = Counter(e["verdict"] for e in reqs)
    versions = {r.implementation.name: implementation_version(r.implementation) for r in results}
    completeness = [{"implementation": r.implementation.name, "role": r.implementation.role,
                     "levels": list(r.levels), "checked": r.completeness[0], "checkable": r.completeness[1]}
                    for r in results]
    return {"implementation": "+".join(names), "role": roles, "profile": results[0].profile if results else "",
            "seed": results[0].seed if results else None,
            "proposals": sorted({p for r in results for p in r.proposals}),
            "versions": versions,
            "route": {r.implementation.name: getattr(r.implementation.factory, "route")
                      for r in results if getattr(r.implementation.factory, "route", None)},
            "requirements": reqs, "errors": errors,
            "observations": {f"{r.implementation.name}: {k}" if len(results) > 1 else k: list(v)
                             for r in results for k, v in r.observations.items()},
            "completeness": completeness,
            "interrupted": any(r.interrupted for r in results),
            "summary": {k: summary.get(k, 0) for k in VERDICTS},
            "seconds": round(sum(r.seconds for r in results), 3)}


def write_json(results: Sequence[RunResult], path: Path) -> None:
    _replace(path, json.dumps(to_json(results), indent=2) + "\n")


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a reader (or a run stopped mid-write) never sees half a report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
        props = ET.SubElement(suite, "properties")
        for key, value in (("checked", res.completeness[0]), ("checkable", res.completeness[1]),
                           ("levels", "+".join(res.levels))):
            ET.SubElement(props, "property", name=key, value=str(value))
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
    ET.indent(suites)
    _replace(path, "<?xml version='1.0' encoding='utf-8'?>\n" + ET.tostring(suites, encoding="unicode") + "\n")


_MARK = {"pass": "pass", "fail": "FAIL", "not-applicable": "n/a", "not-checkable": "uncheckable",
         "skipped": "skipped"}


def completeness_line(res: RunResult) -> str:
    checked, checkable = res.completeness
    skipped = [v for v in res.verdicts if v.verdict == "skipped"]
    lacking = sorted({c.name for v in skipped for c in v.missing})
    why = f"; {sum(bool(v.missing) for v in skipped)} for want of {', '.join(lacking)}" if lacking else ""
    return (f"completeness: {checked} of {checkable} checkable requirements checked (pass or fail); "
            f"{checkable - checked} skipped{why}")


def print_table(results: Sequence[RunResult], out: TextIO) -> None:
    for res in results:
        impl = res.implementation
        seed = f", seed {res.seed}" if res.seed is not None else ""
        out.write(f"\n{impl.name} ({impl.role}), {' and '.join(res.levels)} level, {res.profile} profile"
                  f"{seed}, {res.searches} search(es), {res.seconds:.1f} s\n")
        out.write(f"{'requirement':16} {'section':10} {'keyword':10} verdict\n")
        merged = len(res.levels) > 1
        for v in res.verdicts:
            r = v.requirement
            mark = _MARK[v.verdict] + (f" ({v.accepted_by})" if v.known_deviation else "")
            if merged and v.verdict in ("pass", "fail") and v.level != res.levels[0]:
                mark += f" [{v.level}]"
            why = f"  {v.reason}" if v.verdict == "fail" else \
                f"  needs capability {', '.join(c.name for c in v.missing)}" if v.missing else ""
            out.write(f"{r.id:16} {r.section:10} {r.keyword:10} {mark}{why}\n")
        counts = Counter(v.verdict for v in res.verdicts)
        out.write("summary: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in VERDICTS) + "\n")
        out.write(completeness_line(res) + "\n")
        if res.interrupted:
            out.write("INTERRUPTED: the run was stopped before its search ended; these are the verdicts it reached\n")
        for v in res.verdicts:
            if v.failure is not None:
                out.write(f"\ncounterexample for {v.requirement.id} ({v.requirement.cite()}):\n")
                for line in v.failure.counterexample:
                    out.write(f"    {line}\n")
        for e in res.errors:
            out.write(f"\nERROR ({e.kind}): {e.detail}\n")
            for line in e.counterexample:
                out.write(f"    {line}\n")
