"""Whole systems in one object: guest pages, guest memory with one queue, a driver and device of a
hinting protocol, and a host migration under a policy.

:class:`HintingSystem` runs the command-ID handshake (§5.5.6.5); :class:`SeedSystem` runs the 2016
bitmap protocol. The property tests, the regression traces and the examples drive these; each method
is one step a real system can take at any moment, so any interleaving is a legal history.
"""

from __future__ import annotations

import attrs

from refmodel.balloon.config import BalloonConfigSpace
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.virtio.features import Feature, mask_of
from refmodel.system.guest import GuestPages, bits, range_mask
from refmodel.balloon.hinting import FreePageHintDevice, FreePageHintDriver
from refmodel.virtio.memory import GuestMemory
from refmodel.system.migration import SAFE, HostPolicy, Migration, MigrationState
from refmodel.balloon.seed2016 import SeedDevice, SeedDriver, bitmap_bytes
from refmodel.virtio.status import Role
from refmodel.virtio.virtq import QueueAddresses
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver

HINT_FEATURES = mask_of([Feature.VIRTIO_F_VERSION_1, Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT])


@attrs.frozen
class Outcome:
    """What a finished (or cancelled) migration left behind."""

    lost: tuple[int, ...]  # in-use pages whose destination contents are wrong
    corrupted: tuple[int, ...]  # in-use pages whose source contents a device changed
    leaked_hinted: int  # hinted pages never returned to the guest
    pages_sent: int
    ideal: int


class _System:
    """Guest of ``n_pages`` workload pages; the ring and scratch buffers live in pages after them.

    Subclasses supply the protocol's hooks around the migration steps.
    """

    QUEUE_SIZE = 8

    def __init__(self, n_pages: int, policy: HostPolicy) -> None:
        self.policy = policy
        ring_pages = 4
        total = n_pages + ring_pages
        self.mem = GuestMemory(total * BALLOON_PAGE_SIZE)
        self.guest = GuestPages(total)
        self.guest.allocated |= range_mask(n_pages, ring_pages)  # the driver's own ring pages
        self.n_pages = n_pages
        base = n_pages * BALLOON_PAGE_SIZE
        addrs = QueueAddresses.packed_at(base, self.QUEUE_SIZE)
        self.vq_drv = SplitQueueDriver(self.mem, addrs, self.QUEUE_SIZE)
        self.vq_dev = SplitQueueDevice(self.mem, addrs, self.QUEUE_SIZE)
        self.scratch = base + 2 * BALLOON_PAGE_SIZE
        self.migration: Migration | None = None
        self.trace: list[str] = []

    def _log(self, what: str) -> None:
        self.trace.append(what)

    # -- protocol hooks --------------------------------------------------------------------------------
    def _on_start(self) -> str:
        return ""

    def _before_sync(self) -> None:
        pass

    def _after_sync(self) -> str:
        return ""

    def _before_final_sync(self) -> None:
        self._before_sync()

    def _on_end(self, completed: bool) -> None:
        pass

    # -- guest workload ------------------------------------------------------------------------------------
    def alloc_write(self) -> int | None:
        page = self.guest.alloc()
        if page is not None:
            self.guest.write(page)
        self._log(f"guest allocates and writes page {page}")
        return page

    def write(self, page: int) -> None:
        self.guest.write(page)
        self._log(f"guest writes page {page}")

    def free(self, page: int) -> None:
        self.guest.free_page(page)
        self._log(f"guest frees page {page}")

    # -- host -------------------------------------------------------------------------------------------
    def migration_start(self) -> None:
        self.migration = Migration(self.guest, self.policy)
        self.migration.start()
        self._log(f"host starts migration{self._on_start()}")

    def migration_sync(self) -> None:
        """One bitmap sync with the protocol's hooks around it."""
        assert self.migration is not None
        self._before_sync()
        self.migration.sync()
        self._log(f"host syncs the dirty bitmap{self._after_sync()}")

    def migration_send(self, budget: int) -> int:
        assert self.migration is not None
        n = self.migration.send(budget)
        self._log(f"host sends {n} page(s)")
        return n

    def switchover(self) -> Outcome:
        assert self.migration is not None
        self._before_final_sync()
        self.migration.switchover()
        self._on_end(True)
        self._log("host stops the guest, syncs, sends the rest; destination runs")
        return self.outcome()

    def cancel(self) -> None:
        assert self.migration is not None
        self.migration.cancel()
        self._on_end(False)
        self._log("host cancels the migration")

    @property
    def migrating(self) -> bool:
        return self.migration is not None and self.migration.state is MigrationState.ACTIVE

    def _apply(self, pages: int) -> None:
        """The device's hint sink: skip these pages (or, under a policy, something worse)."""
        if self.policy.discard_hinted:
            self.guest.device_discard(pages)
        if self.migration is not None:
            self.migration.apply_hint(pages)

    def outcome(self) -> Outcome:
        m = self.migration
        lost = tuple(m.lost_pages()) if m is not None and m.state is MigrationState.COMPLETED else ()
        return Outcome(lost, tuple(self.guest.corrupted()), self.guest.hinted.bit_count(),
                       m.stats.pages_sent if m else 0, m.stats.ideal if m else 0)


