"""Each mutant's first-failure run (ci profile, stop at the first failure), made once per test session.

test_conformance judges what the run found and test_replay replays what it printed: the same derandomized
run. pytest-xdist spreads the mutants' tests over the workers, so every worker that replays would make every
run again; instead the runs are kept, pickled, in a directory all workers share (``tests/suite/conftest.py``
points ``SHARED`` at it), with a lock per run so two workers never make the same one. Without xdist they are
cached in the process."""

from __future__ import annotations

import fcntl
import functools
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from conformance.registry import BUILTIN
from conformance.runner import RunResult, run, run_levels

T = TypeVar("T")
K = TypeVar("K")
#: Where workers leave the runs they made (None: this process only).
SHARED: Path | None = None


def _make(name: str, role: str) -> RunResult:
    return run(BUILTIN[name, role], "ci", max_failures=0)


@functools.cache
def reference_ci_run(role: str) -> RunResult:
    """The reference ``role``'s ci run at both levels, made once for all workers (two tests judge it)."""
    return shared(f"reference-ci@{role}", lambda: run_levels(BUILTIN["reference", role], "ci"), block=True)


@functools.cache
def first_failure_run(name: str, role: str) -> RunResult:
    return shared(f"{name}@{role}", lambda: _make(name, role), block=True)


def first_failure_runs(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], RunResult]:
    """The runs of ``keys``: first those no other worker is making (made or loaded), then the rest."""
    return shared_all({f"{n}@{r}": (lambda n=n, r=r: _make(n, r)) for n, r in keys},
                      key=lambda k: tuple(k.split("@")))


def shared_all(makers: dict[str, Callable[[], T]], key: Callable[[str], K]) -> dict[K, T]:
    """``shared`` for many: those no other worker is making first, then wait for the rest."""
    out: dict[K, T] = {}
    for block in (False, True):
        for name, make in makers.items():
            if key(name) not in out and (got := shared(name, make, block=block)) is not None:
                out[key(name)] = got
    return out


_loaded: dict[str, object] = {}


def shared(name: str, make: Callable[[], T], *, block: bool) -> T | None:
    """What ``make()`` returns, made once for all workers (None: another worker is making it, and not
    ``block``)."""
    if name in _loaded:
        return _loaded[name]  # type: ignore[return-value]
    if SHARED is None:
        res = _loaded[name] = make()
        return res
    SHARED.mkdir(parents=True, exist_ok=True)
    path = SHARED / f"{name}.pickle"
    with open(SHARED / f"{name}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            return None  # another worker is making it
        if path.exists():
            res = pickle.loads(path.read_bytes())
        else:
            res = make()
            try:
                data = pickle.dumps(res)
            except (pickle.PicklingError, TypeError, AttributeError):
                data = None  # kept in this process only: another worker makes its own
            if data is not None:
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
    _loaded[name] = res
    return res
