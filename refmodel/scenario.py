"""A whole system in one object: guest pages, guest memory with the free_page_vq, the reference
hinting driver and device, and a host migration under a policy.

The property tests, the regression traces and the examples all drive this; each method is one step
a real system can take at any moment, so any interleaving is a legal history.
"""

from __future__ import annotations

import attrs

from .config import BalloonConfigSpace
from .constants import BALLOON_PAGE_SIZE
from .features import Feature, mask_of
from .guest import GuestPages, range_mask
from .hinting import FreePageHintDevice, FreePageHintDriver
from .memory import GuestMemory
from .migration import SAFE, HostPolicy, Migration, MigrationState
from .status import Role
from .virtq import QueueAddresses
from .virtq_device import SplitQueueDevice
from .virtq_driver import SplitQueueDriver

HINT_FEATURES = mask_of([Feature.VIRTIO_F_VERSION_1, Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT])


@attrs.frozen
class Outcome:
    """What a finished (or cancelled) migration left behind."""

    lost: tuple[int, ...]  # in-use pages whose destination contents are wrong
    corrupted: tuple[int, ...]  # in-use pages whose source contents a device changed
    leaked_hinted: int  # hinted pages never returned to the guest
    pages_sent: int
    ideal: int


class HintingSystem:
    """Guest of ``n_pages`` workload pages; the rings live in pages after them."""

    QUEUE_SIZE = 8

    def __init__(self, n_pages: int = 32, policy: HostPolicy = SAFE, *, order: int = 0) -> None:
        self.policy = policy
        ring_pages = 4
        total = n_pages + ring_pages
        self.mem = GuestMemory(total * BALLOON_PAGE_SIZE)
        self.guest = GuestPages(total)
        self.guest.allocated |= range_mask(n_pages, ring_pages)  # the driver's own ring pages
        self.n_pages = n_pages
        base = n_pages * BALLOON_PAGE_SIZE
        addrs = QueueAddresses.packed_at(base, self.QUEUE_SIZE)
        self.config = BalloonConfigSpace(HINT_FEATURES, Role.DEVICE)  # one space, seen by both sides
        self.config.features_ok(HINT_FEATURES)
        self.config.driver_ok()
        vq_drv = SplitQueueDriver(self.mem, addrs, self.QUEUE_SIZE)
        vq_dev = SplitQueueDevice(self.mem, addrs, self.QUEUE_SIZE)
        scratch = base + 2 * BALLOON_PAGE_SIZE
        self.migration: Migration | None = None
        self.device = FreePageHintDevice(self.config, vq_dev, n_pages, self._apply,
                                         accept_stale=policy.apply_stale_hints)
        self.driver = FreePageHintDriver(self.config, vq_drv, self.guest, id_area=scratch,
                                         stop_buf=scratch + 64, order=order)
        self.trace: list[str] = []

    # -- the device's hint sink --------------------------------------------------------------------------
    def _apply(self, pages: int) -> None:
        if self.policy.discard_hinted:
            self.guest.device_discard(pages)
        if self.migration is not None:
            self.migration.apply_hint(pages)

    def _log(self, what: str) -> None:
        self.trace.append(what)

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

    def reclaim_hinted(self, page: int) -> None:
        """The guest takes back a hinted page before DONE (FPH-DRV-7) and initializes it (FPH-DRV-9)."""
        self.guest.reuse_hinted(page)
        self._log(f"guest reclaims hinted page {page} and writes it")

    # -- driver and device ------------------------------------------------------------------------------------
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

    # -- host ---------------------------------------------------------------------------------------------
    def migration_start(self) -> None:
        self.migration = Migration(self.guest, self.policy)
        self.migration.start()
        self.device.start()
        self._log(f"host starts migration, publishes cmd id {self.device.cmd_id}")

    def migration_sync(self) -> None:
        """One bitmap sync with the hinting hooks around it."""
        assert self.migration is not None
        if self.policy.stop_before_sync:
            self.device.stop()
        self.migration.sync()
        self.device.start()
        self._log(f"host syncs the dirty bitmap, publishes cmd id {self.device.cmd_id}")

    def migration_send(self, budget: int) -> int:
        assert self.migration is not None
        n = self.migration.send(budget)
        self._log(f"host sends {n} page(s)")
        return n

    def switchover(self) -> Outcome:
        assert self.migration is not None
        self.device.stop()
        self.migration.switchover()
        self.device.done()
        self._log("host stops the guest, syncs, sends the rest; destination runs; DONE")
        return self.outcome()

    def cancel(self) -> None:
        assert self.migration is not None
        self.migration.cancel()
        if self.policy.done_on_cancel:
            self.device.done()
        else:
            self.device.stop()
        self._log("host cancels the migration")

    @property
    def migrating(self) -> bool:
        return self.migration is not None and self.migration.state is MigrationState.ACTIVE

    def outcome(self) -> Outcome:
        m = self.migration
        lost = tuple(m.lost_pages()) if m is not None and m.state is MigrationState.COMPLETED else ()
        return Outcome(lost, tuple(self.guest.corrupted()), self.guest.hinted.bit_count(),
                       m.stats.pages_sent if m else 0, m.stats.ideal if m else 0)
