"""The soak: the reference device and driver, each at the balloon level merged with its split virtqueues
at the virtqueue level, stay clean under the nightly profile. Long (4.5 minutes on a shared 2-core
machine), so marked ``soak`` and skipped unless VIRTIO_SOAK=1; ``tools/soak`` runs it, then the ``soak``
profile for several seeds.

Profiles and seeds that cannot be used are one-line errors (these tests always run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import core

from conformance.profiles import PROFILES, ProfileError, forced_seed, profile
from conformance.registry import BUILTIN
from conformance.runner import run, run_levels

ROOT = Path(__file__).resolve().parents[2]
SOAK = pytest.mark.skipif(os.getenv("VIRTIO_SOAK") != "1",
                          reason="a soak run: set VIRTIO_SOAK=1 (tools/soak)")


@pytest.mark.soak
@SOAK
@pytest.mark.parametrize("role", ["device", "driver"])
def test_the_reference_pair_is_clean_under_the_nightly_profile(role):
    res = run_levels(BUILTIN["reference", role], "nightly")
    assert res.levels == ("balloon", "virtqueue")
    problems = [f"{v.requirement.id}: {v.reason}\n" + "\n".join(v.failure.counterexample if v.failure else ())
                for v in res.verdicts if v.verdict == "fail"]
    problems += [f"error ({e.kind}): {e.detail}\n" + "\n".join(e.counterexample) for e in res.errors]
    assert not problems, "\n\n".join(problems)


def test_the_soak_profile_is_long_and_random():
    soak = profile("soak")
    assert soak.max_examples >= 5000 and not soak.derandomize
    assert soak.max_examples > PROFILES["nightly"].max_examples


def test_a_seed_makes_a_profile_random_from_it_and_is_forced_only_inside_the_block():
    assert PROFILES["ci"].derandomize and not profile("ci", 7).derandomize
    before = core.global_force_seed
    with forced_seed(7):
        assert core.global_force_seed == 7
    assert core.global_force_seed == before


def test_one_seed_gives_the_same_search_twice():
    impl = BUILTIN["mutant-stale-actual", "driver"]
    first, again = (run(impl, "ci", max_failures=0, seed=12345) for _ in range(2))
    trace = [v.failure.counterexample for v in first.verdicts if v.failure]
    assert trace and trace == [v.failure.counterexample for v in again.verdicts if v.failure]
    assert first.seed == 12345


@pytest.mark.parametrize("args, message", [
    (["--profile", "nosuch"], "--profile 'nosuch': expected one of dev, ci, nightly, soak"),
    (["--seed", "-1"], "--seed -1: expected a whole number >= 0"),
    (["--seed", "x"], "--seed 'x': expected a whole number >= 0"),
])
def test_a_profile_that_cannot_be_met_is_a_one_line_error(args, message):
    out = subprocess.run([sys.executable, "-m", "conformance.cli", "run", *args], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_the_runner_refuses_them_too_before_building_anything():
    for name, seed in (("nosuch", None), ("ci", -1)):
        with pytest.raises(ProfileError):
            run(BUILTIN["reference", "device"], name, seed=seed)


def test_tools_soak_runs_the_marked_tests_then_the_soak_profile_per_seed():
    script = ROOT / "tools" / "soak"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "VIRTIO_SOAK=1" in text and "-m soak tests/suite/test_soak.py" in text
    assert "--profile soak --seed" in text and "_env.sh" in text
