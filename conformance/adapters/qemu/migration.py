"""A real live migration between two QEMUs, with the reference driver answering free page hints.

The source guest is our reference driver plus a workload, both acting on the source's RAM (shared
through a file). Writes the migration must see go through qtest, so QEMU's dirty log records them
(a write through our own mapping would bypass it). Free memory is filled with non-zero bytes first,
so every page QEMU does not skip costs a full page on the wire.

``migrate(hints=...)`` returns what was sent and whether every page the guest uses arrived intact.
``ordering=`` runs it under a host ordering (:class:`OrderedStart`, QMP only), as the real-guest bench
(``bench/bench_linux_migration.py``) does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import attrs

from refmodel.balloon.driver import BalloonDriver
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.system.guest import bits
from refmodel.system.guest_os import GuestOS, page_pattern
from refmodel.system.migration import predict_full_pages
from refmodel.system.orderings import UNCAPPED_BPS, CapThenLift, Paced, to_dict

from conformance.adapters.qemu import virtio_pci as vp
from conformance.adapters.qemu.device import RESERVED_PAGES, QemuBalloon
from conformance.adapters.qemu.process import QemuError, QemuProcess


@attrs.frozen
class MigrationResult:
    hints: bool
    ram_mib: int
    transferred_bytes: int  # QEMU's ram.transferred
    normal_pages: int  # full pages QEMU sent
    in_use_pages: int  # pages the guest used at the end
    dirtied_pages: int  # pages the guest wrote during migration
    hinted_pages: int  # pages the driver hinted (held until DONE)
    rewritten_hinted: int  # hinted pages the guest took back and wrote during migration
    lost: tuple[int, ...]  # in-use pages whose destination bytes differ from the source's
    cmd_ids: tuple[int, ...]  # free_page_hint_cmd_id as the driver read it at each configuration change
    ended_with_done: bool
    seconds: float
    dirty_syncs: int = 0  # QEMU's ram.dirty-sync-count
    ids_by_sync: tuple[tuple[int, int], ...] = ()  # (dirty-sync-count, command ID the driver read), in order
    stale_tag: bool = False  # the driver echoed an ID one below the published one (never issued)
    model_pages: int = 0  # full pages the model sends for the same pages, hints and writes (all hints first)
    ordering: dict | None = None  # OrderedStart.summary() when run under an ordering

    @property
    def ideal_pages(self) -> int:
        return self.in_use_pages + self.dirtied_pages


class OrderedStart:
    """Carry out an ordering of :mod:`refmodel.system.orderings` (:class:`CapThenLift`, :class:`Paced`)
    over QMP, with no QEMU patch: cap ``max-bandwidth`` before ``migrate``, watch hints in
    ``query-migrate``, move the cap as the ordering says (when it changes by a tenth or more) and lift
    it for good.

    In the first round (``dirty-sync-count`` 1) every page leaves ``ram.remaining`` either sent
    (``normal`` + ``duplicate``) or cleared by a hint, so hinted = (total - remaining) / page size -
    sent. Fewer than ``noise`` such pages are not a hint (a page QEMU is sending is briefly in neither
    count); a hint is a block (Linux: 1,024 pages; the reference driver: up to 256). Once the round is
    over the cap is lifted whatever the schedule says: the ordering is for the bulk pass only. Call
    :meth:`begin` before ``migrate``, :meth:`started` right after, :meth:`poll` with each
    ``query-migrate`` answer. ``guest_clock`` (seconds, any origin) is the guest's clock for a schedule
    whose ``clock`` is "guest": wall time less its vCPUs' waits for a core (the caller reads them).
    """

    def __init__(self, schedule: CapThenLift | Paced, execute: Callable[..., object], *,
                 lift_to: int = UNCAPPED_BPS, noise: int = 64,
                 guest_clock: Callable[[], float] | None = None) -> None:
        self.schedule, self.execute, self.lift_to, self.noise = schedule, execute, lift_to, noise
        self.guest_clock, self.g0 = guest_clock, 0.0
        self.last_skip_g: float | None = None
        self.guest_s: float | None = None
        self.cap_now = 0
        self.cap_changes = 0
        self.t0 = 0.0
        self.skipped = 0
        self.first_skip_s: float | None = None
        self.last_skip_s: float | None = None
        self.lifted_s: float | None = None
        self.why = ""

    def begin(self) -> None:
        self._set(self.schedule.cap(0.0, 0, None) or self.lift_to)

    def _set(self, bps: float) -> None:
        self.cap_now = max(1, int(min(bps, self.lift_to)))  # never above the link the host lifts to
        self.cap_changes += 1
        self.execute("migrate-set-parameters", **{"max-bandwidth": self.cap_now})

    def started(self) -> None:
        self.t0 = time.monotonic()
        self.g0 = self.guest_clock() if self.guest_clock is not None else 0.0

    def poll(self, info: dict) -> None:
        if self.lifted_s is not None:
            return
        t = time.monotonic() - self.t0
        g = None if self.guest_clock is None else self.guest_clock() - self.g0
        ram = info.get("ram") or {}
        if ram and int(ram.get("dirty-sync-count", 0)) > 1:
            self._lift(t, "the bulk pass ended")
            return
        if ram:
            page = int(ram.get("page-size", BALLOON_PAGE_SIZE)) or BALLOON_PAGE_SIZE
            accounted = (int(ram["total"]) - int(ram["remaining"])) // page
            hinted = accounted - int(ram["normal"]) - int(ram["duplicate"])
            if hinted >= self.noise and hinted > self.skipped:
                self.skipped = hinted
                self.last_skip_s, self.last_skip_g = t, g
                if self.first_skip_s is None:
                    self.first_skip_s = t
        if info.get("status") in ("completed", "failed", "cancelled"):
            return
        guest = None if g is None else (g, self.last_skip_g)
        cap = self.schedule.cap(t, self.skipped, self.last_skip_s, guest)
        self.guest_s = g
        if cap is None:
            s = self.schedule
            self._lift(t, "bound" if t >= s.bound_s else "no hint came" if self.last_skip_s is None
                       else "hints stopped")
        elif abs(cap - self.cap_now) >= 0.1 * self.cap_now:
            self._set(cap)

    def _lift(self, t: float, why: str) -> None:
        self._set(self.lift_to)
        self.lifted_s, self.why = t, why

    def summary(self) -> dict:
        return {**to_dict(self.schedule), "first_hint_s": self.first_skip_s, "hinted_seen": self.skipped,
                "lifted_s": self.lifted_s, "lifted_because": self.why, "cap_changes": self.cap_changes,
                "lifted_guest_s": self.guest_s}


def _nonzero_pages(q: QemuProcess) -> int:
    """The pages of q's RAM holding anything but zeros, as a mask (QEMU sends zero pages as a flag)."""
    zero, view, out = bytes(BALLOON_PAGE_SIZE), memoryview(q.mem.read(0, q.mem.size)), bytearray()
    for base in range(0, len(view), 8 * BALLOON_PAGE_SIZE):
        byte = 0
        for bit in range(8):
            off = base + bit * BALLOON_PAGE_SIZE
            if off < len(view) and view[off:off + BALLOON_PAGE_SIZE] != zero:
                byte |= 1 << bit
        out.append(byte)
    return int.from_bytes(out, "little")


