"""The build matrix page: every build's verdicts from ``results/matrix/*.json`` (``tools/matrix``), one column
per build, with the rows where builds differ first and marked, and each build's ``checked / checkable``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2] / "results" / "matrix"
#: A verdict that judged the implementation; skipped means a check existed but no example reached it.
JUDGED = ("pass", "fail")


def _esc(text: str) -> str:
    return text.replace("*", "\\*").replace("`", "'").replace("|", "\\|")


def completeness(report: dict[str, Any]) -> tuple[int, int]:
    """(checked, checkable) for one report: checkable = applicable and checkable (judged or skipped)."""
    rows = report["requirements"]
    checked = sum(r["verdict"] in JUDGED for r in rows)
    return checked, checked + sum(r["verdict"] == "skipped" for r in rows)


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    v = r["verdict"]
    if v == "fail" and r.get("known_deviation"):
        return "fail (known)"
    return {"not-applicable": "n/a", "not-checkable": "–"}.get(v, v)


def page() -> str:
    out = ["The build matrix", "================", "",
           "The device suite against every QEMU build Debian ships, the driver suite against every Linux build",
           "on the UML route and on the QEMU-guest route (``linux-qemu-*``: Debian's cloud kernels under QEMU 11.1,",
           "verdicts with the shipped ``linux`` known deviations), and rust-vmm's virtio-queue at the virtqueue",
           "level: ``tools/matrix`` (one pytest",
           "test per build, spread over the cores with pytest-xdist) writes ``results/matrix/BUILD.json``.",
           "Builds come from Debian's registry through ``python -m conformance.provision``.", ""]
    reports = [(p.stem, json.loads(p.read_text())) for p in sorted(ROOT.glob("*.json"))] if ROOT.is_dir() else []
    if not reports:
        return "\n".join(out + ["No matrix results are committed yet.", ""])
    out += [".. list-table:: Builds", "   :header-rows: 1", "", "   * - build", "     - implementation",
            "     - profile", "     - checked / checkable", "     - pass", "     - fail", "     - skipped"]
    for name, rep in reports:
        checked, checkable = completeness(rep)
        counts = {k: sum(r["verdict"] == k for r in rep["requirements"]) for k in ("pass", "fail", "skipped")}
        what = "; ".join(str(v) for v in rep.get("versions", {}).values())
        out += [f"   * - ``{name}``", f"     - {_esc(what)}", f"     - {rep.get('matrix', {}).get('profile', '')}",
                f"     - {checked} / {checkable}", f"     - {counts['pass']}", f"     - {counts['fail']}",
                f"     - {counts['skipped']}"]
    out.append("")
    tables = [{r["id"]: r for r in rep["requirements"]} for _, rep in reports]
    groups: dict[str, list[int]] = {}
    for i, (_, rep) in enumerate(reports):  # compare like with like: same role and level
        level = rep.get("matrix", {}).get("level", "balloon")
        groups.setdefault(f"{rep.get('role', '')}, {level} level", []).append(i)
    for group, members in groups.items():
        ids = sorted({rid for i in members for rid, r in tables[i].items() if r["verdict"] in JUDGED + ("skipped",)})
        differ = [rid for rid in ids if len({_cell(tables[i].get(rid)) for i in members}) > 1]
        same = [rid for rid in ids if rid not in differ]
        title = f"Verdicts: {group or 'builds'}"
        out += [title, "-" * len(title), "",
                f"{len(differ)} requirement(s) where these builds differ (marked **≠**, listed first), "
                f"{len(same)} where they agree.", "",
                ".. list-table::", "   :header-rows: 1", "", "   * - requirement"]
        out += [f"     - {reports[i][0]}" for i in members]
        for rid in differ + same:
            mark = " **≠**" if rid in differ else ""
            out += [f"   * - ``{rid}``{mark}"] + [f"     - {_cell(tables[i].get(rid))}" for i in members]
        out.append("")
    return "\n".join(out)