class HintingSystem(_System):
    """Free page hinting with command IDs, QEMU's hooks: START after each sync, STOP before, DONE at end."""

    def __init__(self, n_pages: int = 32, policy: HostPolicy = SAFE, *, order: int = 0) -> None:
        super().__init__(n_pages, policy)
        self.config = BalloonConfigSpace(HINT_FEATURES, Role.DEVICE)  # one space, seen by both sides
        self.config.features_ok(HINT_FEATURES)
        self.config.driver_ok()
        self.device = FreePageHintDevice(self.config, self.vq_dev, n_pages, self._apply,
                                         accept_stale=policy.apply_stale_hints)
        self.driver = FreePageHintDriver(lambda: self.config.get("free_page_hint_cmd_id"), self.vq_drv,
                                         self.guest, id_area=self.scratch, stop_buf=self.scratch + 64,
                                         order=order)

    def _on_start(self) -> str:
        self.device.start()
        return f", publishes cmd id {self.device.cmd_id}"

    def _before_sync(self) -> None:
        if self.policy.stop_before_sync:
            self.device.stop()

    def _before_final_sync(self) -> None:
        self.device.stop()  # the guest is about to stop: no more hints

    def _after_sync(self) -> str:
        self.device.start()
        return f", publishes cmd id {self.device.cmd_id}"

    def _on_end(self, completed: bool) -> None:
        if completed or self.policy.done_on_cancel:
            self.device.done()
        else:
            self.device.stop()

    def reclaim_hinted(self, page: int) -> None:
        """The guest takes back a hinted page before DONE (FPH-DRV-7) and initializes it (FPH-DRV-9)."""
        self.guest.reuse_hinted(page)
        self._log(f"guest reclaims hinted page {page} and writes it")

    def driver_config_change(self) -> None:
        self.driver.on_config_change()
        self._log(f"driver reads cmd id {self.config.get('free_page_hint_cmd_id')} -> {self.driver.state.value}")

    def driver_hint(self) -> bool:
        sent = self.driver.hint_one()
        self._log(f"driver hints a block: {'sent' if sent else 'nothing'} ({self.driver.state.value})")
        return sent

    def device_process(self) -> int:
        n = self.device.process()
        self._log(f"device consumes {n} buffer(s) ({self.device.state.value})")
        return n


