"""Hypothesis settings per profile: ``dev`` (quick, random), ``ci`` (derandomized, repeatable),
``nightly`` (long)."""

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
}


def profile(name: str) -> settings:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"--profile {name!r}: expected one of {', '.join(PROFILES)}") from None


#: Wall-clock budget for shrinking one failure, per profile (Hypothesis' own default is 300 s).
SHRINK_SECONDS = {"dev": 10, "ci": 20, "nightly": 300}


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
