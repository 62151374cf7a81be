"""The host side of live migration: dirty logging, rounds with a bitmap sync, page sending, hint
application under a policy, switchover to a destination, and the "nothing is lost" check.

Sets of pages are bitmaps (Python ints) so one round over a 1 TiB guest stays within the budget the
benchmark checks. The order of a precopy round, as QEMU runs it (``implementations.md`` §2.5-2.7)::

    BEFORE_BITMAP_SYNC -> hinting STOP     (policy.stop_before_sync)
    bitmap sync        -> to_send |= dirty; dirty = 0
    AFTER_BITMAP_SYNC  -> hinting START with a new command ID
    send pages; apply hints tagged with the current ID (they clear bits of to_send)

:class:`HostPolicy` names the deliberately unsafe variants the property tests must catch.
"""

from __future__ import annotations

import enum

import attrs

from refmodel.system.guest import GuestPages, bits


@attrs.frozen
class HostPolicy:
    """How the host runs hinting around migration. The defaults are the safe, QEMU-like choices."""

    #: STOP hinting before each bitmap sync (QEMU's BEFORE_BITMAP_SYNC). False lets a round straddle a sync.
    stop_before_sync: bool = True
    #: Apply hints whatever command ID they carry (breaks BAL-FPH-DEV-3).
    apply_stale_hints: bool = False
    #: Collect hints during a round and clear their bits only after the next sync, not before it.
    clear_after_sync: bool = False
    #: Discard hinted pages' contents at once instead of skipping them (Firecracker's approach).
    discard_hinted: bool = False
    #: Publish DONE when migration is cancelled (QEMU's CLEANUP since 2020). False leaks hinted pages.
    done_on_cancel: bool = True
    #: Reporting: drop a reported page's contents after returning the buffer, not before (breaks BAL-FPR-DEV-D1).
    discard_after_ack: bool = False
    #: Reporting with PAGE_POISON: discard to zero pages instead of keeping poison_val (breaks BAL-FPR-DEV-2).
    ignore_poison: bool = False

    @property
    def unsafe(self) -> tuple[str, ...]:
        safe = HostPolicy()
        return tuple(f.name for f in attrs.fields(HostPolicy) if getattr(self, f.name) != getattr(safe, f.name))


SAFE = HostPolicy()
UNSAFE_POLICIES = {
    "apply_stale_hints": HostPolicy(apply_stale_hints=True),
    "clear_after_sync": HostPolicy(clear_after_sync=True),
    "discard_hinted": HostPolicy(discard_hinted=True),
    "skip_done_on_cancel": HostPolicy(done_on_cancel=False),
}
#: The locked semantics (page reporting) has its own ways to get it wrong.
UNSAFE_REPORTING_POLICIES = {
    "discard_after_ack": HostPolicy(discard_after_ack=True),
    "ignore_poison": HostPolicy(ignore_poison=True),
}


