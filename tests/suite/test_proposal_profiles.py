"""Proposal profiles in the suite (issue 17, ``run --proposal``): each profile's mutants are caught naming
the requirement they break, the reference passes every profile's run, and the CLI refuses what cannot run.

The reference's runs here take several profiles at once under ``dev`` (seconds each); the ci run of every
profile on its own is ``VIRTIO_PROPOSAL_CI=1`` (about 3 minutes on 2 cores)."""

from __future__ import annotations

import json
import os

import pytest

from conformance.cli import main
from conformance.registry import BUILTIN, with_proposals
from conformance.runner import run
from refmodel.balloon.proposals.reference import RUNNABLE
from suite_mutant_runs import first_failure_run

PROFILE_MUTANTS = sorted((n, r) for (n, r), impl in BUILTIN.items() if impl.proposals)
#: Profiles that can share one run (one bit-6 proposal each; stats-only sends no balloon buffers; the
#: bitmap, the inflate bitmap and the combined queue each change the balloon buffers, so they run apart).
TOGETHER = (("hint-wait-on-ack", "bitmap-inflate-deflate"), ("device-init-reported", "stats-only"),
            ("device-init-on-inflate",), ("combined-inflate-deflate-vq",))


@pytest.mark.verifies("PROP-SO-DEV-1", "PROP-SO-DRV-1", "PROP-SO-DRV-2", "PROP-HWA-DEV-1", "PROP-HWA-DEV-2",
                      "PROP-HWA-DRV-2", "PROP-DII-DEV-1", "PROP-DII-DRV-1", "PROP-DIR-DEV-1", "PROP-BMP-DEV-1",
                      "PROP-BMP-DRV-1", "PROP-BMP-DRV-2", "PROP-BMP-DRV-3", "PROP-CMB-DEV-1",
                      "PROP-CMB-DRV-1", "PROP-CMB-DRV-2", "PROP-CMB-DRV-3")
@pytest.mark.parametrize("name, role", PROFILE_MUTANTS, ids=[n for n, _ in PROFILE_MUTANTS])
def test_profile_mutant_is_caught_naming_its_requirement(name, role):
    impl = BUILTIN[name, role]
    res = first_failure_run(name, role)  # the run test_replay replays, made once per worker
    assert not res.errors, res.errors
    fails = {v.requirement.id for v in res.verdicts if v.verdict == "fail"}
    assert fails == set(impl.breaks), fails
    assert res.proposals == impl.proposals


def test_every_runnable_profile_has_a_mutant_for_each_role_it_checks():
    from conformance.machines.proposals import MODULES

    for p in RUNNABLE:
        mod = MODULES[p]
        for role, checks in (("device", mod.DEVICE_CHECKS), ("driver", mod.DRIVER_CHECKS)):
            if checks:
                assert any(BUILTIN[k].proposals == (p.value,) for k in PROFILE_MUTANTS if k[1] == role), (p, role)


def _passes(profiles: tuple[str, ...], role: str, search: str) -> None:
    res = run(with_proposals(BUILTIN["reference", role], profiles), search)
    assert not res.errors, res.errors
    assert not [v for v in res.verdicts if v.verdict == "fail"]
    mine = [v for v in res.verdicts if v.requirement.profile in profiles and v.requirement.checkable]
    assert mine and all(v.verdict == "pass" for v in mine), [(v.requirement.id, v.verdict) for v in mine]
    if role == "device" and "bitmap-inflate-deflate" in profiles:
        # The suite's driver sent a bitmap past memory on purpose: the reference names the rule it breaks.
        seen = res.observations.get("malformed inflateq: bitmap past guest memory", ())
        assert "reported the breach (PROP-BMP-DRV-3)" in seen, res.observations


@pytest.mark.parametrize("role", ["device", "driver"])
@pytest.mark.parametrize("profiles", TOGETHER, ids=["+".join(t) for t in TOGETHER])
def test_reference_passes_the_profiles(profiles, role):
    if role == "driver" and profiles == ("device-init-reported",):
        pytest.skip("no checkable driver requirement")
    _passes(profiles, role, "dev")


@pytest.mark.skipif(not os.environ.get("VIRTIO_PROPOSAL_CI"), reason="VIRTIO_PROPOSAL_CI=1: minutes")
@pytest.mark.parametrize("role", ["device", "driver"])
@pytest.mark.parametrize("profile", [p.value for p in RUNNABLE])
def test_reference_passes_each_profile_under_ci(profile, role):
    if role == "driver" and profile == "device-init-reported":
        pytest.skip("no checkable driver requirement")
    _passes((profile,), role, "ci")


@pytest.mark.parametrize("argv, says", [
    (["--proposal", "no-such"], "expected one of hint-wait-on-ack"),
    (["--proposal", "hint-wait-on-ack", "--proposal", "device-init-on-inflate"], "PROP-BIT-DEV-1"),
    (["--proposal", "stats-only", "--level", "virtqueue"], "--level balloon"),
])
def test_cli_refuses_in_one_line(argv, says, capsys):
    assert main(["run", "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err


def test_report_names_the_profiles_and_their_verdicts(tmp_path):
    out = tmp_path / "r.json"
    assert main(["run", "--quiet", "--dut", "mutant-stats-only-asks-for-pages", "--profile", "dev",
                 "--max-failures", "0", "--report", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["proposals"] == ["stats-only"]
    by_id = {r["id"]: r for r in report["requirements"]}
    assert by_id["PROP-SO-DEV-1"]["verdict"] == "fail" and by_id["PROP-SO-DEV-1"]["profile"] == "stats-only"
    assert by_id["RESET-DEV-1"]["profile"] == "virtio-1.4"
