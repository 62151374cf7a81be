"""Generate the reference pages from the model itself at build time, so docs cannot drift:

* ``generated/diagrams.rst``: state diagrams (graphviz) from the transition tables in ``refmodel``;
* ``generated/catalogue.rst``: every requirement with its section, scope and where it is checked;
* ``generated/ambiguities.rst``: every choice the model makes where the spec is silent;
* ``generated/verdicts.rst``: a fresh conformance run of the reference device and driver;
* ``generated/results.rst``, ``generated/migration.rst``: the committed results, with plots (``plots.py``);
* ``generated/adapter-reference.inc``: the adapter Protocols, for "Writing an adapter" (``adapterdoc.py``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import adapterdoc
import matrixdoc
import plots
from plots import Bar, Mark, Series

from conformance.checks import DEVICE_CHECKS, DRIVER_CHECKS, NOT_YET, PROPOSAL_CHECKED_AS
from conformance.trace import conformance_checks, model_rules, verifying_tests
from refmodel.ambiguities import AMBIGUITIES
from refmodel.system.guest import DEVICE_MAY_DISCARD, PAGE_TRANSITIONS
from refmodel.balloon.hinting import DEVICE_TRANSITIONS, DRIVER_TRANSITIONS
from refmodel.virtio.status import STATUS_TRANSITIONS
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
            "From ``refmodel.virtio.status.STATUS_TRANSITIONS``; events say which side causes them.", "",
            _dot("status", STATUS_TRANSITIONS, lambda e: f"{e.role.value}: {e.value[1]}")]
    out += ["Free page hinting, device side (§5.5.6.5)", "-----------------------------------------", "",
            "From ``refmodel.balloon.hinting.DEVICE_TRANSITIONS``.", "",
            _dot("hinting, device", DEVICE_TRANSITIONS, lambda e: e.value)]
    out += ["Free page hinting, driver side", "------------------------------", "",
            "From ``refmodel.balloon.hinting.DRIVER_TRANSITIONS``.", "",
            _dot("hinting, driver", DRIVER_TRANSITIONS, lambda e: e.value)]
    out += ["A guest page: hinting and reporting (§5.5.6.5, §5.5.6.7)",
            "--------------------------------------------------------", "",
            "From ``refmodel.system.guest.PAGE_TRANSITIONS``, which the model's page allocator goes through for every",
            "change. The two semantics are the two states in which the device may change a page's contents",
            "(``DEVICE_MAY_DISCARD``):", ""]
    out += [f"* **{state.value}**: {_esc(why)}." for state, why in DEVICE_MAY_DISCARD.items()]
    out += ["", _dot("guest page", PAGE_TRANSITIONS, lambda e: e.value)]
    return "\n".join(out)


def _status(r: Any, tests: dict[str, list[str]]) -> str:
    """How a requirement is covered: checked, tested, not yet, not checkable, legacy, or no check."""
    if r.legacy:
        return "legacy"
    if not r.checkable:
        return "not checkable"
    if r.id in DEVICE_CHECKS or r.id in DRIVER_CHECKS or r.id in PROPOSAL_CHECKED_AS:
        return "checked"
    if r.id in NOT_YET:
        return "not yet"
    return "tested" if r.id in tests else "no check"


def _coverage() -> dict[str, int]:
    tests = verifying_tests()
    counts: dict[str, int] = defaultdict(int)
    for r in catalogue().values():
        counts[_status(r, tests)] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _need_id(kind: str, qualname: str) -> str:
    return f"{kind}.{qualname}"


def catalogue_page() -> str:
    """Every requirement as a sphinx-needs ``req``, with its coverage status and how it is checked."""
    tests = verifying_tests()
    out = ["Requirement catalogue", "=====================", "",
           "Every normative statement the suite knows, from ``spec/requirements.toml``. Each one links to the",
           "model rules that enforce it, the conformance rules that check it and the tests that verify it",
           "(:doc:`traceability`). IDs ending in ``-D<n>`` are derived: implied by the text without a keyword.", ""]
    by_section: dict[str, list] = defaultdict(list)
    for r in catalogue().values():
        by_section[r.profile if r.profile != "virtio-1.4" else r.section.split(".")[0]].append(r)
    for key in sorted(by_section, key=lambda k: (not k[0].isdigit(), k.zfill(4))):
        title = f"Section {key}" if key[0].isdigit() else f"Profile {key}"
        out += [title, "-" * len(title), ""]
        for r in by_section[key]:
            status = _status(r, tests)
            out += [f".. req:: {_title(r.text)}", f"   :id: {r.id}", f"   :section: {r.section}",
                    f"   :role: {r.role}", f"   :keyword: {r.keyword}", f"   :profile: {r.profile}",
                    f"   :status: {status}", "", f"   {_esc(r.text)}", ""]
            table = DEVICE_CHECKS if r.role == "device" else DRIVER_CHECKS
            if r.id in table:
                out += [f"   **Checked by:** {_esc(table[r.id])}.", ""]
            if r.id in PROPOSAL_CHECKED_AS:
                out += [f"   **Checked as:** :need:`{PROPOSAL_CHECKED_AS[r.id]}` (the check tests the tighter "
                        "reading).", ""]
            if status == "not yet":
                out += [f"   **Not checked yet:** {_esc(NOT_YET[r.id])}.", ""]
            if r.reason:
                out += [f"   **Why not checkable:** {_esc(r.reason)}", ""]
            if r.derived:
                out += [f"   **Derived from:** {_esc(r.derived)}", ""]
    return "\n".join(out)


def _title(text: str, limit: int = 90) -> str:
    one = " ".join(text.split()).replace("`", "'").replace("*", "")
    return one if len(one) <= limit else one[:limit].rsplit(" ", 1)[0] + " ..."


def traceability_page() -> str:
    """Model rules, conformance rules and tests as needs linked to the requirements, and the matrix."""
    def by_site(index: dict[str, list]) -> dict[str, tuple[Any, list[str]]]:
        sites: dict[str, tuple[Any, list[str]]] = {}
        for req_id, found in sorted(index.items()):
            for site in found:
                sites.setdefault(site.qualname, (site, []))[1].append(req_id)
        return sites

    out = ["Traceability", "============", "",
           "Read from the source when these pages were built (``conformance/trace.py``): a *model rule* is a",
           "function of ``refmodel`` that names the requirement, a *conformance rule* one of ``conformance``, and",
           "a *test* one marked ``@pytest.mark.verifies``. Links are sphinx-needs links; each requirement in",
           ":doc:`catalogue` lists them back.", "",
           "Requirements not covered", "------------------------", "",
           "Everything without a check: not checkable through any interface, not checked yet (with the",
           "reason in the catalogue), legacy, or covered only by tests.", "",
           ".. needtable::", "   :types: req", '   :filter: status != "checked"',
           "   :columns: id, title, section, role, keyword, status", "   :style: table", "",
           "Coverage by status", "------------------", "",
           *[f"* {status}: {n}" for status, n in _coverage().items()], "",
           "Full matrix", "-----------", "",
           ".. needtable::", "   :types: req", "   :columns: id, section, status, enforces_back as \"model rules\", "
           "checks_back as \"conformance rules\", verifies_back as \"tests\"", "   :style: table", ""]
    for kind, title, index, link in (("rule", "Model rules", model_rules(), "enforces"),
                                     ("check", "Conformance rules", conformance_checks(), "checks")):
        out += [title, "-" * len(title), ""]
        for qual, (site, ids) in sorted(by_site(index).items()):
            out += [f".. {kind}:: {qual}", f"   :id: {_need_id(kind, qual)}", f"   :{link}: {', '.join(ids)}", "",
                    f"   ``{site.where}``", ""]
    out += ["Tests", "-----", ""]
    tests: dict[str, list[str]] = defaultdict(list)
    for req_id, nodes in verifying_tests().items():
        for node in nodes:
            tests[node].append(req_id)
    for node, ids in sorted(tests.items()):
        name = node.split("::")[-1]
        out += [f".. test:: {name}", f"   :id: {_need_id('test', node.replace('/', '.').replace('::', '.'))}",
                f"   :verifies: {', '.join(sorted(set(ids)))}", "", f"   ``{node}``", ""]
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
    reports = [(name, rep) for name, rep in reports if "requirements" in rep]  # not the migration figures
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
    out += _typeset_proposal()
    for patch in sorted(root.glob("0*.patch")):
        out += [patch.name, "-" * len(patch.name), "", f".. literalinclude:: ../../spec/proposal/{patch.name}",
                "   :language: diff", ""]
    return "\n".join(out)


def _typeset_proposal() -> list[str]:
    """The patched balloon section as a PDF (``spec.proposal.latex``), when pdflatex is installed."""
    import tempfile

    from spec.proposal.build import DEFAULT_UPSTREAM
    from spec.proposal.latex import LatexError, apply_series, typeset

    target = Path(__file__).resolve().parents[1] / "generated" / "balloon-proposal.pdf"
    try:
        with tempfile.TemporaryDirectory() as d:
            apply_series(DEFAULT_UPSTREAM, Path(d))
            typeset(Path(d), target)
    except (LatexError, OSError) as e:
        return [f"The typeset section could not be built here ({_esc(str(e))}); "
                "``python -m spec.proposal.latex`` builds it where pdflatex is installed.", ""]
    return ["The balloon section with the series applied, typeset with the spec's own macros by",
            "``python -m spec.proposal.latex``: :download:`balloon-proposal.pdf <balloon-proposal.pdf>`.", ""]


def _qemu(version: str) -> str:
    """``QEMU 7.2.22`` from QEMU's own version line."""
    return version.split("(")[0].replace("emulator version ", "").strip()


