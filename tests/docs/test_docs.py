"""The documentation site builds with warnings as errors, every page is reachable from the index,
and the generated pages come from the model (diagrams from the tables, the full catalogue)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if shutil.which("dot") is None:
        pytest.fail("graphviz 'dot' is missing: tools/test installs it")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_every_page_is_reachable_from_the_index(site):
    # genindex, search and sphinx-needs' permalink redirector are machinery, not pages.
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")} - {"genindex.html", "search.html",
                                                                           "permalink.html"}
    seen, todo = set(), ["index.html"]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        base = Path(page).parent
        for href in re.findall(r'href="([^"#?]+\.html)', (site / page).read_text()):
            target = (base / href).as_posix()
            target = str(Path(target)).replace("\\", "/")
            parts = []
            for part in target.split("/"):
                if part == "..":
                    parts.pop()
                elif part != ".":
                    parts.append(part)
            todo.append("/".join(parts))
    assert pages <= seen, sorted(pages - seen)


def test_diagrams_and_catalogue_come_from_the_model(site):
    from refmodel.system.guest import PageState
    from refmodel.balloon.hinting import DeviceHintState
    from spec.catalogue import catalogue

    diagrams = (site / "generated" / "diagrams.html").read_text()
    svgs = re.findall(r'(_images/graphviz-[0-9a-f]+\.svg)', diagrams)
    assert len(set(svgs)) >= 3
    drawn = "".join((site / "generated" / svg).read_text() if (site / "generated" / svg).exists()
                    else (site / svg).read_text() for svg in set(svgs))
    assert all(state.name in drawn for state in DeviceHintState)
    assert all(state.name in drawn for state in PageState)  # the page lifecycle: hinting and reporting
    cat = (site / "generated" / "catalogue.html").read_text()
    missing = [r for r in catalogue() if r not in cat]
    assert not missing, missing[:5]


def test_traceability_links_requirements_to_rules_checks_and_tests(site):
    """sphinx-needs links, read from the source: a requirement's page shows the conformance rule that
    checks it and the tests marked ``verifies``; the uncovered table lists every NOT_YET requirement."""
    from conformance.checks import NOT_YET
    from conformance.trace import conformance_checks, verifying_tests

    cat = (site / "generated" / "catalogue.html").read_text()
    check = conformance_checks()["BAL-FPH-DEV-3"][0].qualname
    assert f"check.{check}" in cat
    for node in verifying_tests()["PROP-FPH-9"]:
        assert "test." + node.replace("/", ".").replace("::", ".") in cat
    trace = (site / "generated" / "traceability.html").read_text()
    uncovered = trace[trace.index("Requirements not covered"):trace.index("Coverage by status")]
    assert all(req_id in uncovered for req_id in NOT_YET)
    assert "BAL-FPH-DEV-3" not in uncovered  # checked


def test_model_rules_include_code_that_names_its_requirement_in_a_comment():
    """The reference device's tag check carries '# BAL-FPH-DEV-3' rather than raising it; it is still the
    model rule for that requirement. Module-level prose is not a rule."""
    from conformance.trace import model_rules

    rules = model_rules()
    assert "refmodel.balloon.hinting.FreePageHintDevice._handle_untrusted" in {s.qualname for s in rules["BAL-FPH-DEV-3"]}
    assert "refmodel.balloon.hinting" not in {s.qualname for s in rules["BAL-FPH-DEV-3"]}  # its module docstring


# -- Writing an adapter -----------------------------------------------------------------------------------
EXT = DOCS / "_ext"


def _ext(name):
    """A module of docs/_ext (the Sphinx extension's helpers), imported as the build imports it."""
    import importlib

    if str(EXT) not in sys.path:
        sys.path.insert(0, str(EXT))
    return importlib.import_module(name)


def test_adapter_page_names_every_method_of_every_protocol(site):
    """Each method is a Python-domain entry under the Protocol that defines it, so a method added to a
    Protocol appears on the page or this fails."""
    from conformance.interface import CAPABILITY_PROTOCOLS, ROLE_PROTOCOLS, _methods
    from refmodel.virtio.transport import Transport

    page = (site / "writing-an-adapter.html").read_text()
    missing = []
    for proto in (*ROLE_PROTOCOLS.values(), *CAPABILITY_PROTOCOLS.values(), Transport):
        if f'id="{proto.__module__}.{proto.__name__}"' not in page:
            missing.append(proto.__name__)
        for method in _methods(proto):
            owner = next(k for k in proto.__mro__ if method in vars(k))
            if f'id="{owner.__module__}.{owner.__name__}.{method}"' not in page:
                missing.append(f"{proto.__name__}.{method}")
    assert not missing, missing
    text = re.sub(r"<[^>]+>", "", page)
    assert "§5.5.6.5" in text and "§4.1.5.2" in text  # the sections the docstrings cite
    assert "virtio-conformance c-header" in text and "pytest --virtio-dut" in text


def test_adapter_page_lists_the_checks_each_capability_guards(site):
    from refmodel.capabilities import Capability

    uses = _ext("capneeds").capability_uses()
    assert "BAL-FPH-DEV-3" in uses[Capability.HINTED_PAGES].ids
    assert {"BAL-ST-DEV-1", "BAL-ST-DEV-2"} <= set(uses[Capability.STATS].ids)
    assert "BAL-FPH-D1" in uses[Capability.HINTING].ids  # in a rule with @step(when=self._hinting)
    assert "BAL-FPH-D5" in uses[Capability.HINTING].ids  # a helper that needs current_id, set only there
    assert any(r.endswith(".report") for r in uses[Capability.REPORT].rules)
    page = (site / "writing-an-adapter.html").read_text()
    section = page[page.index('id="conformance.interface.HintedPages"'):]
    section = section[:section.index('id="conformance.interface.HostStats"')]
    assert all(req_id in section for req_id in uses[Capability.HINTED_PAGES].ids)
    assert "SPLIT-DEV-13" in page  # PerQueueInterrupts: the IDs its docstring cites (SPLIT-DEV-8/9/12/13)


@pytest.mark.parametrize("role", ["device", "driver"])
def test_capability_scan_agrees_with_runs_without_capabilities(role):
    """What the source scan says a capability guards is what a run shows: without any capability
    those requirements are skipped, with the reference's they pass."""
    from conformance.interface import ROLE_CAPABILITIES, ROLE_PROTOCOLS
    from conformance.registry import BUILTIN, Implementation
    from conformance.runner import run
    from refmodel.balloon.device import BalloonDevice
    from refmodel.balloon.driver import BalloonDriver

    uses = _ext("capneeds").capability_uses()
    claimed = {i for cap in ROLE_CAPABILITIES[ROLE_PROTOCOLS[role, "balloon"]] for i in uses[cap].ids}
    if role == "device":
        assert claimed
    base = BalloonDevice if role == "device" else BalloonDriver
    bare = type("Bare", (base,), {"capabilities": frozenset()})
    impl = Implementation("bare", role, bare, "the reference without capabilities")
    without = {v.requirement.id: v for v in run(impl, "ci").verdicts}
    with_caps = {v.requirement.id: v for v in run(BUILTIN["reference", role], "ci").verdicts}
    assert not [i for i, v in without.items() if v.verdict == "fail"]
    assert {i: without[i].verdict for i in claimed} == {i: "skipped" for i in claimed}
    assert {i: with_caps[i].verdict for i in claimed} == {i: "pass" for i in claimed}


def test_worked_example_device_passes_and_skips_what_it_lacks(monkeypatch):
    from conformance.registry import resolve
    from conformance.runner import run
    from refmodel.capabilities import Capability

    monkeypatch.syspath_prepend(str(DOCS / "examples"))
    verdicts = {v.requirement.id: v.verdict for v in run(resolve("mydevice:make", "device"), "ci").verdicts}
    assert "fail" not in verdicts.values()
    needs = _ext("capneeds").capability_uses()[Capability.HINTED_PAGES].ids
    assert needs and all(verdicts[i] == "skipped" for i in needs)


# -- plots ---------------------------------------------------------------------------------------------------
def test_migration_plots_are_matplotlib_svgs_with_titles(site):
    page = (site / "generated" / "migration.html").read_text()
    images = re.findall(r'<img alt="[^"]*" src="([^"]+\.svg)"', page)
    assert len(images) >= 3, images
    for src in images:
        svg = (site / "generated" / src).resolve().read_text()
        assert "Matplotlib" in svg and "QEMU" in re.findall(r"<dc:title>([^<]*)", svg)[0], src
        assert "<dc:date>" not in svg  # repeatable: no build date in the file


def test_plots_are_byte_for_byte_repeatable(tmp_path):
    vcdocs = _ext("vcdocs")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    # Every kind of plot, not every results file (the docs build renders them all): the qtest figures, an
    # old real run and a paced one with its destination compare, and the orderings across runs.
    root = DOCS.parent / "results"
    runs = [root / "migration-linux-qemu-7.2.json",
            root / "migration-linux-qemu-11.1-linux-7.2-2048-link10g-quiet200.json"]
    for out in (first, second):
        text = [*vcdocs._qtest_migrations(root, out), *vcdocs._real_orderings(root, out)]
        for path in runs:
            text += vcdocs._real_run(path, out)
        assert text
    names = sorted(p.name for p in first.glob("*.svg"))
    assert names and names == sorted(p.name for p in second.glob("*.svg"))
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
