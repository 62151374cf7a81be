"""Generate the reference pages from the model itself at build time, so docs cannot drift:

* ``generated/diagrams.rst``: state diagrams (graphviz) from the transition tables in ``refmodel``;
* ``generated/catalogue.rst``: every requirement with its section, scope and where it is checked;
* ``generated/ambiguities.rst``: every choice the model makes where the spec is silent;
* ``generated/verdicts.rst``: a fresh conformance run of the reference device and driver.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from conformance.checks import DEVICE_CHECKS, DRIVER_CHECKS, NOT_YET
from refmodel.ambiguities import AMBIGUITIES
from refmodel.hinting import DEVICE_TRANSITIONS, DRIVER_TRANSITIONS
from refmodel.status import STATUS_TRANSITIONS
from spec.catalogue import catalogue


def _dot(name: str, table: dict, label: Any) -> str:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (src, event), dst in table.items():
        if src != dst or "RECV" not in str(event):  # self-loops of ignored input would drown the picture
            edges[src.name, dst.name].append(label(event))
    lines = [f".. graphviz::\n   :caption: {name}\n", "   digraph {", "      rankdir=LR; node [shape=box];"]
    for (a, b), events in sorted(edges.items()):
        text = "\\n".join(sorted(set(events)))
        lines.append(f'      "{a}" -> "{b}" [label="{text}", fontsize=9];')
    lines.append("   }\n")
    return "\n".join(lines)


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("`", "'").replace("_", "\\_")


def diagrams() -> str:
    out = ["State diagrams", "==============", "",
           "Drawn at build time from the transition tables, so the pictures are the model. Self-loops for",
           "input a side ignores are left out.", ""]
    out += ["Device status lifecycle (§2.1, §3.1)", "-------------------------------------", "",
            "From ``refmodel.status.STATUS_TRANSITIONS``; events say which side causes them.", "",
            _dot("status", STATUS_TRANSITIONS, lambda e: f"{e.role.value}: {e.value[1]}")]
    out += ["Free page hinting, device side (§5.5.6.5)", "-----------------------------------------", "",
            "From ``refmodel.hinting.DEVICE_TRANSITIONS``.", "",
            _dot("hinting, device", DEVICE_TRANSITIONS, lambda e: e.value)]
    out += ["Free page hinting, driver side", "------------------------------", "",
            "From ``refmodel.hinting.DRIVER_TRANSITIONS``.", "",
            _dot("hinting, driver", DRIVER_TRANSITIONS, lambda e: e.value)]
    return "\n".join(out)


def catalogue_page() -> str:
    out = ["Requirement catalogue", "=====================", "",
           "Every normative statement the suite knows, from ``spec/requirements.toml``. *Checked by* names the",
           "check in the conformance machines; requirements without one say why. IDs ending in ``-D<n>`` are",
           "derived: implied by the text without a keyword.", ""]
    by_section: dict[str, list] = defaultdict(list)
    for r in catalogue().values():
        by_section[r.profile if r.profile != "virtio-1.4" else r.section.split(".")[0]].append(r)
    for key in sorted(by_section, key=lambda k: (not k[0].isdigit(), k.zfill(4))):
        title = f"Section {key}" if key[0].isdigit() else f"Profile {key}"
        out += [title, "-" * len(title), "", ".. list-table::", "   :header-rows: 1", "   :widths: 14 8 9 10 39 20", "",
                "   * - ID", "     - §", "     - role", "     - keyword", "     - requirement", "     - checked by"]
        for r in by_section[key]:
            table = DEVICE_CHECKS if r.role == "device" else DRIVER_CHECKS
            where = table.get(r.id) or (f"not yet: {NOT_YET[r.id]}" if r.id in NOT_YET else "")
            if not r.checkable:
                where = f"not checkable: {r.reason}"
            elif r.legacy:
                where = "legacy interface: not modelled"
            elif not where:
                where = "model tests (``tests/``)" if r.profile != "virtio-1.4" else "no check"
            out += [f"   * - ``{r.id}``", f"     - {r.section}", f"     - {r.role}", f"     - {r.keyword}",
                    f"     - {_esc(r.text)}", f"     - {_esc(where)}"]
        out.append("")
    return "\n".join(out)


def ambiguities_page() -> str:
    out = ["Ambiguities", "===========", "",
           "Where the spec leaves a choice open, the model makes one and names it here. The proposal to the",
           "virtio TC resolves each.", ""]
    for a in AMBIGUITIES:
        out += [a.id, "-" * len(a.id), "", f"**§{a.section}.** {_esc(a.question)}", "",
                f"**Model's choice:** {_esc(a.choice)}", ""]
        if a.alternatives:
            out += ["**Alternatives:** " + "; ".join(_esc(x) for x in a.alternatives), ""]
    return "\n".join(out)


def verdicts_page() -> str:
    from conformance.registry import resolve
    from conformance.runner import run

    out = ["Verdicts: reference implementations", "===================================", "",
           "A fresh run (``ci`` profile) of the suite against the reference device and driver, made when these",
           "pages were built.", ""]
    for role in ("device", "driver"):
        res = run(resolve("reference", role), "ci")
        counts: dict[str, int] = defaultdict(int)
        for v in res.verdicts:
            counts[v.verdict] += 1
        title = f"Reference {role}"
        out += [title, "-" * len(title), "",
                ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f" ({res.seconds:.1f} s).", "",
                ".. list-table::", "   :header-rows: 1", "   :widths: 20 10 12 58", "",
                "   * - ID", "     - §", "     - verdict", "     - note"]
        for v in res.verdicts:
            out += [f"   * - ``{v.requirement.id}``", f"     - {v.requirement.section}", f"     - {v.verdict}",
                    f"     - {_esc(v.reason)}"]
        out.append("")
    return "\n".join(out)


def results_page() -> str:
    import json

    root = Path(__file__).resolve().parents[2] / "results"
    out = ["Verdicts: committed results", "===========================", "",
           "Reports committed under ``results/`` (see its README for how to regenerate them), one column per",
           "report. Only requirements of the role under test are listed.", ""]
    reports = [(p.stem, json.loads(p.read_text())) for p in sorted(root.glob("*.json"))]
    if not reports:
        return "\n".join(out + ["No committed reports.", ""])
    for name, rep in reports:
        summary = ", ".join(f"{n} {k}" for k, n in rep.get("summary", {}).items())
        out += [f"* ``{name}``: {', '.join(str(v) for v in rep.get('versions', {}).values())}; {summary}."]
    out += ["", ".. list-table::", "   :header-rows: 1", "", "   * - ID", "     - §"]
    out += [f"     - {name}" for name, _ in reports]
    ids: dict[str, str] = {}
    verdicts = [{r["id"]: r for r in rep["requirements"]} for _, rep in reports]
    for table in verdicts:
        for req_id, r in table.items():
            ids.setdefault(req_id, r["section"])
    for req_id, section in ids.items():
        out += [f"   * - ``{req_id}``", f"     - {section}"]
        for table in verdicts:
            r = table.get(req_id)
            cell = "" if r is None else r["verdict"] + (" (known deviation)" if r.get("known_deviation") else "")
            out.append(f"     - {cell}")
    return "\n".join(out + [""])


def proposal_page() -> str:
    root = Path(__file__).resolve().parents[2] / "spec" / "proposal"
    out = ["The proposal to the virtio TC", "=============================", "",
           "A ``git format-patch`` series against the virtio 1.4 balloon section, built by",
           "``python -m spec.proposal.build`` from ``spec/proposal/edits.py``. Each new normative sentence is",
           "marked with its catalogue ID (profile ``proposal`` in :doc:`catalogue`). The ``Fixes:`` lines say that",
           "no virtio-spec issue has been opened yet: open one, rebuild with ``--fixes URL``, then send with",
           "``git send-email spec/proposal/*.patch``.", ""]
    for patch in sorted(root.glob("0*.patch")):
        out += [patch.name, "-" * len(patch.name), "", f".. literalinclude:: ../../spec/proposal/{patch.name}",
                "   :language: diff", ""]
    return "\n".join(out)


def generate(app: Any) -> None:
    target = Path(app.srcdir) / "generated"
    target.mkdir(exist_ok=True)
    for name, make in (("diagrams", diagrams), ("catalogue", catalogue_page), ("ambiguities", ambiguities_page),
                       ("verdicts", verdicts_page), ("results", results_page),
                       ("proposal", proposal_page)):
        text = make()
        path = target / f"{name}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True}