def migration_page(target: Path) -> str:
    """Real-guest migration figures (bench/bench_linux_migration.py --json), as plots, against the honest
    ideal, with the timing model's predictions and the host orderings it was used to find."""
    import json

    root = Path(__file__).resolve().parents[2] / "results"
    out = ["Migrations", "==========", "",
           "*Honest ideal* (``refmodel.system.migration.HonestIdeal``): the pages in use at switchover with",
           "non-zero contents, plus the resends the dirty log forces (pages in use and unhinted through the",
           "bulk pass and written after it). It is a lower bound, property-tested against every schedule and",
           "policy of the model that loses nothing. The old figure, *in use + dirtied*, is shown beside it;",
           "it is not a lower bound (pages dirtied, then freed and hinted, need not be sent at all). For",
           "real runs it is estimated from counts: RAM - MemFree at the start, plus what the run without",
           "hints sent beyond one send per page.",
           ""]
    out += _qtest_migrations(root, target)
    out += ["Real-guest migrations", "---------------------", "",
            "Linux's own driver in a QEMU TCG guest, migrated with free page hinting on, off, and with",
            "free page reporting, beside the models' predictions for the same workload. Made by",
            "``bench/bench_linux_migration.py --json results/migration-linux-....json``; see",
            ":doc:`../linux`. *Timing model* is ``refmodel.system.timing`` with its defaults, the median",
            "of the calibrations ``bench/bench_timing_model.py`` fits to each committed QEMU 11.1 run",
            "(``results/timing-model.txt`` predicts each run from the other runs' median instead), run at",
            "the CPU shares each run got where they were recorded: the driver's vCPU",
            "and QEMU's migration thread, from QEMU's per-thread times (``refmodel.system.timing.Load``;",
            "the machine's 2 cores are shared with other work). Those shares do not carry the host's speed",
            "from one run to the next: per CPU second of the migration thread, the pass with the driver",
            "hinting ran 0.28-2.1 times as fast as without hints in the same experiment",
            "(``results/timing-model.txt``), so hinting's predictions miss by up to 30%. *hint-ordered* is",
            "the hinting guest under a host ordering (below), *off-ordered* a guest that never hints under",
            "the same one: its bound.",
            ""]
    before = len(out)
    for path in sorted(root.glob("migration-linux-*.json")):
        out += _real_run(path, target)
    if len(out) == before:
        out += ["No committed real-guest migration results.", ""]
    out += _real_orderings(root, target)
    out += _orderings_section()
    return "\n".join(out)


