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


EXT = DOCS / "_ext"


def _ext(name):
    """A module of docs/_ext (the Sphinx extension's helpers), imported as the build imports it."""
    import importlib

    if str(EXT) not in sys.path:
        sys.path.insert(0, str(EXT))
    return importlib.import_module(name)


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
    vcdocs.migration_page(first)
    vcdocs.migration_page(second)
    names = sorted(p.name for p in first.glob("*.svg"))
    assert names and names == sorted(p.name for p in second.glob("*.svg"))
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