class SeedSystem(_System):
    """The 2016 bitmap protocol. ``ordered`` picks the safe host (SEED-DEV-1/2) or the naive one."""

    def __init__(self, n_pages: int = 32, *, ordered: bool = True) -> None:
        super().__init__(n_pages, SAFE)
        reply = self.scratch + 64
        assert 64 + 8 + bitmap_bytes(n_pages + 4) <= 2 * BALLOON_PAGE_SIZE
        self.device = SeedDevice(self.vq_dev, self.guest.n_pages, self._apply, ordered=ordered)
        self.driver = SeedDriver(self.vq_drv, self.guest, ctrl_buf=self.scratch, reply_buf=reply)

    def _after_sync(self) -> str:
        self.device.dirty_log_synced()
        return ""

    @property
    def can_request(self) -> bool:
        return self.migrating and not (self.device.ordered and self.device.outstanding)

    def host_request(self) -> bool:
        sent = self.device.request()
        self._log(f"host requests a free page bitmap: {'sent' if sent else 'no ctrl buffer posted'}")
        return sent

    def driver_reply(self) -> bool:
        sent = self.driver.handle_request()
        self._log(f"driver replies with a bitmap of the pages free now: {'sent' if sent else 'no request'}")
        return sent

    def device_process(self) -> int:
        applied = self.device.applied
        n = self.device.process()
        verdict = "applied" if self.device.applied > applied else "dropped" if n else "none"
        self._log(f"host reads {n} reply(ies): {verdict}")
        return n


#: The content version a page holds after being filled with poison_val (versions are >= 0 otherwise).
POISON = -1


class ReportingSystem(_System):
    """Free page reporting (§5.5.6.7), the locked semantics: a reported page stays off the guest's free
    lists until the device returns its buffer; the host may drop its contents before that, keeping
    ``poison_val`` when PAGE_POISON is negotiated. Migration runs alongside with no hinting at all.
    """

    def __init__(self, n_pages: int = 32, policy: HostPolicy = SAFE, *, poison: bool = True) -> None:
        super().__init__(n_pages, policy)
        self.poison = poison
        self.in_flight: list[int] = []  # reports the device has not returned yet (page masks)
        self.returned: list[int] = []  # reports returned to the driver, not yet reaped
        self.late_discard = 0  # unsafe policy: pages the device will drop after returning them
        self.poisoned = 0  # free pages whose only contents are poison_val (what the guest may rely on)

    def alloc_write(self) -> int | None:
        page = super().alloc_write()
        if page is not None:
            self.poisoned &= ~(1 << page)
        return page

    def driver_report(self, count: int) -> int:
        """Isolate up to ``count`` free workload pages, fill them with poison, hand them to the device."""
        free = bits(self.guest.free & range_mask(0, self.n_pages))[:count]
        mask = sum(1 << p for p in free)
        if mask:
            self.guest.isolate(mask)  # BAL-FPR-DRV-3: off the free lists until the ack
            if self.poison:
                for p in free:  # BAL-FPR-DRV-2: the driver writes poison_val
                    self.guest.expected[p] = self.guest.ram[p] = POISON
                    if self.guest.on_write is not None:
                        self.guest.on_write(p)
            self.in_flight.append(mask)
        self._log(f"driver reports pages {free}")
        return len(free)

    def device_process(self) -> int:
        """The host drops each reported page's contents, then returns the buffer."""
        fill = POISON if self.poison and not self.policy.ignore_poison else 0
        if self.late_discard:
            self.guest.device_discard(self.late_discard, fill)
            self.late_discard = 0
        n = len(self.in_flight)
        for mask in self.in_flight:
            if self.policy.discard_after_ack:
                self.late_discard |= mask
            else:
                self.guest.device_discard(mask, fill)
            self.returned.append(mask)
        self.in_flight.clear()
        self._log(f"device discards and returns {n} report(s)")
        return n

    def driver_reap(self) -> None:
        for mask in self.returned:
            self.guest.unisolate(mask)
            if self.poison:
                self.poisoned |= mask
        self._log(f"driver puts {sum(m.bit_count() for m in self.returned)} reported page(s) back on the free lists")
        self.returned.clear()

    def lost_poison(self) -> tuple[int, ...]:
        """Free pages the guest left holding poison_val that the destination holds otherwise."""
        m = self.migration
        if m is None or m.dest is None or m.state is not MigrationState.COMPLETED:
            return ()
        return tuple(p for p in bits(self.poisoned & self.guest.free) if m.dest[p] != POISON)