def _qtest_write_page(qemu: QemuProcess, page: int, data: bytes) -> None:
    qemu.qtest.cmd(f"write 0x{page * BALLOON_PAGE_SIZE:x} 0x{len(data):x} 0x{data.hex()}")


class MigrationPair:
    """A source QEMU and a destination QEMU started with ``-incoming``, both under qtest, the source's
    balloon with ``free-page-hint`` on or off. ``pause-before-switchover`` is set: qtest writes reach
    RAM even with the VM stopped, unlike a vCPU's, so the final dirty-log sync must follow our last
    write; :meth:`finish` lets the migration through the pause."""

    def __init__(self, binary: str | None = None, *, ram_mib: int = 64, hints: bool = True,
                 bandwidth: int = 64 << 20, reporting: bool = False,
                 ordering: CapThenLift | Paced | None = None) -> None:
        device = ("virtio-balloon-pci,id=balloon0,disable-legacy=on,iothread=io0,"
                  f"free-page-hint={'on' if hints else 'off'},free-page-reporting={'on' if reporting else 'off'}")
        self.src = QemuProcess(binary, device=device, ram_mib=ram_mib)
        self.dst: QemuProcess | None = None
        try:
            self.dst = QemuProcess(binary, device=device, ram_mib=ram_mib, extra_args=("-incoming", "defer"))
            self.uri = f"unix:{self.dst.dir / 'migrate.sock'}"
            self.dst.qmp.execute("migrate-incoming", uri=self.uri)
            self.src.qmp.execute("migrate-set-parameters", **{"max-bandwidth": bandwidth})
            self.ordered = None if ordering is None else OrderedStart(ordering, self.src.qmp.execute,
                                                                        lift_to=bandwidth)
            self.src.qmp.execute("migrate-set-capabilities",
                                 capabilities=[{"capability": "pause-before-switchover", "state": True}])
        except BaseException:
            self.close()
            raise

    def source_balloon(self) -> tuple[QemuBalloon, GuestOS]:
        """Set up the source's virtio-pci transport and let the VM run; the guest OS over its RAM."""
        caps = vp.setup(vp.find_balloon(self.src.qtest))
        self.src.qmp.execute("cont")
        return QemuBalloon(self.src, caps), GuestOS.over(self.src.mem, reserved=RESERVED_PAGES)

    def fill_noise(self, pages: Iterable[int]) -> None:
        """Non-zero bytes in ``pages`` (the guest's free pages), as in a guest that ran a while: each
        page QEMU does not skip costs a full page on the wire (QEMU sends zero pages as a flag)."""
        noise = b"\xa5" * BALLOON_PAGE_SIZE
        for p in pages:
            self.src.mem.write(p * BALLOON_PAGE_SIZE, noise)

    def start(self) -> None:
        if self.ordered is not None:
            self.ordered.begin()
        self.started = time.monotonic()
        self.switching = False
        self.src.qmp.execute("migrate", uri=self.uri)
        if self.ordered is not None:
            self.ordered.started()

    def info(self) -> dict:
        return self.src.qmp.execute("query-migrate") or {}

    def status(self) -> str:
        return self.info().get("status", "none")

    def cancel(self) -> None:
        self.src.qmp.execute("migrate_cancel")

    def step(self, timeout: float) -> dict | None:
        """One poll: None once the migration has ended, else QEMU's query-migrate answer."""
        info = self.info()
        status = info.get("status")
        if self.ordered is not None:
            self.ordered.poll(info)
        if status in ("completed", "failed", "cancelled"):
            return None
        if status == "pre-switchover":
            if not self.switching:  # once: a poll may still read pre-switchover after the continue
                self.switching = True  # the final dirty-log sync follows: no guest write may come after this
                self.src.qmp.execute("migrate-continue", state="pre-switchover")
        elif time.monotonic() - self.started > timeout:
            raise QemuError(f"migration still {status} after {timeout:g} s")
        return info

    def finish(self, pump: Callable[[], None], timeout: float = 120.0) -> dict:
        """Run ``pump`` (the guest's driver) until the migration ends; it must complete."""
        while self.step(timeout) is not None:
            pump()
            time.sleep(0.001)
        return self.completed()

    def completed(self) -> dict:
        info = self.info()
        if info.get("status") != "completed":
            raise QemuError(f"migration ended {info.get('status')}: {info.get('error-desc', '')}")
        assert self.dst is not None
        self.dst.qmp.execute("query-status")
        return info

    def close(self) -> None:
        self.src.close()
        if self.dst is not None:
            self.dst.close()


