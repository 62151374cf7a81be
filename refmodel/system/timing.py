"""Timing of a precopy migration with a hinting or reporting guest: a fluid model over page counts.

Where :mod:`refmodel.system.migration` says which pages a host may skip, this says when: the driver
hints at a rate after a latency, QEMU's bulk pass walks guest RAM from the bottom at its own rate,
and a hint saves a page only if it lands before the pass reaches that page. RAM holds, from the
bottom up (:func:`simulate` says why in that order):

* pages in use (non-zero), sent in full;
* free and recently written pages (the freed workload): Linux's free lists hand these out first, so
  the driver hints them first, and reporting reports them first;
* free and never written pages: zero pages, which QEMU sends as a flag.

The host's schedule (:class:`HostSchedule`) may cap the bandwidth as it goes, seeing only what QMP
shows: hinted pages leave ``ram.remaining`` without being sent. QEMU syncs the dirty log (hinting
STOPs before it) when what is left would go within its downtime limit, which hints bring forward,
and switches over when what the sync leaves still would (:func:`simulate`). Calibrated from the
committed real runs by ``bench/bench_timing_model.py``; the defaults are the median of its
calibrations on the QEMU 11.1 runs (``results/timing-model.txt``).
"""

from __future__ import annotations

from typing import Protocol

import attrs

from refmodel.system.migration import HonestIdeal

PAGE = 4096
FULL_BYTES = PAGE + 8  # a page and QEMU's header on the wire
ZERO_BYTES = 9  # a zero page: header and flag (measured: 1,003.6 MB for 243,791 full and 339,173 zero pages)


@attrs.frozen
class DriverTiming:
    """Linux's free page hinting driver, as seen from the host."""

    first_hint_s: float = 0.0223  # from START (a new command ID) to the first hint reaching QEMU
    blocks_per_s: float = 532.5  # blocks of 2^order pages hinted per second, while free blocks last
    order: int = 10  # Linux hints MAX_ORDER - 1 blocks (4 MiB) and only those
    hintable: float = 1.0  # share of free memory that lies in free blocks of that order
    #: Non-zero pages the guest dirties per page it hints (resent next round); fitted, cause not isolated.
    dirty_per_hint: float = 0.0926
    #: init_on_alloc: allocating a block to hint zeroes it, so it is dirtied, but resent as a flag.
    zeroes_hinted: bool = True
    #: Linux hints at its rate until this share of free memory, then at ``tail_ratio`` of it: the last free
    #: blocks come slower (measured: the MemFree curve bends at 60-97% of MemFree in the real runs).
    taper_at: float = 1.0
    tail_ratio: float = 1.0
    #: Hint the highest free blocks first (what Linux's LIFO free lists hand out after a sequential free);
    #: False: lowest first, the order QEMU's pass walks in. Driver-side guidance, not a measured choice.
    top_down: bool = True

    #: A page hinted ahead of the pass is not sent at all (QEMU clears it from the bitmap).
    skipped_as_zero = False

    @property
    def pages_per_s(self) -> float:
        return self.blocks_per_s * (1 << self.order)

    def step(self, t: float, dt: float) -> float:
        """Pages hinted in [t, t + dt) after START, while free blocks last."""
        return self.pages_per_s * dt if t >= self.first_hint_s else 0.0

    def hinted_by(self, t: float) -> float:
        """Pages hinted t seconds after START, before free memory runs out."""
        return max(0.0, t - self.first_hint_s) * self.pages_per_s


