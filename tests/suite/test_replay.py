"""Every printed counterexample replays as printed: the script the runner prints for each failure of every
built-in mutant (first failures and later ones, found while earlier ones were tolerated), run in a fresh
Python process, fails with the same requirement."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conformance.registry import BUILTIN, machine_for
from conformance.runner import RunResult, counterexample, run
from refmodel.errors import PeerSpecViolation
from suite_mutant_runs import first_failure_runs, shared_all

MUTANTS = sorted((n, r) for (n, r), impl in BUILTIN.items() if impl.breaks)

#: Runs each script named on the command line in its own globals and prints, per script, the requirement
#: the PeerSpecViolation it raised names (or the exception type, or "no failure").
REPLAYER = """
import json, runpy, sys
from refmodel.errors import PeerSpecViolation
out = {}
for path in sys.argv[1:]:
    try:
        runpy.run_path(path, run_name="__main__")
        out[path] = "no failure"
    except PeerSpecViolation as e:
        out[path] = e.req_id
    except Exception as e:
        out[path] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def replay(scripts: dict[str, tuple[str, ...]], tmp_path: Path) -> dict[str, str]:
    """Write each script, run them all in one fresh interpreter; returns what each raised, by key."""
    paths = {}
    for key, lines in scripts.items():
        path = tmp_path / f"{key}.py"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths[str(path)] = key
    out = subprocess.run([sys.executable, "-c", REPLAYER, *paths], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return {paths[p]: got for p, got in json.loads(out.stdout.splitlines()[-1]).items()}


def scripts_of(res: RunResult) -> dict[str, tuple[str, ...]]:
    return {v.requirement.id: v.failure.counterexample for v in res.verdicts if v.failure is not None}


def check_printed(req_id: str, lines: tuple[str, ...]) -> None:
    """No draw printed as ``data(...)``, and the failing step (or invariant) carries a note naming the
    requirement, as the script's last comment."""
    text = "\n".join(lines)
    assert "data(" not in text, f"{req_id}: a draw printed as data(...)\n{text}"
    comments = [ln for ln in lines if ln.startswith("# ")]
    assert comments and " fails here: " in comments[-1] and req_id in comments[-1], \
        f"{req_id}: the failing step has no note\n{text}"
    assert lines[-1] == "state.teardown()", text


def assert_replays(scripts: dict[str, tuple[str, ...]], tmp_path: Path) -> None:
    """Each script (keyed ``requirement@anything``) raises its requirement in a fresh interpreter."""
    got = replay(scripts, tmp_path)
    wrong = {k: g for k, g in got.items() if g != k.split("@")[0]}
    assert not wrong, "\n\n".join(f"{k} replayed as {g}:\n" + "\n".join(scripts[k]) for k, g in wrong.items())


#: Scripts replayed by one interpreter: small enough that both workers get a share.
REPLAY_CHUNK = 12

Replayed = dict[tuple[str, str], dict[str, tuple[tuple[str, ...], str]]]


@pytest.fixture(scope="module")
def first_failures(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    """Each mutant's first failure (as the mutant tests find it), all scripts replayed in one fresh
    interpreter: (name, role) -> {requirement: (script, what its replay raised)}."""
    return _first_failures(str(tmp_path_factory.getbasetemp()))


@functools.cache
def _first_failures(base: str) -> Replayed:
    # Cached past the module fixture: in a serial run pytest sets a module fixture up again each time
    # its module's tests come back after another module's.
    scripts: dict[str, tuple[str, ...]] = {}
    runs = first_failure_runs(MUTANTS)  # those another worker made are loaded, not made again
    for name, role in MUTANTS:
        for req_id, lines in scripts_of(runs[name, role]).items():
            scripts[f"{req_id}@{name}@{role}"] = lines
    # Replayed in chunks (one interpreter each) that the workers share out, as they share the runs.
    keys = sorted(scripts)
    chunks = {f"replay-{i // REPLAY_CHUNK}": keys[i:i + REPLAY_CHUNK] for i in range(0, len(keys), REPLAY_CHUNK)}
    done = shared_all({c: (lambda ks=ks: replay({k: scripts[k] for k in ks},
                                                Path(tempfile.mkdtemp(prefix="replay", dir=base))))
                       for c, ks in chunks.items()}, key=str)
    got = {k: v for part in done.values() for k, v in part.items()}
    out: Replayed = {key: {} for key in MUTANTS}
    for key, raised in got.items():
        req_id, name, role = key.split("@")
        out[name, role][req_id] = (scripts[key], raised)
    return out


@pytest.mark.parametrize("name, role", MUTANTS, ids=[n for n, _ in MUTANTS])
def test_the_printed_counterexample_of_every_mutant_fails_the_same_way(name, role, first_failures):
    got = first_failures[name, role]
    assert got, f"{name}: no failure"
    for req_id, (lines, raised) in got.items():
        check_printed(req_id, lines)
        assert raised == req_id, f"{req_id} replayed as {raised}:\n" + "\n".join(lines)


#: Mutants built to break more than one requirement: a later failure is found with the first tolerated.
SEVERAL = sorted(key for key in MUTANTS if len(BUILTIN[key].breaks) > 1)


def test_a_later_failure_replays_past_the_ones_tolerated_before_it(tmp_path):
    scripts = {}
    for name, role in SEVERAL:
        for req_id, lines in scripts_of(run(BUILTIN[name, role], "ci", max_failures=1)).items():
            check_printed(req_id, lines)
            scripts[f"{req_id}@{name}"] = lines
    later = [r for r, lines in scripts.items()
             if any(".recorder = Recorder(tolerated=" in ln for ln in lines)]
    assert later, sorted(scripts)  # some mutant's second failure was found past its first
    assert_replays(scripts, tmp_path)


def test_steps_that_do_nothing_for_the_failure_are_not_printed(tmp_path):
    """Hypothesis may leave steps that did nothing (out of shrinking time, or kept by draws); the runner
    replays the steps and drops each one the failure does not need, keeping the failing step's note."""
    cls = machine_for(BUILTIN["virtq-mutant-kicks-always", "driver"])
    noise = ["state.device_pop()", "state.add(cuts=[], indirect=False, n_read=0, n_write=0, payload=b'')",
             "state.harvest()"]
    steps = ["state.setup(qs=1, event_idx=False, indirect=False, start=0)", *noise * 6,
             "state.add(cuts=[], indirect=False, n_read=0, n_write=1, payload=b'')", *noise,
             "state.device_suppress(enabled=False, scribble=0)", *noise, "state.publish()"]
    exc = PeerSpecViolation("SPLIT-DRV-20", "the driver notified")
    exc.__notes__ = ["Failing test case: <state machine>", f"state = {cls.__name__}()", *steps,
                     "state.teardown()"]
    lines = counterexample(exc, cls, frozenset(), seconds=60)
    calls = [ln for ln in lines if ln.startswith("state.")]
    assert calls == [steps[0], steps[19], steps[23], "state.publish()", "state.teardown()"], "\n".join(lines)
    assert " fails here: SPLIT-DRV-20" in lines[-3]
    assert_replays({"SPLIT-DRV-20@kicks-always": lines}, tmp_path)


def test_a_failure_the_runner_cannot_replay_keeps_hypothesis_script_and_says_so():
    cls = machine_for(BUILTIN["virtq-reference", "driver"])
    exc = PeerSpecViolation("SPLIT-DRV-20", "seen once")
    exc.__notes__ = [f"state = {cls.__name__}()",
                     "state.setup(qs=1, event_idx=False, indirect=False, start=0)", "state.publish()",
                     "state.teardown()"]
    lines = counterexample(exc, cls, frozenset(), seconds=5)
    assert "state.publish()" in lines and "did not fail the same way: nondeterministic" in lines[-1]
