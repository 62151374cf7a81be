"""The driver conformance machine, with the real Linux driver under test in a UML guest.

It keeps every rule and check of :class:`~conformance.machines.driver.DriverConformance` that reads
only the reference device, and replaces what read the model guest's pages with what the guest agent
can tell: MemFree, and checksums of workload files kept in guest RAM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize

from refmodel.balloon.device import DEFAULT_OFFER
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.virtio.features import Feature, names_of
from refmodel.balloon.queues import BALLOON_QUEUES, QueueNumbering, balloon_queue_indices
from refmodel.balloon.hinting import DeviceHintState
from refmodel.virtio.memory import GuestMemory

from conformance.interface import DriverUnderTest, check_implementation
from conformance.machines.base import CYCLES, OPTIONAL, PICK, live_invariant, note, step
from conformance.machines.driver import UNDEFINED_BIT, DriverConformance
from conformance.machines.driver.device import WatchedDevice
from conformance.harness import Guarded, ImplementationError
from conformance.adapters.linux.core_waits import CoreWaits
from conformance.adapters.vhost_user.protocol import DEFAULT_PROTOCOL_FEATURES, ProtocolFeature

F = Feature
#: virtio_uml sizes every vring at 256 and vhost-user has no per-queue maximum to offer.
QUEUE_SIZE = 256
#: Free memory the guest keeps for itself (watermarks, the agent); below it a short balloon is legal.
RESERVE = 24 << 20
#: Pages that may move between two MemFree readings for reasons of the guest's own.
SLACK_PAGES = 512
#: /proc/meminfo counters of memory the guest put to its own use. Freed hints are free memory the guest may
#: use at once (it refills the page cache it dropped while the driver held its free memory), so MemFree alone
#: undercounts them: the release is judged on MemFree plus these.
OWN_USE = ("Buffers", "Cached", "AnonPages", "SReclaimable", "SUnreclaim", "KernelStack", "PageTables")
#: How long a kick may trail the avail idx write it announces (two separate steps in a real guest).
KICK_GRACE = 2.0  # of the guest's time (see _guest_clock)
KICK_CAP = 10.0  # of wall time
KICK_LATE = 0.5  # a wait this long (wall time) is noted in the counterexample
#: How long Linux may take to give hinted pages back after DONE (a work item frees them).
RELEASE_WAIT = 3.0
RELEASE_STILL = 1.0  # judged once MemFree has not grown for this long, after RELEASE_WAIT
RELEASE_CAP = 30.0
#: Why the UML route refuses --ring packed (a one-line reason; the QEMU-guest route serves packed rings).
NO_PACKED_RING = ("virtio_uml negotiates VIRTIO_F_RING_PACKED but sends SET_VRING_BASE 0 (wrap counters 0) for a "
                  "fresh packed ring, whose wrap counters are 1 (vhost-user: bits 15 and 31 of the base), so the "
                  "backend would poll for the wrong wrap counter; use --dut linux-qemu")


_NO_STATUS = ("vhost-user carries no device status (Linux 6.1's virtio_uml keeps it in the guest); the "
              "reference device is given a replayed sequence, so this cannot be judged")
#: Requirements this transport hides from the reference device, and why (verdict: not-checkable).
UNOBSERVABLE = {
    **dict.fromkeys(("STATUS-DRV-1", "STATUS-DRV-2", "STATUS-DRV-3", "INIT-DRV-1", "INIT-DRV-4", "INIT-DRV-6",
                     "RESET-DRV-1"), _NO_STATUS),
    "INIT-DRV-2": _NO_STATUS + " (config writes before the memory table are refused by the backend instead)",
    "INIT-DRV-5": "vhost-user carries no DRIVER_OK; kicks are held until the guest's sysfs shows it",
    "BAL-PP-DRV-2": "vhost-user carries no DRIVER_OK: a poison_val write late in probe cannot be told from an "
                    "early one",
    "BAL-PP-DRV-1": "deflated pages go back to Linux's allocator at once; their fill cannot be read from outside",
    "BAL-FPH-DRV-9": "hinted pages Linux gives back before DONE go to its allocator; whether it initialized "
                     "them cannot be read from outside, nor can the suite make its guest reclaim them",
}


class LinuxDriverConformance(DriverConformance):
    """Subclass with ``factory`` returning a :class:`~conformance.adapters.linux.adapter.LinuxDriver`."""

    timeout = 90.0
    unobservable = UNOBSERVABLE
    settle_stable = 6  # cycles of at least QUIET each: a work item Linux has queued gets to run
    hint_grace_runs = 2  # Linux reads free_page_hint_cmd_id from a work item the config interrupt queues
    model_guest = False  # the checks that read the model guest's pages give way to the agent's
    reprobes = False  # the guest's driver is probed once
    linux: Any = None  # the LinuxDriver, closed at teardown
    watch_status = False  # the transport replays status (vhost-user on UML); a route that carries it sets True
    release_wait, release_still = RELEASE_WAIT, RELEASE_STILL  # a slower route (TCG) waits longer
    route_device: type[WatchedDevice] = WatchedDevice  # the reference device as this route's transport shows it
    inband_notifications = True  # the route's frontend carries VRING_CALL on the backend channel (virtio_uml)

    @initialize(drop=st.frozensets(st.sampled_from(OPTIONAL), max_size=3), undefined_bit=st.booleans(),
                init_on_free=st.booleans(), inband=st.booleans(), reply_ack=st.booleans())
    def boot(self, drop: frozenset[Feature], undefined_bit: bool, init_on_free: bool, inband: bool,
             reply_ack: bool) -> None:
        offered = DEFAULT_OFFER & ~sum(f.mask for f in drop) | (UNDEFINED_BIT if undefined_bit else 0)
        if self.ring == "packed":  # --ring packed: the device offers packed rings (RSV-DRV-4)
            offered |= F.VIRTIO_F_RING_PACKED.mask
        proto = DEFAULT_PROTOCOL_FEATURES & ~(0 if reply_ack else ProtocolFeature.REPLY_ACK)
        proto |= ProtocolFeature.INBAND_NOTIFICATIONS if inband and self.inband_notifications else 0
        self.ref = None
        self.files: dict[str, int] = {}
        self._fresh()
        self.touched_checked = 0
        #: (MemFree, own use, balloon, pages hinted in all) when the host began the first round since DONE
        self.round_base: tuple[int, int, int, int] | None = None
        raw = type(self).factory()
        self.linux = raw
        self.caps = check_implementation(raw, DriverUnderTest, "driver")
        self.drv: Any = Guarded(raw, "driver", self.timeout)
        note(f"Linux guest{' with init_on_free=1' if init_on_free else ''}; device offers {names_of(offered)}; "
             f"vhost-user protocol features {int(proto):#x}")

        def make(mem: GuestMemory) -> WatchedDevice:
            # vhost-user replays device status, so the status checks stay off (UNOBSERVABLE).
            self.ref = self.route_device(mem, offered, queue_max={q.name: QUEUE_SIZE for q in BALLOON_QUEUES},
                                     numbering=QueueNumbering.COMPACT_BY_NEGOTIATED, watch_status=self.watch_status)
            return self.ref

        with self.tolerate():
            release = self.drv.start(offered, make, init_on_free=init_on_free, protocol_features=int(proto))
            note(f"kernel {release} booted")
            ok = self._step(self.drv.probe)
            if self.ref is None:
                raise ImplementationError("driver.probe", "the driver never sent the memory table")
            self.init_on_free = init_on_free  # Linux then relies on free pages' value (BAL-FB-DRV-3)
            self._check_negotiation(offered, ok)
            self._observe_numbering(offered)
            self._route_checks()
            self.booted = ok
            self.R.saw("INIT-DRV-1")

    def _route_checks(self) -> None:
        """Hook: checks a route can make once the driver is probed."""

    def teardown(self) -> None:
        if self.linux is not None:
            self.linux.close()

    def _observe_numbering(self, offered: int) -> None:
        """Which queue-numbering interpretation (AMB-VQ-NUMBERING) the vring indexes Linux used fit."""
        used = {i for i, v in self.linux.backend.vrings.items() if v.enabled}
        fits = {n.value for n in QueueNumbering
                if set(balloon_queue_indices(n, offered, self.features).values()) == used}
        self.R.narrow("queue_numbering", fits)
        note(f"vrings {sorted(used)} fit queue numbering {sorted(fits)}")

    def _await_kicks(self, pubs: dict[str, tuple[int, int, bool]]) -> dict[str, tuple[int, int, bool]]:
        """A real driver writes avail idx and kicks in two steps: give a kick that is on its way up to
        KICK_GRACE seconds before calling it missing. The guest runs meanwhile, so what is judged is the
        last snapshot the wait took, never a later read."""
        if not self._unannounced(pubs):
            return pubs
        clock = self._guest_clock()  # the grace is the guest's time: a loaded host delays the kick
        while True:
            wall, guest = clock()
            if guest >= KICK_GRACE or wall > KICK_CAP:
                break
            self._step(self.drv.serve, 0.05)
            pubs = self._publications()
            if not self._unannounced(pubs):
                break
        if wall >= KICK_LATE:
            missing = self._unannounced(pubs)
            note(f"waited {wall:.2f} s ({guest:.2f} s of the guest's time) for a notification: "
                 f"{'missing on ' + ', '.join(missing) if missing else 'it came'}")
        return pubs

    # -- what a real guest can tell ----------------------------------------------------------------
    def _settle_state(self) -> tuple[Any, ...]:
        ref = self.ref
        return (ref.ballooned, ref.config.get("actual"), ref.stats_updates, ref.reported,
                ref.hint.state if ref.hint else None, ref.hint.received_pages if ref.hint else 0,
                tuple(self._avail_idx(q) for q in ref.queues.values()))

    def _free_pages(self) -> int:
        return max(self.drv.meminfo()["MemFree"] - RESERVE, 0) // BALLOON_PAGE_SIZE

    def _unheld(self) -> tuple[int, int]:
        """(MemFree, memory in the guest's own use), in bytes: what neither the driver nor the balloon holds."""
        mem = self.drv.meminfo()
        return mem["MemFree"], sum(mem.get(k, 0) for k in OWN_USE)

    def _host_did(self, op: str) -> None:
        super()._host_did(op)
        if op == "hint_start" and self.round_base is None and self.ref.hint is not None:
            # Before the guest hears of the round: what it may want back after DONE.
            self.round_base = (*self._unheld(), self.ref.ballooned.bit_count(), self.ref.hint.received_pages)

    def _guest_pgid(self) -> int | None:
        """The guest's host process group (UML's, or QEMU's on the QEMU-guest route), if it runs."""
        guest = getattr(self.linux, "guest", None)
        proc = getattr(guest, "proc", None)
        return proc.pid if proc is not None and proc.poll() is None else None

    def _guest_clock(self) -> Callable[[], tuple[float, float]]:
        """A clock started now: (wall seconds, the guest's seconds), the guest's being wall time less the
        waits for a core of its process group or of this process (the backend it waits on)."""
        pgid = self._guest_pgid()
        waits = CoreWaits(pgid) if pgid is not None else None
        start = time.monotonic()

        def clock() -> tuple[float, float]:
            wall = time.monotonic() - start
            return wall, wall - (waits.seconds() if waits else 0.0)
        return clock

    def _check_hints_released(self) -> None:
        """After DONE the driver holds no hinted pages: MemFree plus the guest's own use is back where it was
        when the host began the first round since the last DONE, less what the balloon took meanwhile.

        The start of the rounds, not DONE, is the baseline: under the pressure of hinting Linux's shrinker
        gives whole hinted blocks back before DONE (BAL-FPH-DRV-7), so the pages hinted are not the pages
        held. Linux frees them from a work item: give it RELEASE_WAIT seconds, and as long as they still
        come back (a guest on a loaded host frees slowly, which is not a breach) up to RELEASE_CAP."""
        if self.round_base is None:
            return
        free_before, used_before, balloon_before, hinted_before = self.round_base
        hinted = self.ref.hint.received_pages - hinted_before
        # The waits are judged on the guest's time: wall time less its waits for a core. Five busy loops on
        # 2 cores kept a UML guest from its release for over 1 s of wall time in 3 of 3 tries.
        clock = self._guest_clock()
        start = last_growth = 0.0
        best = None
        while True:
            free_now, used_now = self._unheld()
            free = (free_now - free_before) // BALLOON_PAGE_SIZE
            used = (used_now - used_before) // BALLOON_PAGE_SIZE
            balloon = self.ref.ballooned.bit_count() - balloon_before
            short = -(free + used + balloon)  # pages neither free, nor the guest's, nor the balloon's
            wall, now = clock()
            if best is None or short < best:
                best, last_growth = short, now
            if short <= SLACK_PAGES or wall > RELEASE_CAP or \
                    (now - start > self.release_wait and now - last_growth > self.release_still):
                break
            self._cycle()
        # The driver can hold only pages it hinted: a shortfall beyond them is the guest's own (seen once on
        # 6.12 with 0 pages hinted: 720 pages, likely freed pages on per-CPU lists, which MemFree does not count).
        self.R.check("BAL-FPH-DRV-10", min(short, hinted) <= SLACK_PAGES,
                     f"{hinted} page(s) hinted since the host began the rounds; {wall:.1f} s after DONE ({now:.1f} s "
                     f"of them the guest's, no change for {self.release_still:g} s of its time) the guest was {short} "
                     f"pages short of what it had then: MemFree {free:+}, its own use ({'+'.join(OWN_USE)}) {used:+}, "
                     f"the balloon {balloon:+}")
        note(f"{wall:.1f} s after DONE the guest is {short} page(s) short of the start of the rounds")
        self.round_base = None

    def _guest_quiet_checks(self) -> None:
        # Deflated pages go straight back to Linux's allocator, so their poison fill cannot be read.
        self._verify_workload()

    # -- rules that differ -------------------------------------------------------------------------------
    set_target_max = 6144

    @step(num_pages=st.integers(0, set_target_max), cycles=CYCLES)
    def set_target(self, num_pages: int, cycles: int) -> None:
        self._host("set_target", num_pages, cycles=cycles)
        note(f"host sets num_pages = {num_pages}, then {cycles} cycle(s)")

    @step(when=DriverConformance._hinting, cycles=CYCLES)
    def hint_done(self, cycles: int) -> None:
        self._host("hint_done", cycles=cycles)
        for _ in range(2):  # Linux gives the pages back from a work item: let it run
            self._cycle()
        if self.ref.hint.state is DeviceHintState.DONE:
            self._check_hints_released()
        note(f"host publishes DONE, {cycles} cycle(s)")

    @step(seconds=st.sampled_from([1.0, 2.5]))
    def serve(self, seconds: float) -> None:
        """The host only serves for a while: Linux reports free pages on its own clock (2 s delay)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._cycle()
        note(f"the host serves the guest for {seconds} s: {self.ref.reported.bit_count()} page(s) reported so far")

    @step(count=st.integers(1, 8), top=st.booleans())
    def workload_alloc_write(self, count: int, top: bool) -> None:
        name = f"w{len(self.files)}x{count}"
        pages = count * 128 * (2 if top else 1)
        if self._step(self.drv.alloc, name, pages):
            self.files[name] = pages
        note(f"the guest writes {pages} pages of random data to {name}")

    @step(when=lambda self: self.files, pick=PICK)
    def workload_free(self, pick: int) -> None:
        names = sorted(self.files)
        name = names[pick % len(names)]  # an index, not a member: the names are known only at run time
        self._step(self.drv.free, name)
        del self.files[name]
        note(f"the guest frees {name}")

    def _verify_workload(self) -> None:
        if not self.files:
            return
        bad = self._step(self.drv.verify)
        touched = self.ref.touched[self.touched_checked:]
        self.touched_checked = len(self.ref.touched)
        if bad:
            for req in dict.fromkeys(t.req_id for t in touched):
                self.R.check(req, False, f"guest file(s) {bad} changed; the device had just changed pages for "
                             f"{req}")
            raise ImplementationError("driver", f"guest file(s) {bad} changed, and not by the device")
        for req in {t.req_id for t in touched}:
            self.R.saw(req)

    @live_invariant()
    def workload_pages_intact(self) -> None:
        if self.ref is not None and len(self.ref.touched) != self.touched_checked:
            self._verify_workload()