def migrate(*, hints: bool, ram_mib: int = 64, in_use_pages: int = 2048, rewrite: int = 32,
            bandwidth: int = 64 << 20, binary: str | None = None, timeout: float = 120.0,
            stale_tag: bool = False, churn_seconds: float = 0.0, churn_pages: int = 64,
            hint_order: int = 8, hint_min_order: int | None = 0,
            ordering: CapThenLift | Paced | None = None) -> MigrationResult:
    """One migration. With ``stale_tag`` the driver tags its hints with an ID QEMU never published,
    so QEMU must ignore them (BAL-FPH-DEV-3) and send every page anyway. For ``churn_seconds`` the guest
    rewrites ``churn_pages`` in-use pages per step, so the migration runs several dirty-log syncs.
    With ``ordering`` the host caps the bandwidth at the start and lifts it as the ordering says."""
    pair = MigrationPair(binary, ram_mib=ram_mib, hints=hints, bandwidth=bandwidth, ordering=ordering)
    try:
        dev, os_ = pair.source_balloon()
        src, dst = pair.src, pair.dst
        assert dst is not None
        drv = BalloonDriver(hint_burst=4096, hint_order=hint_order, hint_min_order=hint_min_order, queue_size=64)
        if not drv.probe(dev, os_):
            raise QemuError("the source balloon refused the reference driver's features")
        published: list[int] = []
        if stale_tag and drv.hint is not None:
            real = drv.hint.read_cmd_id

            def read_stale() -> int:
                cid = real()
                if cid >= 2 and (not published or published[-1] != cid):
                    published.append(cid)
                return cid - 1 if cid > 2 else cid

            drv.hint.read_cmd_id = read_stale
        for _ in range(in_use_pages):
            os_.workload_alloc_write()
        pair.fill_noise(bits(os_.pages.free))
        nonzero = _nonzero_pages(src)
        pair.start()
        start = pair.started
        ids: list[int] = []
        by_sync: list[tuple[int, int]] = []
        in_use = sorted(os_.workload)
        churned = 0
        dirtied: set[int] = set()
        rewritten = hinted_total = hinted_union = 0
        while (info := pair.step(timeout)) is not None:
            if pair.switching:  # QEMU reads "device" after the pause: the guest is stopped for good
                time.sleep(0.001)
                continue
            syncs = int(info.get("ram", {}).get("dirty-sync-count", 0))
            dev.run()
            irq = dev.take_interrupts()
            drv.interrupt(irq.queues, irq.config)
            drv.run()
            # QEMU's field reads STOP mid-round (BAL-FPH-D5), so record what the driver was told on each
            # configuration change rather than polling the field.
            cid = drv.hint.latest if drv.hint is not None else None
            if stale_tag:
                cid = published[-1] if published else None
            if cid is not None and (not ids or ids[-1] != cid):
                ids.append(cid)
            if cid is not None and (not by_sync or by_sync[-1] != (syncs, cid)):
                by_sync.append((syncs, cid))
            if time.monotonic() - start < churn_seconds:  # keep the dirty log busy: more iterations
                for _ in range(churn_pages):
                    page = in_use[churned % len(in_use)]
                    churned += 1
                    os_.workload_write(page)
                    _qtest_write_page(src, page, page_pattern(os_.workload[page]))
                    dirtied.add(page)
            hinted_total = max(hinted_total, os_.pages.hinted.bit_count())
            hinted_union |= os_.pages.hinted
            # The guest takes back hinted pages and writes them, as Linux may before DONE (FPH-DRV-7).
            if rewritten < rewrite and os_.pages.hinted:
                page = bits(os_.pages.hinted & -os_.pages.hinted)[0]
                os_.pages.hinted &= ~(1 << page)
                os_.pages.allocated |= 1 << page
                os_.workload_write(page)
                _qtest_write_page(src, page, page_pattern(os_.workload[page]))
                dirtied.add(page)
                rewritten += 1
            time.sleep(0.001)
        info = pair.completed()
        seconds = time.monotonic() - start
        lost = tuple(p for p, v in sorted(os_.workload.items())
                     if dst.mem.read(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) != page_pattern(v))
        ram = info.get("ram", {})
        return MigrationResult(hints, ram_mib, int(ram.get("transferred", 0)), int(ram.get("normal", 0)),
                               len(os_.workload), len(dirtied), hinted_total, rewritten, lost, tuple(ids),
                               dev.read_config(8, 4) == 1 if hints else True, seconds,
                               int(ram.get("dirty-sync-count", 0)), tuple(by_sync), stale_tag,
                               predict_full_pages(os_.pages.n_pages, nonzero, 0 if stale_tag else hinted_union,
                                                  sum(1 << p for p in dirtied)),
                               None if pair.ordered is None else pair.ordered.summary())
    finally:
        pair.close()
