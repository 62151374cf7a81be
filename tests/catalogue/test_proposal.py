"""The proposal patch series: it applies cleanly to the upstream virtio 1.4 balloon files (read from
../shared at test time, never stored here), it is what edits.py builds, and every new normative
sentence is marked with a catalogue ID that the catalogue knows, and vice versa."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from spec.catalogue import catalogue
from spec.proposal.build import DEFAULT_UPSTREAM, FILES, build

PROPOSAL = Path(__file__).resolve().parents[2] / "spec" / "proposal"
PATCHES = sorted(PROPOSAL.glob("0*.patch"))

needs_upstream = pytest.mark.skipif(not DEFAULT_UPSTREAM.exists() and not os.getenv("CI"),
                                    reason="../shared/reference/virtio-spec-1.4 is not next to this checkout")


@pytest.fixture()
def upstream(tmp_path):
    repo = tmp_path / "virtio-spec"
    for f in FILES:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEFAULT_UPSTREAM / f, repo / f)
    return repo


@needs_upstream
def test_series_applies_cleanly_in_order(upstream):
    series = [p for p in PATCHES if not p.name.startswith("0000")]
    assert len(series) >= 4
    for patch in series:
        subprocess.run(["git", "apply", "--check", str(patch)], cwd=upstream, check=True, capture_output=True)
        subprocess.run(["git", "apply", str(patch)], cwd=upstream, check=True, capture_output=True)
    text = (upstream / FILES[0]).read_text()
    assert "multiple of 10" in text and "multiple of 6" not in text


@needs_upstream
def test_committed_patches_are_what_the_edits_build(tmp_path):
    fresh = build(out=tmp_path)
    assert [p.name for p in fresh] == [p.name for p in PATCHES]
    for p in fresh:
        assert p.read_text() == (PROPOSAL / p.name).read_text(), f"{p.name}: rerun python -m spec.proposal.build"


def test_marked_sentences_and_catalogue_agree():
    marked = set()
    for p in PATCHES:
        marked |= set(re.findall(r"^\+% (PROP-[A-Z]+-\d+)$", p.read_text(), re.M))
    in_catalogue = {r.id for r in catalogue().values() if r.profile == "proposal"}
    assert marked == in_catalogue


def test_patches_are_in_the_spec_house_style():
    for p in PATCHES:
        added = [line[1:] for line in p.read_text().splitlines() if line.startswith("+") and not line.startswith("+++")]
        for line in added:
            # Section headers and conformance references carry full labels, as upstream's do.
            long_ok = line.startswith(("\\drivernormative", "\\devicenormative", "\\item \\ref"))
            assert "\t" not in line and (len(line) <= 80 or long_ok), (p.name, line)
            for word in re.findall(r"\b(must|should|may)\b", line):
                pytest.fail(f"{p.name}: lowercase {word!r} in normative text: {line}")
        assert re.search(r"^Fixes: ", p.read_text(), re.M), p.name


def test_every_checkable_proposal_statement_has_evidence_or_a_reason():
    """A statement the proposal adds is backed by a test marked ``verifies``, by the check of the 1.4
    requirement it tightens, or by a stated reason why it is not checked yet."""
    from conformance.checks import DEVICE_CHECKS, DRIVER_CHECKS, NOT_YET, PROPOSAL_CHECKED_AS
    from conformance.trace import verifying_tests

    tests = verifying_tests()
    for r in catalogue().values():
        if r.profile != "proposal" or not r.checkable:
            continue
        base = PROPOSAL_CHECKED_AS.get(r.id)
        assert r.id in tests or r.id in NOT_YET or base in {**DEVICE_CHECKS, **DRIVER_CHECKS}, r.id
    for prop, base in PROPOSAL_CHECKED_AS.items():
        assert catalogue()[prop].role == catalogue()[base].role, (prop, base)


needs_pdflatex = pytest.mark.skipif(shutil.which("pdflatex") is None and not os.getenv("CI"),
                                    reason="pdflatex is not installed (tools/test installs it)")


@needs_upstream
@needs_pdflatex
def test_patched_balloon_section_typesets(tmp_path):
    """The series applied to upstream compiles with the spec's own macros, and every balloon
    cross-reference resolves, the conformance entries for the new sections included."""
    from spec.proposal.latex import apply_series, typeset

    apply_series(DEFAULT_UPSTREAM, tmp_path)
    labels = typeset(tmp_path, tmp_path / "out.pdf")
    assert "drivernormative:Device Types / Memory Balloon Device / Virtqueues" in labels
    assert "devicenormative:Device Types / Memory Balloon Device / Virtqueues" in labels
    assert (tmp_path / "out.pdf").read_bytes()[:5] == b"%PDF-"


@needs_upstream
@needs_pdflatex
@pytest.mark.parametrize("damage, message", [
    ("\\field{free_page_hint_cmd_id", "pdflatex failed: !"),
    ("\\ref{devicenormative:Device Types / Memory Balloon Device / Nowhere}", "unresolved balloon reference"),
])
def test_a_patch_that_breaks_the_latex_is_reported_in_one_line(tmp_path, damage, message):
    from spec.proposal.latex import LatexError, apply_series, typeset

    apply_series(DEFAULT_UPSTREAM, tmp_path)
    desc = tmp_path / FILES[0]
    desc.write_text(desc.read_text().replace("% PROP-FPH-9\n", f"% PROP-FPH-9\n{damage}\n"))
    with pytest.raises(LatexError, match=message) as e:
        typeset(tmp_path, tmp_path / "out.pdf")
    assert "\n" not in str(e.value)