@attrs.frozen
class ReportingTiming:
    """Linux's free page reporting (mm/page_reporting.c): passes ``delay_s`` apart (plus the pass itself),
    each reporting at most (ceil(free blocks / (capacity * 16)) + 1) chunks of ``capacity`` blocks per order.

    Reporting is already at work when a workload frees: a fresh guest's free memory takes it many passes, so
    the free falls somewhere in a period and the first pass after it comes ``first_pass_s`` later (measured
    on QEMU 11.1 with Linux 7.2: four drops of 240-260 MiB in the host's RAM file, 2.08-2.11 s apart, the
    first within 0.25 s of the free). The model takes the middle of a period unless told."""

    delay_s: float = 2.0  # PAGE_REPORTING_DELAY
    capacity: int = 32  # PAGE_REPORTING_CAPACITY: blocks per report
    budget_divisor: int = 16
    order: int = 10  # free memory of a freshly freed workload lies in MAX_ORDER - 1 blocks
    pass_s: float = 0.09  # one pass: the reports and the host's discards, before the next delay starts
    first_pass_s: float | None = None  # after the free; None: half a period

    @property
    def period_s(self) -> float:
        return self.delay_s + self.pass_s

    @property
    def first_s(self) -> float:
        return self.period_s / 2 if self.first_pass_s is None else self.first_pass_s

    def pages_per_pass(self, free_pages: int) -> int:
        blocks = free_pages >> self.order
        calls = -(-blocks // (self.capacity * self.budget_divisor)) + 1
        return calls * self.capacity << self.order

    def passes_by(self, since_free_s: float) -> int:
        """Passes done ``since_free_s`` after the free."""
        if since_free_s < self.first_s:
            return 0
        return int((since_free_s - self.first_s) // self.period_s) + 1

    def reported(self, free_pages: int, since_free_s: float) -> int:
        """Pages reported (and discarded by the host) ``since_free_s`` after ``free_pages`` were freed."""
        return min(free_pages, self.passes_by(since_free_s) * self.pages_per_pass(free_pages))

    def settled_after(self, free_pages: int) -> float:
        """Seconds after the free until every free block is reported."""
        per = self.pages_per_pass(free_pages)
        if not per or not free_pages:
            return 0.0
        return self.first_s + self.period_s * (-(-free_pages // per) - 1)


@attrs.frozen
class ReportingDuring:
    """Free page reporting still at work while the migration runs, in :func:`simulate`'s driver slot:
    ``rep``'s passes go on, ``since_s`` after the free of ``free_pages`` at ``migrate``. A page reported
    before the pass reaches it reads as zero (the host discarded it) and goes as a zero page."""

    rep: ReportingTiming
    free_pages: int
    since_s: float
    first_hint_s = 0.0
    hintable = 1.0
    taper_at = 1.0
    tail_ratio = 1.0
    top_down = True  # as hinting: the freed memory at the free lists' heads first
    dirty_per_hint = 0.0
    zeroes_hinted = False
    skipped_as_zero = True
    pages_per_s = 0.0  # in bursts, one pass every delay: see step

    def step(self, t: float, dt: float) -> float:
        f, s = self.free_pages, self.since_s
        return float(self.rep.reported(f, s + t + dt) - self.rep.reported(f, s + t))


@attrs.frozen
class HostTiming:
    """QEMU's migration thread to ``exec:cat``, uncapped unless a schedule caps it."""

    full_s: float = 1.607e-6  # seconds per page sent in full
    zero_s: float = 0.336e-6  # seconds per zero page (read, compare, flag)
    skip_s: float = 0.0  # seconds per page a hint cleared from the bitmap
    sync_s: float = 0.005  # a dirty-log sync between rounds
    downtime_s: float = 0.3  # QEMU's downtime-limit: switch over when what is left goes in this long
    window_s: float = 0.1  # BUFFER_DELAY: QEMU measures its bandwidth over windows this long
    tail_s: float = 0.0  # switchover: final sync, device state, completion
    background_per_s: float = 360.0  # non-zero pages a running guest dirties per second
    link_bps: float = float("inf")  # the network, bytes per second (the bench: max-bandwidth in every mode)


@attrs.frozen
class Load:
    """The CPU a run got on a shared host, in CPU seconds per wall second (measured: QEMU's per-thread
    utime + stime). :class:`DriverTiming`'s rates are per second of the driver's vCPU and
    :class:`HostTiming`'s per second of QEMU's migration thread, each with a core to itself (share 1);
    a run whose vCPU got half a core hints at half the rate, and one whose migration thread got half a
    core sends at half the rate. The background dirtying (a few hundred pages a second) is left as is."""

    vcpu: float = 1.0  # the busiest vCPU thread's share while the driver hints
    migration: float = 1.0  # the migration thread's share during the bulk pass

    def __attrs_post_init__(self) -> None:
        if not (0 < self.vcpu <= 1.5 and 0 < self.migration <= 1.5):
            raise ValueError(f"load: CPU shares must be in (0, 1.5], got vcpu={self.vcpu}, "
                             f"migration={self.migration}")

    def driver(self, d: DriverTiming | ReportingDuring) -> DriverTiming | ReportingDuring:
        if isinstance(d, ReportingDuring):  # timer-driven passes: left as they are
            return d
        return attrs.evolve(d, blocks_per_s=d.blocks_per_s * self.vcpu,
                            first_hint_s=d.first_hint_s / self.vcpu)

    def host(self, h: HostTiming) -> HostTiming:
        return attrs.evolve(h, full_s=h.full_s / self.migration, zero_s=h.zero_s / self.migration,
                            skip_s=h.skip_s / self.migration)


IDLE = Load()


@attrs.frozen
class GuestMix:
    """A guest's RAM at the migration start, in pages."""

    n_pages: int
    in_use: int  # non-zero, in use
    free_recent: int  # free, non-zero: the workload's freed memory
    free_zero: int  # free, never written

    def __attrs_post_init__(self) -> None:
        if min(self.in_use, self.free_recent, self.free_zero) < 0 or \
                self.in_use + self.free_recent + self.free_zero != self.n_pages:
            raise ValueError(f"guest mix: {self.in_use} + {self.free_recent} + {self.free_zero} pages != "
                             f"{self.n_pages}")

    @classmethod
    def measured(cls, mem_mib: int, free_bytes: int, fill_mib: int) -> "GuestMix":
        """From a real run: RAM size, MemFree at the start and the MiB written then freed."""
        n = (mem_mib << 20) // PAGE
        free = free_bytes // PAGE
        recent = min(free, (fill_mib << 20) // PAGE)
        return cls(n, n - free, recent, free - recent)

    @property
    def free(self) -> int:
        return self.free_recent + self.free_zero

    def reported(self, pages: int) -> "GuestMix":
        """The same guest after ``pages`` free pages were reported: the host dropped them, they read zero."""
        moved = min(pages, self.free_recent)
        return attrs.evolve(self, free_recent=self.free_recent - moved, free_zero=self.free_zero + moved)


class HostSchedule(Protocol):
    """What the host does with QMP: when to start, and the bandwidth cap at each moment."""

    @property
    def start_delay_s(self) -> float:
        """Seconds between the decision to migrate and ``migrate``."""

    def cap(self, t: float, skipped: float, last_skip_t: float | None,
            guest: tuple[float, float | None] | None = None) -> float | None:
        """Bytes/s (None: uncapped) at ``t`` s after ``migrate``, having seen ``skipped`` pages leave
        ``ram.remaining`` unsent, the last of them at ``last_skip_t``; ``guest``: the same two moments on
        the guest's clock (wall time less its vCPUs' waits for a core), where the host reads it. Once it
        says None the cap is lifted for good: the host does not cap again."""


@attrs.frozen
class Uncapped:
    """QEMU's default as the benchmarks run it: no cap, migrate at once."""

    start_delay_s: float = 0.0

    def cap(self, t: float, skipped: float, last_skip_t: float | None,
            guest: tuple[float, float | None] | None = None) -> float | None:
        return None


@attrs.frozen
class Run:
    """One modelled migration. Times are from ``migrate``; ``wait_s`` is spent before it."""

    full_pages: float
    zero_pages: float
    hinted: float  # pages the driver held as hints when the round ended
    skipped: float  # pages hints saved (cleared before the pass reached them)
    bulk_end_s: float
    wall_s: float
    wait_s: float = 0.0
    hint_curve: tuple[tuple[float, float], ...] = ()
    progress: tuple[tuple[float, float], ...] = ()
    #: In use at the start (all non-zero), plus background writes after the pass: resends no ordering avoids.
    honest: HonestIdeal = HonestIdeal(0)

    @property
    def mb(self) -> float:
        return (self.full_pages * FULL_BYTES + self.zero_pages * ZERO_BYTES) / 1e6

    @property
    def total_s(self) -> float:
        return self.wait_s + self.wall_s


def _racing(driver: DriverTiming | ReportingDuring, t: float, hinted: float, budget: float, name: str,
            front: dict[str, float],
            region: dict[str, tuple[float, float]]) -> bool:
    """Whether the driver is hinting region ``name`` now (upward; it does the freed workload first)."""
    if t < driver.first_hint_s or hinted >= budget or front[name] >= region[name][1]:
        return False
    return name == "recent" or front["recent"] >= region["recent"][1]


def _sendable(cap: float | None, host: HostTiming, dt: float) -> float:
    """Bytes the host may send in ``dt``: under the schedule's cap (None: lifted) and the link."""
    return min(float("inf") if cap is None else cap, host.link_bps) * dt


def simulate(mix: GuestMix, host: HostTiming, driver: DriverTiming | ReportingDuring | None = None,
             schedule: HostSchedule = Uncapped(), *, load: Load = IDLE, dt: float = 5e-4,
             t_max: float = 600.0) -> Run:
    """One precopy migration of ``mix``: the pass with hints landing as they come, QEMU's dirty-log syncs
    and switchover as QEMU decides them, the driver and the host at the CPU shares of ``load``.

    RAM as Linux lays it out after boot (free lists fill from the bottom, so allocations do too): in use
    at the bottom, the freed workload above it, never-written memory at the top. The freed workload went
    back to the free lists' heads in address order, so the driver takes it from the top down (then the
    never-written top); the pass walks up. A hint lands ahead of the pass until they meet; after that
    every hint is for a page already sent.

    QEMU (migration_iteration_run) syncs the dirty log once the pages left in its bitmap, at 4 KiB each,
    fall below ``threshold``: the bytes it sent over the last ``window_s``, per second, times
    ``downtime_s``. Hints leave the bitmap, so they bring the sync forward, before the pass is done. The
    sync STOPs hinting and, the guest running, STARTs a new command (the driver answers after its latency);
    what the guest wrote since (every block hinted was zeroed when allocated: init_on_alloc) joins the
    bitmap. If what is left is within the threshold QEMU stops the guest and sends the rest unthrottled
    (switchover, at the link's rate); otherwise the pass goes on and the next sync decides again.
    """
    host, driver = load.host(host), (None if driver is None else load.driver(driver))

    def guest_clock(t: float, last: float | None) -> tuple[float, float | None]:
        # A vCPU that got a share s of a core while busy waited for one the rest of the time.
        return t * load.vcpu, (None if last is None else last * load.vcpu)

    use_end, recent_end, n = float(mix.in_use), float(mix.in_use + mix.free_recent), float(mix.n_pages)
    region = {"recent": (use_end, recent_end), "zero": (recent_end, n)}
    down = driver is None or driver.top_down
    # The driver's next block per region; it has hinted [front, top) going down, [bottom, front) going up.
    front = {k: (hi if down else lo) for k, (lo, hi) in region.items()}
    clears = driver is not None and not driver.skipped_as_zero  # hints leave QEMU's bitmap

    def hinted_from(x: float, name: str) -> float:
        """Pages of region ``name`` at or above ``x`` that the driver has hinted."""
        bottom, top = region[name]
        lo, hi = (front[name], top) if down else (bottom, front[name])
        lo, hi = max(lo, bottom), min(hi, top)
        return max(0.0, hi - max(lo, x))

    def unpassed(x: float) -> tuple[float, float]:
        """Above the pass at ``x``, still in QEMU's bitmap: pages it would send in full and as zero pages."""
        ahead = {k: hinted_from(x, k) for k in region}
        full = max(0.0, use_end - x) + max(0.0, recent_end - max(x, use_end)) - ahead["recent"]
        zero = max(0.0, n - max(x, recent_end)) - ahead["zero"]
        if not clears:  # reported pages stay in the bitmap: the host dropped them, they read as zero
            zero += ahead["recent"] + ahead["zero"]
        return full, zero

    budget = driver.hintable * mix.free if driver else 0.0
    t = p = full = zero = hinted = skipped = sent_bytes = 0.0
    last_skip: float | None = None
    lifted = False
    curve, progress = [], []
    resume = driver.first_hint_s if driver is not None else 0.0  # the driver answers a START after this
    threshold, win_t0, win_bytes = 0.0, 0.0, 0.0
    pool = [0.0, 0.0]  # in QEMU's bitmap from a sync, not yet resent: full, zero
    since = [0.0, 0.0]  # written by the guest since the last sync: full, zero
    bulk_end: float | None = None
    while True:
        if t > t_max:
            raise ValueError(f"timing model: the migration did not converge within {t_max:g} s (a cap of 0?)")
        since[0] += host.background_per_s * dt
        if driver is not None and t >= resume and hinted < budget:
            dh = driver.step(t, dt) * (driver.tail_ratio if hinted >= driver.taper_at * mix.free else 1.0)
            dh = min(dh, budget - hinted)
            hinted += dh
            since[0] += driver.dirty_per_hint * dh
            if driver.zeroes_hinted:
                since[1] += dh
            for kind in ("recent", "zero"):  # Linux hands out the recently freed blocks first
                bottom, top = region[kind]
                take = min(dh, front[kind] - bottom if down else top - front[kind])
                if take <= 0:
                    continue
                lo, hi = (front[kind] - take, front[kind]) if down else (front[kind], front[kind] + take)
                ahead = max(0.0, hi - max(lo, p))  # the part the pass has not reached: skipped
                skipped += ahead
                if ahead > 0:
                    last_skip = t
                front[kind] = lo if down else hi
                dh -= take
        cap = None if lifted else schedule.cap(t, skipped, last_skip, guest_clock(t, last_skip))
        lifted = cap is None
        time_left, bytes_left = dt, _sendable(cap, host, dt)
        before = sent_bytes
        while p < n and time_left > 1e-12 and bytes_left > 1e-9:
            if p < use_end:
                seg, c, b, kind = use_end, host.full_s, float(FULL_BYTES), "full"
            else:
                name = "recent" if p < recent_end else "zero"
                bottom, top = region[name]
                unhinted = (host.full_s, float(FULL_BYTES), "full") if name == "recent" else \
                    (host.zero_s, float(ZERO_BYTES), "zero")
                edge = min(max(front[name], bottom), top)
                if (p < edge) == down:  # below the front going down, or above it going up: not hinted yet
                    seg, (c, b, kind) = (edge if down else top), unhinted
                    if not down and driver is not None and _racing(driver, t, hinted, budget, name, front,
                                                                     region) and driver.pages_per_s * c > 1:
                        break  # at the front of a faster driver going the same way: it hints each page first
                elif driver is not None and driver.skipped_as_zero:
                    seg, c, b, kind = (top if down else edge), host.zero_s, float(ZERO_BYTES), "zero"
                else:
                    seg, c, b, kind = (top if down else edge), host.skip_s, 0.0, "skip"
            pages = seg - p
            if c > 0:
                pages = min(pages, time_left / c)
            if b > 0:
                pages = min(pages, bytes_left / b)
            p += pages
            time_left -= pages * c
            bytes_left -= pages * b
            sent_bytes += pages * b
            if kind == "full":
                full += pages
            elif kind == "zero":
                zero += pages
        for i, (c, b) in enumerate(((host.full_s, FULL_BYTES), (host.zero_s, ZERO_BYTES))):
            if p >= n and pool[i] > 0:  # the pass wrapped: what the last sync found dirty
                pages = min(pool[i], time_left / c if c > 0 else pool[i], bytes_left / b)
                pool[i] -= pages
                time_left -= pages * c
                bytes_left -= pages * b
                sent_bytes += pages * b
                if i == 0:
                    full += pages
                else:
                    zero += pages
        t += dt
        win_bytes += sent_bytes - before
        if t - win_t0 >= host.window_s - 1e-9:  # migration_update_counters
            threshold = win_bytes / (t - win_t0) * host.downtime_s
            win_t0, win_bytes = t, 0.0
        curve.append((t, hinted))
        progress.append((t, full))
        f_left, z_left = unpassed(p)
        estimate = (f_left + z_left + pool[0] + pool[1]) * PAGE
        if estimate < threshold or estimate == 0:
            t += host.sync_s  # the sync: STOP, the dirty log in, then START while the guest runs
            if bulk_end is None:
                bulk_end = t
            pool = [pool[0] + since[0], pool[1] + since[1]]
            since = [0.0, 0.0]
            if (f_left + z_left + pool[0] + pool[1]) * PAGE <= threshold:  # the exact pending
                break
            resume = t + (driver.first_hint_s if driver is not None else 0.0)
    # Switchover: the guest stopped, the rest at once (QEMU ignores max-bandwidth here; a network does not).
    f_left, z_left = unpassed(p)
    rest_full, rest_zero = f_left + pool[0] + since[0], z_left + pool[1] + since[1]
    full += rest_full
    zero += rest_zero
    down_s = max(rest_full * host.full_s + rest_zero * host.zero_s,
                 (rest_full * FULL_BYTES + rest_zero * ZERO_BYTES) / host.link_bps) + host.tail_s
    wall = t + down_s
    assert bulk_end is not None
    written = host.background_per_s * (wall - bulk_end)  # after the first sync: resent, no ordering avoids it
    step = max(1, len(curve) // 200)
    return Run(full, zero, hinted, skipped, bulk_end, wall,
               schedule.start_delay_s, tuple(curve[::step]), tuple(progress[::step]),
               HonestIdeal(mix.in_use, min(mix.in_use, round(written))))
