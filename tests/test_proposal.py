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

PROPOSAL = Path(__file__).resolve().parents[1] / "spec" / "proposal"
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
