"""Host-side orderings that let a guest's hints land before QEMU's bulk pass, with QMP only.

Each is a :class:`refmodel.system.timing.HostSchedule`: what the host does with ``max-bandwidth`` and
when it issues ``migrate``. The host sees hints only as pages leaving ``ram.remaining`` without being
sent (``remaining`` drops, ``normal`` + ``duplicate`` does not grow), so "hints stopped arriving"
means none for ``quiet_s``. With ``clock="guest"`` that wait (and ``first_hint_bound_s``) is counted on
the guest's clock: wall time less the time its vCPUs were runnable but waiting for a core, which a
host reads from ``/proc`` (a vCPU's thread id is in QMP's ``query-cpus-fast``). On a loaded host a
starved vCPU goes quiet for tens of ms at a time while it still has hints to give; on the guest's
clock that is no silence. Every ordering is bounded: a guest that never hints, or stops halfway,
costs at most ``first_hint_bound_s`` or ``quiet_s`` more, and never more than ``bound_s``. An ordering
changes only when pages are sent, never which pages must be: the dirty log and the STOP before each
sync stay as they were (``tests/system/test_orderings.py`` checks nothing is lost).
"""

from __future__ import annotations

from typing import Any

import attrs

from refmodel.system.timing import (PAGE, DriverTiming, GuestMix, HostSchedule, HostTiming, ReportingTiming,
                                    Run, Uncapped, simulate)

#: QEMU takes ``max-bandwidth`` in bytes/s; this is "no cap" as the benchmarks set it.
UNCAPPED_BPS = 1 << 40
#: What an ordering's quiet time and first-hint bound are counted on (its overall bound is always wall time).
CLOCKS = ("wall", "guest")


@attrs.frozen
class CapThenLift:
    """Start with ``max-bandwidth`` at ``cap_bps`` and lift it once hints stop arriving (none for
    ``quiet_s`` after the first), or when none came within ``first_hint_bound_s``, or at ``bound_s``."""

    cap_bps: float
    quiet_s: float = 0.05
    first_hint_bound_s: float = 0.25
    bound_s: float = 2.0
    start_delay_s: float = 0.0
    clock: str = attrs.field(default="wall", validator=attrs.validators.in_(CLOCKS))

    def lifted(self, t: float, skipped: float, last_skip_t: float | None,
               guest: tuple[float, float | None] | None = None) -> bool:
        """``guest``: (now, the last hint) on the guest's clock, used when ``clock`` is "guest"."""
        if t >= self.bound_s:
            return True
        if self.clock == "guest" and guest is not None:
            t, last_skip_t = guest
        if last_skip_t is None or skipped <= 0:
            return t >= self.first_hint_bound_s
        return t - last_skip_t >= self.quiet_s

    def cap(self, t: float, skipped: float, last_skip_t: float | None,
            guest: tuple[float, float | None] | None = None) -> float | None:
        return None if self.lifted(t, skipped, last_skip_t, guest) else self.cap_bps


@attrs.frozen
class Paced:
    """Pace the bulk pass by the hints: before the first, ``max-bandwidth`` at ``start_bps``; then at
    ``share`` times the rate at which hints clear guest RAM (hinted pages x page size / seconds since
    ``migrate``, so the driver's latency counts against it), never below ``floor_bps``; lifted as
    :class:`CapThenLift` is. A fixed cap suits only the rates it was tuned for: a guest whose vCPUs
    are starved hints late and slowly, and the capped pass outruns it; a paced pass slows with it."""

    share: float = 0.5
    start_bps: float = 1e6
    floor_bps: float = 1e6
    quiet_s: float = 0.05
    first_hint_bound_s: float = 0.25
    bound_s: float = 2.0
    start_delay_s: float = 0.0
    clock: str = attrs.field(default="wall", validator=attrs.validators.in_(CLOCKS))

    def cap(self, t: float, skipped: float, last_skip_t: float | None,
            guest: tuple[float, float | None] | None = None) -> float | None:
        lift = CapThenLift(self.start_bps, self.quiet_s, self.first_hint_bound_s, self.bound_s,
                           clock=self.clock)
        if lift.lifted(t, skipped, last_skip_t, guest):
            return None
        if skipped <= 0 or t <= 0:
            return self.start_bps
        return max(self.floor_bps, self.share * skipped * PAGE / t)