def _real_run(path: Path, target: Path) -> list[str]:
    import json

    from refmodel.system.migration import HonestIdeal
    from refmodel.system.real_runs import measured_load, modelled

    d = json.loads(path.read_text())
    by = {r["mode"]: r for r in d["runs"]}
    a, hint, off = d["args"], by["hint"], by["off"]
    n_pages = (a["mem_mib"] << 20) // 4096

    def honest(r: dict) -> int:
        estimate = HonestIdeal.estimated(r["ideal"], off["full_pages"], off["zero_pages"], n_pages)
        return r.get("honest_ideal") or estimate.pages

    def timing(r: dict) -> int:
        return round(modelled(a, r).full_pages)  # at the CPU shares the run got, where recorded

    def cells(*values: str) -> list[str]:
        return [f"     - {v}" for v in values]

    title = f"{d['qemu'].split('(')[0].strip()}, guest {hint['kernel']}, {a['mem_mib']} MiB"
    checked = all("compare" in r for r in d["runs"])
    intro = (f"{a['mem_mib']} MiB guest, {a['keep_mib']} MiB kept in use, {a['fill_mib']} MiB written and "
             f"freed {a['settle']:g} s before the migration; migration to ``exec:cat`` with no bandwidth "
             "cap unless an ordering set one. Full pages are the ones QEMU sends whole (zero pages go as a "
             "flag).")
    if checked:
        intro += " Every run's stream was loaded into a paused destination QEMU and every page compared."
    out = [title, "~" * len(title), "", intro, "", ".. list-table::", "   :header-rows: 1", "", "   * - run",
           *cells("MB sent", "full pages", "seconds", "x honest ideal", "x old ideal", "timing model")]
    out += cells("pages differing") if checked else []
    for mode, r in by.items():
        out += [f"   * - {mode}", *cells(f"{r['mb']:.1f}", f"{r['full_pages']:,}", f"{r['wall']:.2f}",
                                        f"{r['full_pages'] / honest(r):.2f}",
                                        f"{r['full_pages'] / r['ideal']:.2f}", f"{timing(r):,}")]
        out += cells(str(r["compare"]["lost"])) if checked else []
    for label, pages in (("page model, no hints", d["model_off"]),
                         ("page model, every held hint before the bulk pass", d["model_hint"])):
        out += [f"   * - {label}", "     -", *cells(f"{pages:,}"), "     -",
                *cells(f"{pages / honest(hint):.2f}", f"{pages / hint['ideal']:.2f}"), "     -"]
        out += ["     -"] if checked else []
    out.append("")
    stem, qemu = path.stem, _qemu(d["qemu"])
    rows = [Bar("honest ideal", honest(hint), "ideal"), Bar("timing model: hinting", timing(hint), "model"),
            Bar("measured: hinting", hint["full_pages"], "measured")]
    if "hint-ordered" in by:
        rows += [Bar("timing model: hint-ordered", timing(by["hint-ordered"]), "model"),
                 Bar("measured: hint-ordered", by["hint-ordered"]["full_pages"], "measured")]
    rows += [Bar("measured: reporting", by["report"]["full_pages"], "measured"),
             Bar("timing model: no hints", timing(off), "model"),
             Bar("measured: no hints", off["full_pages"], "measured")]
    plots.bars(target / f"{stem}-bars.svg", rows,
               f"{a['mem_mib']} MiB Linux {hint['kernel']} guest migrated by {qemu}")
    held, free = hint["hinted_max"], hint["free_before"] // 4096
    t90 = next((t for t, b in hint["hint_curve"] if held and b // 4096 >= 0.9 * held), None)
    mib = 4096 / 2**20
    marks = [Mark(hint["wall"], f"migration ends ({hint['wall']:.2f} s)", "#444444")]
    if t90 is not None:
        marks.append(Mark(t90, f"the driver holds 90% of its hints ({t90:.2f} s)", "#aa7722", ":"))
    plots.lines(target / f"{stem}-timeline.svg", [
        Series("sent in full (hinting run)", [(t, n * mib) for t, n in hint["progress"]], "#2277aa"),
        Series("held as hints by the driver", [(t, b / 2**20) for t, b in hint["hint_curve"]], "#aa7722")],
        f"The hinting run over time ({qemu}, {a['mem_mib']} MiB guest)", "seconds since migrate", "MiB",
        marks=marks)
    t90_s = "never" if t90 is None else f"{t90:.2f} s"
    text = (f"With hinting on, QEMU sent {hint['full_pages'] - honest(hint):,} full pages beyond the honest "
            f"ideal. The driver held {held:,} pages as hints, {held / max(free, 1):.0%} of the guest's free "
            f"memory, and reached 90% of that at {t90_s} into a {hint['wall']:.2f} s migration. Linux hands "
            "out its freed memory top down while QEMU's bulk pass walks up; the round ends when the pass "
            "does, and the freed memory the pass reached before the driver did is sent in full.")
    if "hint-ordered" in by:
        ho, oo = by["hint-ordered"], by["off-ordered"]
        o, b = ho["ordering"], oo["ordering"]
        what = (f"max-bandwidth capped at {o['cap_bps'] / 1e9:g} GB/s" if "cap_bps" in o
                else f"the pass paced at {o['share']:g} x the hint rate")
        first = "never" if o["first_hint_s"] is None else f"{o['first_hint_s']:.2f} s"
        text += (f" Under the ordering ({what}), the hinting guest sent "
                 f"{ho['full_pages'] / honest(ho):.2f} x the honest ideal in {ho['wall']:.2f} s; the cap was "
                 f"lifted at {o['lifted_s']:.2f} s ({o['lifted_because']}), the first hint seen at {first}. "
                 f"The guest that never hints had its cap lifted at {b['lifted_s']:.2f} s "
                 f"({b['lifted_because']}) and migrated in "
                 f"{oo['wall']:.2f} s, against {off['wall']:.2f} s without the ordering.")
    loads = {m: measured_load(r) for m, r in by.items()}
    if all(v is not None for v in loads.values()):
        text += (" CPU the run got (QEMU's threads, CPU seconds per second; the timing model takes these as "
                 "inputs): " + "; ".join(
                     f"{m}: " + (f"driver's vCPU {v.vcpu:.2f}, " if m.startswith("hint") else "")
                     + f"migration thread {v.migration:.2f}" for m, v in loads.items() if v is not None) + ".")
        if "load_avg" in d:
            la = d["load_avg"]
            text += (f" Load average {la['start'][0]:.1f} at the start and {la['end'][0]:.1f} at the end, on "
                     f"{la['cores']} cores, at niceness {la['nice']}.")
    model_off_s = timing_wall(d, off)
    if off["wall"] > 3 * model_off_s and loads["off"] is None:
        text += (f" This run's machine was loaded: without hints it took {off['wall']:.2f} s where the "
                 f"timing model says {model_off_s:.2f} s, and the modes ran at different speeds, so its "
                 "seconds and its hint-on bytes compare only roughly.")
    return out + [f".. image:: {stem}-bars.svg", f"   :alt: full pages sent, {a['mem_mib']} MiB guest", "",
                  f".. image:: {stem}-timeline.svg", "   :alt: MiB sent and held as hints, over time", "",
                  text, ""]


ORDERED_MODES = ("hint-ordered", "off-ordered")


def _real_orderings(root: Path, target: Path) -> list[str]:
    """Every committed real run with an ordering, side by side: x honest ideal and seconds per kernel and
    guest size, for hinting off, QEMU's default and the ordering (bench_linux_migration.py --ordering)."""
    import json

    from refmodel.system.migration import HonestIdeal

    rows = []
    for path in sorted(root.glob("migration-linux-*.json")):
        d = json.loads(path.read_text())
        by = {r["mode"]: r for r in d["runs"]}
        if "hint-ordered" not in by:
            continue
        a, off = d["args"], by["off"]
        n_pages = (a["mem_mib"] << 20) // 4096

        def x(r: dict) -> float:
            est = HonestIdeal.estimated(r["ideal"], off["full_pages"], off["zero_pages"], n_pages).pages
            return r["full_pages"] / (r.get("honest_ideal") or est)

        o = by["hint-ordered"]["ordering"]
        what = (f"cap {o['cap_bps'] / 1e9:g} GB/s" if "cap_bps" in o else f"pace {o['share']:g}") + \
            (", guest clock" if o.get("clock") == "guest" else "") + \
            (", vCPUs pinned, file: sink" if a.get("pin") and a.get("sink") == "file" else "")
        kernel = ".".join(by["hint"]["kernel"].split("-")[0].split("+")[0].split(".")[:2])
        size = f"{a['mem_mib'] // 1024} GiB" if a["mem_mib"] % 1024 == 0 else f"{a['mem_mib']} MiB"
        label = f"Linux {kernel}, {size}"
        lost = None
        if all("compare" in r for r in d["runs"]):
            lost = tuple(sum(r["compare"]["lost"] for r in d["runs"] if (r["mode"] in ORDERED_MODES) == o)
                         for o in (True, False))
        la = d.get("load_avg")
        rows.append((label, what, {m: (x(r), r["wall"]) for m, r in by.items()}, lost,
                     None if la is None else (la["start"][0], la["end"][0])))
    if not rows:
        return []
    out = ["Orderings on real guests", "------------------------", "",
           "Each committed real run with a host ordering, side by side in one invocation: full pages over the",
           "honest ideal and seconds, for hinting off, QEMU's default hinting and hinting under the ordering",
           "(*never hints*: a guest without hinting under the same ordering, its bound). The target is at",
           "most 1.5 x the honest ideal, in no more time than hinting off. The machine has 2 cores shared with",
           "other work; each run's load average is given, and its CPU shares are in its section above.",
           "*vCPUs pinned, file: sink* (``--pin --sink file``): the vCPUs on one core, QEMU's other threads on",
           "the other, and the stream written by QEMU itself; the other runs wrote it through ``exec:cat``,",
           "whose copy competed with the vCPUs for the cores, which slowed the pass and favoured hints.",
           "Pages differing at the destination are counted in the ordered runs and in the others (off,",
           "default hinting, reporting) apart: the others' counts, with no ordering and some with no hints",
           "at all, are described in each run's section and in ``results/README.md``.",
           "", ".. list-table::", "   :header-rows: 1", "",
           "   * - guest", "     - ordering", "     - off x (s)", "     - default x (s)", "     - ordered x (s)",
           "     - never hints (s)", "     - pages differing (ordered / others)", "     - load average"]
    for label, what, m, lost, la in rows:
        out += [f"   * - {label}", f"     - {what}"]
        out += [f"     - {m[k][0]:.2f} ({m[k][1]:.2f})" for k in ("off", "hint", "hint-ordered")]
        out += [f"     - {m['off-ordered'][1]:.2f}", f"     - {'-' if lost is None else f'{lost[0]} / {lost[1]:,}'}",
                f"     - {'-' if la is None else f'{la[0]:.1f} to {la[1]:.1f}'}"]
    out.append("")
    groups = [f"{label} ({what})" for label, what, *_ in rows]
    colours = {"off": "#999999", "hint": "#88aabb", "hint-ordered": "#2277aa", "off-ordered": "#cc8844"}
    names = {"off": "hinting off", "hint": "QEMU's default", "hint-ordered": "under the ordering",
             "off-ordered": "never hints, ordered"}
    plots.grouped(target / "migration-orderings-x.svg", groups,
                  [Series(names[k], [(i, r[2][k][0]) for i, r in enumerate(rows)], colours[k])
                   for k in ("hint", "hint-ordered")],
                  "Real Linux guests under QEMU: full pages over the honest ideal", "x honest ideal",
                  marks=[Mark(1.5, "target 1.5", "#aa2222")])
    plots.grouped(target / "migration-orderings-s.svg", groups,
                  [Series(names[k], [(i, r[2][k][1]) for i, r in enumerate(rows)], colours[k])
                   for k in ("off", "hint", "hint-ordered", "off-ordered")],
                  "Real Linux guests under QEMU: migration time", "seconds")
    return out + [".. image:: migration-orderings-x.svg", "   :alt: x honest ideal per kernel and ordering", "",
                  ".. image:: migration-orderings-s.svg", "   :alt: seconds per kernel and ordering", ""]


def timing_wall(d: dict, r: dict) -> float:
    from refmodel.system.timing import GuestMix, HostTiming, simulate

    a = d["args"]
    return simulate(GuestMix.measured(a["mem_mib"], r["free_before"], a["fill_mib"]), HostTiming()).wall_s


def _orderings_section() -> list[str]:
    """The host orderings in the calibrated timing model (bench/bench_orderings.py has every variant)."""
    from refmodel.system.orderings import CapThenLift, Paced, compare, conditions, gate_until_stop
    from refmodel.system.timing import GuestMix, Uncapped

    scheds = {"QEMU's default": Uncapped(), "cap 0.75 GB/s, lift when hints stop": CapThenLift(7.5e8),
              "gate: wait for the driver's STOP": gate_until_stop(), "pace 0.5 x the hint rate": Paced(0.5)}
    guests = {"2 GiB": GuestMix(524288, 91478, 384000, 48810),
              "1 GiB": GuestMix(262144, 58710, 179200, 24234)}
    conds = conditions()
    out = ["Host orderings", "--------------", "",
           "Orderings that need only QMP (``refmodel.system.orderings``; ``bench/bench_orderings.py``), in",
           "the calibrated timing model, on the 2 GiB guest of the committed run and a 1 GiB one like the",
           "second: full pages over the honest ideal, and in brackets the total time over hinting off. Each",
           "is bounded (a guest that never hints costs at most the 0.25 s first-hint bound) and changes only",
           "when pages are sent, so nothing is lost (``tests/system/test_orderings.py``). A fixed cap suits",
           "the rates it was tuned for; a starved driver hints late and slowly and the capped pass outruns",
           "it, which the 1 GiB real run showed. Pacing the pass by the observed hint rate keeps within a",
           "factor of the gate's bytes without its wait.",
           "",
           ".. list-table::", "   :header-rows: 1", "", "   * - ordering"]
    out += [f"     - {g}, {label}" for g in guests for label, _, _ in conds.values()]
    table = {(g, k): {o.name: o for o in compare(mix, h, drv, dict(scheds))}
             for g, mix in guests.items() for k, (_, h, drv) in conds.items()}
    offs = {(g, k): compare(mix, h, drv, {"off": None})[0].run.total_s
            for g, mix in guests.items() for k, (_, h, drv) in conds.items()}
    for name in scheds:
        out.append(f"   * - {name}")
        out += [f"     - {table[g, k][name].over_honest():.2f} "
                f"({table[g, k][name].run.total_s / offs[g, k]:.2f})"
                for g in guests for k in conds]
    return out + [""]


def _qtest_migrations(root: Path, target: Path) -> list[str]:
    """The reference driver over qtest (bench/bench_qemu.py --json): measured, model and ideal."""
    import json

    out = ["Reference driver over qtest", "---------------------------", "",
           "Two QEMUs under qtest, the reference driver hinting on the source, free memory filled with non-zero",
           "bytes, a few hinted pages taken back and rewritten while the migration runs; the destination's RAM",
           "is compared page by page. *Model* is ``refmodel.system.migration.predict_full_pages`` for the same pages,",
           "hints and writes, with every hint applied before the bulk pass. Made by",
           "``bench/bench_qemu.py --json results/migration-qtest-....json``.", ""]
    paths = sorted(root.glob("migration-qtest-*.json"))
    if not paths:
        return out + ["No committed results.", ""]
    for path in paths:
        d = json.loads(path.read_text())
        out += [f"``{path.name}`` ({d['qemu']}; qtest adapter: {d['requests_per_s']:,} virtqueue requests/s)", "",
                ".. list-table::", "   :header-rows: 1", "", "   * - guest", "     - hints", "     - MB sent",
                "     - full pages", "     - model", "     - ideal", "     - x ideal", "     - measured / model",
                "     - lost pages"]
        for r in d["runs"]:
            out += [f"   * - {r['ram_mib']} MiB", f"     - {'on' if r['hints'] else 'off'}", f"     - {r['mb']:.1f}",
                    f"     - {r['full_pages']:,}", f"     - {r['model_pages']:,}", f"     - {r['ideal']:,}",
                    f"     - {r['full_pages'] / r['ideal']:.2f}", f"     - {r['full_pages'] / r['model_pages']:.3f}",
                    f"     - {r['lost']}"]
        out.append("")
        hinted = [r for r in d["runs"] if r["hints"]]
        worst = max(hinted, key=lambda r: r["full_pages"] / r["model_pages"])
        out += [f"With hints, QEMU sends at most {worst['full_pages'] / worst['model_pages']:.3f} x what the model "
                "predicts. The model applies every hint before the bulk pass, so the difference is pages QEMU "
                "had sent before their hint arrived; what the model itself predicts above the ideal is "
                "non-zero memory no hint covered. The reference driver hints blocks of 256 pages, then "
                "smaller blocks for the free memory left in partly used ones.", ""]
        for mib in sorted({r["ram_mib"] for r in d["runs"]}):
            by = {r["hints"]: r for r in d["runs"] if r["ram_mib"] == mib}
            name = f"{path.stem}-{mib}.svg"
            plots.bars(target / name, [
                Bar("ideal (in use + dirtied)", by[True]["ideal"], "ideal"),
                Bar("model: hints", by[True]["model_pages"], "model"),
                Bar("measured: hints", by[True]["full_pages"], "measured"),
                Bar("model: no hints", by[False]["model_pages"], "model"),
                Bar("measured: no hints", by[False]["full_pages"], "measured")],
                f"{mib} MiB guest, reference driver over qtest, migrated by {_qemu(d['qemu'])}")
            out += [f".. image:: {name}", f"   :alt: full pages sent, {mib} MiB guest", ""]
    return out


def linux_hidden() -> str:
    """The requirements the vhost-user transport hides from the reference device, with why."""
    from conformance.adapters.linux.machine import UNOBSERVABLE
    from spec.catalogue import catalogue

    cat = catalogue()
    out = [".. list-table::", "   :header-rows: 1", "   :widths: 18 10 72", "", "   * - ID", "     - §",
           "     - why it is not judged"]
    for req_id, why in UNOBSERVABLE.items():
        out += [f"   * - ``{req_id}``", f"     - {cat[req_id].section}", f"     - {_esc(why)}"]
    return "\n".join(out + [""])


def generate(app: Any) -> None:
    target = Path(app.srcdir) / "generated"
    target.mkdir(exist_ok=True)
    for name, make in (("diagrams", diagrams), ("catalogue", catalogue_page), ("traceability", traceability_page),
                       ("ambiguities", ambiguities_page),
                       ("verdicts", verdicts_page), ("results", results_page),
                       ("proposal", proposal_page), ("matrix", matrixdoc.page)):
        text = make()
        path = target / f"{name}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    text = migration_page(target)
    path = target / "migration.rst"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    for name, make in (("linux-hidden", linux_hidden), ("adapter-reference", adapterdoc.page)):
        inc = target / f"{name}.inc"  # included, not a page of its own
        text = make()
        if not inc.exists() or inc.read_text() != text:
            inc.write_text(text)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True}