class MigrationState(enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"  # precopy rounds
    COMPLETED = "completed"  # switched over; the destination runs
    CANCELLED = "cancelled"


@attrs.frozen
class HonestIdeal:
    """The fewest pages any migration that loses nothing can send, for a given end of the bulk pass.

    ``must_reach``: pages in use at switchover whose contents are not zero (the destination starts
    zeroed, so each needs one send after its last write). ``resends``: those of them the bulk pass had
    to send, because they were in use and named by no hint while it ran, and that the guest wrote after
    it ended (QEMU's first dirty-log sync): the dirty log makes the second send unavoidable. Pages
    dirtied and then freed (and hinted) are in neither, unlike the old "in use + dirtied" figure.
    """

    must_reach: int
    resends: int = 0

    def __attrs_post_init__(self) -> None:
        if self.must_reach < 0 or not 0 <= self.resends <= self.must_reach:
            raise ValueError(f"honest ideal: need 0 <= resends <= must_reach, got {self.resends}, "
                             f"{self.must_reach}")

    @property
    def pages(self) -> int:
        return self.must_reach + self.resends

    @classmethod
    def estimated(cls, in_use: int, off_full: int, off_zero: int, n_pages: int) -> "HonestIdeal":
        """For a real run, from counts: the pages in use (RAM - MemFree, taken as all non-zero, so an upper
        estimate), plus the resends of the run without hints (its sends beyond one per page; an upper
        estimate of the unavoidable ones)."""
        return cls(in_use, min(in_use, max(0, off_full + off_zero - n_pages)))


def honest_ideal(at_switchover: int, held_through_bulk: int, written_after_bulk: int,
                 nonzero: int | None = None) -> HonestIdeal:
    """:class:`HonestIdeal` from page masks: in use at switchover, in use and unhinted for the whole bulk
    pass, written after it, and (when known) holding non-zero contents at switchover."""
    reach = at_switchover if nonzero is None else at_switchover & nonzero
    return HonestIdeal(reach.bit_count(), (reach & held_through_bulk & written_after_bulk).bit_count())


@attrs.define
class MigrationStats:
    """Efficiency: pages sent against the ideal. ``ideal`` is the old figure (in use at switchover plus
    every page dirtied), kept for comparison; it is not a lower bound. ``honest_ideal`` is."""

    pages_sent: int = 0
    pages_dirtied: int = 0
    in_use_at_switchover: int = 0
    hinted_pages_skipped: int = 0
    rounds: int = 0
    must_reach: int = 0
    unavoidable_resends: int = 0

    @property
    def ideal(self) -> int:
        return self.in_use_at_switchover + self.pages_dirtied

    @property
    def honest_ideal(self) -> int:
        return self.must_reach + self.unavoidable_resends

    @property
    def honest_ratio(self) -> float:
        return self.pages_sent / self.honest_ideal if self.honest_ideal else 0.0

    @property
    def ratio(self) -> float:
        return self.pages_sent / self.ideal if self.ideal else 0.0


class Migration:
    """One precopy migration of ``guest`` to a fresh destination."""

    def __init__(self, guest: GuestPages, policy: HostPolicy = SAFE) -> None:
        self.guest = guest
        self.policy = policy
        self.state = MigrationState.IDLE
        self.dirty = 0
        self.to_send = 0
        self.deferred_hints = 0
        self.dest: list[int] | None = [0] * guest.n_pages if guest.track_contents else None
        self.stats = MigrationStats()
        self._dirtied = 0
        # For the honest ideal: pages of the bulk pass neither sent nor hinted yet; pages seen in use and
        # named by no hint while it ran; pages written after it ended.
        self._bulk_left = 0
        self._held = 0
        self._bulk_done = False
        self._written_after_bulk = 0
        self._seen_allocated: int | None = None

    def _observe(self) -> None:
        """While the bulk pass runs, a page seen free (or hinted) is no longer "held"."""
        alloc = self.guest.allocated
        # Ints are immutable: the same object is the same set, and a 1 TiB AND is not free.
        if not self._bulk_done and alloc is not self._seen_allocated:
            self._held &= alloc
            self._seen_allocated = alloc

    def _bulk_progress(self, gone: int) -> None:
        if not self._bulk_done and self._bulk_left & gone:
            self._bulk_left &= ~gone
            self._bulk_done = not self._bulk_left

    # -- dirty log ------------------------------------------------------------------------------------
    def log_writes(self, mask: int) -> None:
        """Record writes to the pages of ``mask`` (bulk form, for the benchmark's workload)."""
        self.dirty |= mask
        self._dirtied |= mask
        if self._bulk_done:
            self._written_after_bulk |= mask
        else:
            self._observe()

    def _log_write(self, page: int) -> None:
        self.log_writes(1 << page)

    # -- rounds ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Enable dirty logging, then mark every page to send (the first, "bulk" round)."""
        if self.state is not MigrationState.IDLE:
            raise ValueError(f"cannot start a migration in state {self.state.value}")
        self.guest.on_write = self._log_write
        self.to_send = self.guest.all
        self._bulk_left, self._held = self.guest.all, self.guest.allocated
        self.state = MigrationState.ACTIVE

    def sync(self) -> None:
        """The bitmap sync: fold the dirty log into to_send. Deferred hints land after it (unsafe)."""
        self._observe()
        self.to_send |= self.dirty
        self.dirty = 0
        self.stats.rounds += 1
        if self.deferred_hints:
            self._clear(self.deferred_hints)
            self.deferred_hints = 0

    def apply_hint(self, pages: int) -> None:
        """A hint the device accepted: skip these pages (or, under a policy, something worse)."""
        if self.state is not MigrationState.ACTIVE:
            return
        self._observe()
        if not self._bulk_done:
            self._held &= ~pages
        if self.policy.clear_after_sync:
            self.deferred_hints |= pages
        else:
            self._clear(pages)

    def _clear(self, pages: int) -> None:
        self.stats.hinted_pages_skipped += (self.to_send & pages).bit_count()
        self.to_send &= ~pages
        self._bulk_progress(pages)

    def send(self, budget: int | None = None) -> int:
        """Send up to ``budget`` pages of to_send (all if None), lowest first; returns pages sent."""
        if budget is None:
            mask = self.to_send
        else:
            mask, todo = 0, self.to_send
            for _ in range(budget):
                if not todo:
                    break
                low = todo & -todo
                mask |= low
                todo ^= low
        n = mask.bit_count()
        self._observe()
        self._bulk_progress(mask)
        if self.dest is not None and self.guest.ram is not None:
            for p in bits(mask):
                self.dest[p] = self.guest.ram[p]
        self.to_send &= ~mask
        self.stats.pages_sent += n
        return n

    def switchover(self) -> None:
        """Stop the guest, final sync, send the rest; the destination takes over."""
        self.sync()
        self.send()
        self.stats.pages_dirtied = self._dirtied.bit_count()
        self.stats.in_use_at_switchover = self.guest.allocated.bit_count()
        ideal = self.honest()
        self.stats.must_reach, self.stats.unavoidable_resends = ideal.must_reach, ideal.resends
        self.guest.on_write = None
        self.state = MigrationState.COMPLETED

    def cancel(self) -> None:
        self.guest.on_write = None
        self.state = MigrationState.CANCELLED

    def honest(self) -> HonestIdeal:
        """The honest ideal of this run so far (final once switched over)."""
        nonzero = None
        if self.guest.expected is not None:
            nonzero = sum(1 << p for p in bits(self.guest.allocated) if self.guest.expected[p] != 0)
        return honest_ideal(self.guest.allocated, self._held, self._written_after_bulk, nonzero)

    # -- the invariant ----------------------------------------------------------------------------------
    def lost_pages(self) -> list[int]:
        """Pages the guest has in use whose destination contents differ from what the guest wrote."""
        if self.dest is None or self.guest.expected is None:
            raise ValueError("contents are not tracked for this guest")
        return [p for p in bits(self.guest.allocated) if self.dest[p] != self.guest.expected[p]]


def predict_full_pages(n_pages: int, nonzero: int, hinted: int, dirtied: int = 0) -> int:
    """Full pages a precopy migration sends when every hint in ``hinted`` lands before the bulk pass:
    the non-zero pages no hint covers (a zero page travels as a flag, not a page), then, after one
    dirty-log sync, every page in ``dirtied`` (written during the migration) once more. A lower bound
    for a real host, whose hints arrive while the bulk pass already runs."""
    m = Migration(GuestPages(n_pages, track_contents=False))
    m.start()
    m.apply_hint(hinted)
    bulk = (m.to_send & nonzero).bit_count()
    m.send()
    m.log_writes(dirtied)
    m.sync()
    return bulk + m.to_send.bit_count()