#: Delay the bulk pass until the driver's first STOP (seen as hints ceasing): a cap letting almost nothing out.
GATE_BPS = 1e6


def gate_until_stop(**bounds: Any) -> CapThenLift:
    return CapThenLift(GATE_BPS, **bounds)


@attrs.frozen
class SettleReporting:
    """Reporting: wait (before ``migrate``) until the guest's reporting has covered its free memory,
    or ``bound_s``; the wait is what the host pays, counted in the total time."""

    start_delay_s: float
    bound_s: float = 30.0

    def cap(self, t: float, skipped: float, last_skip_t: float | None,
            guest: tuple[float, float | None] | None = None) -> float | None:
        return None

    @classmethod
    def for_guest(cls, free_pages: int, since_free_s: float, rep: ReportingTiming = ReportingTiming(),
                  bound_s: float = 30.0) -> "SettleReporting":
        wait = max(0.0, rep.settled_after(free_pages) - since_free_s)
        return cls(min(wait, bound_s), bound_s)


KINDS = {"CapThenLift": CapThenLift, "Paced": Paced}


def conditions(link_gbps: float = 10.0) -> dict[str, tuple[str, HostTiming, DriverTiming]]:
    """The conditions orderings are judged under: the calibrated host (TCG to exec:cat), a link-limited one,
    and a loaded machine as in the committed 1 GiB real run (the driver's first hint 187 ms after START and
    about 300 blocks/s; the host 2.7 times slower, as that run's never-hinting migration)."""
    host, driver = HostTiming(), DriverTiming()
    link_s = 8 * (PAGE + 8) / (link_gbps * 1e9)
    return {"tcg": ("TCG to exec:cat (calibrated)", host, driver),
            "link": (f"{link_gbps:g} GbE", attrs.evolve(host, full_s=max(host.full_s, link_s)), driver),
            "loaded": ("loaded, as the 1 GiB real run", attrs.evolve(host, full_s=host.full_s * 2.7),
                       attrs.evolve(driver, first_hint_s=0.187, blocks_per_s=300.0))}


def parse(spec: str, **bounds: Any) -> CapThenLift | Paced:
    """``cap:GBPS``, ``gate`` or ``pace:SHARE`` (what ``bench_linux_migration.py --ordering`` takes)."""
    kind, _, arg = spec.partition(":")
    try:
        if kind == "cap":
            return CapThenLift(float(arg) * 1e9, **bounds)
        if kind == "gate" and not arg:
            return CapThenLift(GATE_BPS, **bounds)
        if kind == "pace":
            return Paced(float(arg or 0.5), **bounds)
    except ValueError:
        pass
    raise ValueError(f"ordering {spec!r}: expected cap:GBPS, gate or pace:SHARE")


def to_dict(schedule: CapThenLift | Paced) -> dict:
    return {"kind": type(schedule).__name__, **attrs.asdict(schedule)}


def from_dict(d: dict) -> CapThenLift | Paced:
    """The inverse of :func:`to_dict`; a dict without ``kind`` (results from before it) is a CapThenLift."""
    cls = KINDS[d.get("kind", "CapThenLift")]
    names = {f.name for f in attrs.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@attrs.frozen
class Outcome:
    name: str
    run: Run
    schedule: HostSchedule | None = None  # None: hinting off

    def over_honest(self) -> float:
        return self.run.full_pages / self.run.honest.pages


def compare(mix: GuestMix, host: HostTiming, driver: DriverTiming | None,
            schedules: dict[str, HostSchedule | None]) -> list[Outcome]:
    """Each schedule on the same guest and host (``None`` in ``schedules``: hinting off)."""
    out = []
    for name, sched in schedules.items():
        run = simulate(mix, host, None, Uncapped()) if sched is None else simulate(mix, host, driver, sched)
        out.append(Outcome(name, run, sched))
    return out


def best(outcomes: list[Outcome], no_hints_s: float) -> Outcome:
    """Fewest pages among the orderings no slower than hinting off; the fastest if none is."""
    ok = [o for o in outcomes if o.run.total_s <= no_hints_s]
    if not ok:
        return min(outcomes, key=lambda o: o.run.total_s)
    return min(ok, key=lambda o: (round(o.run.full_pages), o.run.total_s))
