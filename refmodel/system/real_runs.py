"""The timing model (:mod:`refmodel.system.timing`) applied to a real run as
``bench/bench_linux_migration.py`` records it (a dict of its results JSON), at the CPU shares that run
got: its ``cpu`` samples are (seconds since ``migrate``, {role: CPU seconds}) with roles ``vcpu0``,
``vcpu1``.., ``migration``, ``io``, ``other``, ``process`` and ``ROLE_wait`` (seconds runnable but
waiting for a core)."""

from __future__ import annotations

import attrs

from refmodel.system.orderings import from_dict
from refmodel.system.timing import (IDLE, DriverTiming, GuestMix, HostTiming, Load, ReportingDuring,
                                    ReportingTiming, Run, Uncapped, simulate)

HINTING = ("hint", "hint-ordered")
BASE = {"hint-ordered": "hint", "off-ordered": "off"}  # mode -> the device it ran with
READY_S = 0.1  # from the free to the bench's settle timer, for runs that did not record since_free_s
MIN_WINDOW_S = 0.03  # two samples closer than this give no share worth the name


def share(samples: list, role: str, t_from: float, t_to: float) -> float | None:
    """CPU seconds per wall second of ``role`` (``vcpu``: the busiest vCPU) between the samples nearest
    ``t_from`` and ``t_to``; None if they are under MIN_WINDOW_S apart."""
    if not samples:
        return None
    a = min(samples, key=lambda s: abs(s[0] - t_from))
    b = min(samples, key=lambda s: abs(s[0] - t_to))
    if b[0] - a[0] < MIN_WINDOW_S:
        return None
    roles = [k for k in b[1] if k.startswith("vcpu") and "_" not in k] if role == "vcpu" else [role]
    return max(((b[1].get(k, 0.0) - a[1].get(k, 0.0)) / (b[0] - a[0]) for k in roles), default=None)


def measured_load(run: dict) -> Load | None:
    """The shares one run got, None for a run recorded without samples of both. The driver's vCPU: the busiest
    vCPU from ``migrate`` until the driver stopped hinting (its hint curve's top) or the bulk pass ended,
    whichever came first; hinting is most of what that vCPU does then. The migration thread: over the
    bulk pass while uncapped (after an ordering lifted its cap), when it sends as fast as it is let run.
    Each clamped to [0.05, 1] (one thread, one core)."""
    samples = run.get("cpu")
    if not samples or not any("migration" in s for _, s in samples):
        return None  # no record, or one made before the migration thread was found (QEMU 9.0 renamed it)
    end = run.get("bulk_end_s") or run["wall"]
    vcpu = None
    if run["mode"] in HINTING:
        curve = run.get("hint_curve_guest") or run.get("hint_curve") or []
        top = max((b for _, b in curve), default=0)
        t_top = next((t for t, b in curve if top and b >= 0.98 * top), end)
        vcpu = share(samples, "vcpu", 0.0, min(end, max(t_top, MIN_WINDOW_S)))
    lifted = (run.get("ordering") or {}).get("lifted_s") or 0.0
    mig = share(samples, "migration", lifted if lifted < end - MIN_WINDOW_S else 0.0, end)

    def clamp(x: float | None) -> float:
        return 1.0 if x is None else min(1.0, max(0.05, x))

    return Load(clamp(vcpu), clamp(mig))


def modelled(args: dict, run: dict, driver: DriverTiming = DriverTiming(), host: HostTiming = HostTiming(),
             rep: ReportingTiming = ReportingTiming(), loaded: bool = True) -> Run:
    """The timing model's migration of one recorded run (``args``: the results' ``args``): the same guest,
    mode and ordering, at the CPU shares the run got (``loaded``, where recorded) or a core each."""
    mix = GuestMix.measured(args["mem_mib"], run["free_before"], args["fill_mib"])
    base = BASE.get(run["mode"], run["mode"])
    guest: DriverTiming | ReportingDuring | None = driver if base == "hint" else None
    if base == "report":  # reported before migrate, and reporting on while it runs
        since = run.get("since_free_s") or args["settle"] + READY_S
        guest = ReportingDuring(rep, mix.free, since)
        mix = mix.reported(rep.reported(mix.free, since))
    sched = from_dict(run["ordering"]) if run.get("ordering") else Uncapped()
    load = (measured_load(run) or IDLE) if loaded else IDLE
    if args.get("link_mbps"):
        host = attrs.evolve(host, link_bps=args["link_mbps"] * 1e6)
    return simulate(mix, host, guest, sched, load=load)
