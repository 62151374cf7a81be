"""Hypothesis settings per profile: ``dev`` (quick, random), ``ci`` (derandomized, repeatable),
``nightly`` (long), ``soak`` (longer still, random: run it with several ``--seed`` values, as ``tools/soak``
does). A forced seed (:func:`forced_seed`) makes any profile's search random from that seed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hypothesis import HealthCheck, Phase, settings

_COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
               print_blob=False, phases=[p for p in Phase if p.name != "explain"])

PROFILES: dict[str, settings] = {
    "dev": settings(max_examples=60, stateful_step_count=30, database=None, **_COMMON),
    "ci": settings(max_examples=300, stateful_step_count=30, database=None, derandomize=True, **_COMMON),
    "nightly": settings(max_examples=2000, stateful_step_count=60, database=None, **_COMMON),
    "soak": settings(max_examples=5000, stateful_step_count=60, database=None, derandomize=False, **_COMMON),
}


class ProfileError(ValueError):
    """A profile or seed that cannot be used (one line, names the option)."""


def profile(name: str, seed: int | None = None) -> settings:
    """The settings of profile ``name``; with a ``seed``, not derandomized (the seed decides instead)."""
    try:
        chosen = PROFILES[name]
    except KeyError:
        raise ProfileError(f"--profile {name!r}: expected one of {', '.join(PROFILES)}") from None
    check_seed(seed)
    return chosen if seed is None else settings(chosen, derandomize=False)


def check_seed(seed: int | None) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ProfileError(f"--seed {seed!r}: expected a whole number >= 0")


@contextlib.contextmanager
def forced_seed(seed: int | None) -> Iterator[None]:
    """Every Hypothesis search in the block starts from ``seed`` (None: as the profile says)."""
    from hypothesis import core  # global_force_seed is what ``pytest --hypothesis-seed`` sets

    if seed is None:
        yield
        return
    check_seed(seed)
    old = core.global_force_seed
    setattr(core, "global_force_seed", seed)  # typed as None in hypothesis.core: set by name
    try:
        yield
    finally:
        setattr(core, "global_force_seed", old)


#: Wall-clock budget for shrinking one failure, per profile (Hypothesis' own default is 300 s).
SHRINK_SECONDS = {"dev": 10, "ci": 20, "nightly": 300, "soak": 300}


@contextlib.contextmanager
def shrink_budget(name: str) -> Iterator[None]:
    """Bound shrinking time: a long implementation trace must not stall a run for minutes."""
    from hypothesis.internal.conjecture import engine  # internal; absent attribute = no bound

    old = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if old is None:
        yield
        return
    engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS.get(name, old)
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = old
