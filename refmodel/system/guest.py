"""The guest's pages: a page allocator whose sets are bitmaps (Python ints), and per-page contents.

A page is in exactly one of: free, allocated (in use by the workload), hinted (held by the balloon
driver for a hinting round), isolated (pulled off the free lists for a report). Contents are version
numbers: ``expected[p]`` is what the guest last wrote, ``ram[p]`` what the source RAM holds (they
differ only if a device broke a rule). Version 0 is a zero-filled page.

Bitmaps keep the model usable for a 1 TiB guest (2^28 pages); per-page contents are only tracked
when ``track_contents`` is set (the small guests of the property tests).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from refmodel.balloon.constants import BALLOON_PAGE_SIZE


class PageState(enum.Enum):
    FREE = "free"
    ALLOCATED = "allocated"  # in use by the workload
    HINTED = "hinted"  # held by the balloon driver for a hinting round
    ISOLATED = "isolated"  # off the free lists, in a free page report


class PageEvent(enum.Enum):
    ALLOC = "guest allocates"
    FREE = "guest frees"
    HINT = "driver takes it for a hint"
    RELEASE_HINT = "driver releases it (DONE, or early)"
    REUSE_HINT = "guest reuses it before DONE, writing it"
    REPORT = "driver puts it in a report"
    REPORT_USED = "device uses the report buffer"


PS, PE = PageState, PageEvent
#: Every state change of a guest page; the docs draw the page lifecycle from this table.
PAGE_TRANSITIONS: dict[tuple[PageState, PageEvent], PageState] = {
    (PS.FREE, PE.ALLOC): PS.ALLOCATED,
    (PS.ALLOCATED, PE.FREE): PS.FREE,
    (PS.FREE, PE.HINT): PS.HINTED,
    (PS.HINTED, PE.RELEASE_HINT): PS.FREE,
    (PS.HINTED, PE.REUSE_HINT): PS.ALLOCATED,  # FPH-DRV-7; the write is FPH-DRV-9
    (PS.FREE, PE.REPORT): PS.ISOLATED,
    (PS.ISOLATED, PE.REPORT_USED): PS.FREE,  # BAL-FPR-DRV-3: not reused before the device used it
}
#: When the device may change a page's contents, by state: the two semantics.
DEVICE_MAY_DISCARD: dict[PageState, str] = {
    PS.HINTED: "lock-free: until the guest writes the page again; the host's dirty log must catch that write",
    PS.ISOLATED: "locked: until the device uses the report buffer; the guest does not touch the page meanwhile",
}
_SOURCE = {event: src for (src, event) in PAGE_TRANSITIONS}  # each event leaves exactly one state


def range_mask(start: int, count: int) -> int:
    return ((1 << count) - 1) << start


def bits(mask: int) -> list[int]:
    """Set bit positions of a (small) mask, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


class GuestPages:
    """Page states of one guest, plus the dirty-log hook the host installs during migration."""

    def __init__(self, n_pages: int, *, track_contents: bool = True) -> None:
        if n_pages <= 0:
            raise ValueError("a guest needs at least one page")
        self.n_pages = n_pages
        self.all = range_mask(0, n_pages)
        self.allocated = 0
        self.hinted = 0
        self.isolated = 0
        self.track_contents = track_contents
        self.expected = [0] * n_pages if track_contents else None
        self.ram = [0] * n_pages if track_contents else None
        self._version = 0
        self.on_write: Callable[[int], None] | None = None  # the host's dirty log

    @property
    def free(self) -> int:
        return self.all & ~(self.allocated | self.hinted | self.isolated)

    def in_state(self, state: PageState) -> int:
        return self.free if state is PS.FREE else getattr(self, state.value)

    def _move(self, mask: int, event: PageEvent) -> None:
        """Apply one row of :data:`PAGE_TRANSITIONS` to every page in ``mask``."""
        src = _SOURCE[event]
        dst = PAGE_TRANSITIONS[src, event]
        if stray := mask & ~self.in_state(src):
            raise ValueError(f"page {bits(stray & -stray)[0]} is not {src.value}: cannot '{event.value}'")
        if src is not PS.FREE:
            setattr(self, src.value, getattr(self, src.value) & ~mask)
        if dst is not PS.FREE:
            setattr(self, dst.value, getattr(self, dst.value) | mask)

    def page_addr(self, page: int) -> int:
        return page * BALLOON_PAGE_SIZE

    # -- workload -------------------------------------------------------------------------------------
    def alloc(self) -> int | None:
        """Allocate the lowest free page, or None."""
        free = self.free
        if not free:
            return None
        page = (free & -free).bit_length() - 1
        self._move(1 << page, PE.ALLOC)
        return page

    def write(self, page: int) -> int:
        """The guest writes new contents to an allocated page; returns the new version."""
        if not self.allocated >> page & 1:
            raise ValueError(f"page {page} is not allocated")
        self._version += 1
        if self.track_contents:
            self.expected[page] = self.ram[page] = self._version
        if self.on_write is not None:
            self.on_write(page)
        return self._version

    def free_page(self, page: int) -> None:
        self._move(1 << page, PE.FREE)

    # -- balloon driver --------------------------------------------------------------------------------
    def take_free_block(self, order: int) -> int | None:
        """Take a naturally aligned free block of 2^order pages for hinting; return its first page."""
        size = 1 << order
        block = range_mask(0, size)
        free = self.free
        for start in range(0, self.n_pages - size + 1, size):
            if free >> start & block == block:
                self._move(block << start, PE.HINT)
                return start
        return None

    def release_hinted(self, mask: int) -> None:
        """Hinted pages go back to the free lists (DONE, or early release under memory pressure). Pages
        of ``mask`` that are not hinted are left alone."""
        self._move(mask & self.hinted, PE.RELEASE_HINT)

    def reuse_hinted(self, page: int) -> None:
        """A hinted page is taken by the allocator before DONE (FPH-DRV-7, the Linux shrinker path).

        FPH-DRV-9: the driver initializes it, which is a write.
        """
        self._move(1 << page, PE.REUSE_HINT)
        self.write(page)

    def isolate(self, mask: int) -> None:
        self._move(mask, PE.REPORT)

    def unisolate(self, mask: int) -> None:
        """The device used the report buffer; pages of ``mask`` not isolated are left alone."""
        self._move(mask & self.isolated, PE.REPORT_USED)

    # -- what devices do to RAM ----------------------------------------------------------------------------
    def device_discard(self, mask: int, fill: int = 0) -> None:
        """The host drops the pages' contents (MADV_DONTNEED): they read back as ``fill``."""
        if self.track_contents:
            for p in bits(mask):
                self.ram[p] = fill

    def corrupted(self) -> list[int]:
        """Allocated pages whose RAM differs from what the guest wrote."""
        if not self.track_contents:
            return []
        return [p for p in bits(self.allocated) if self.ram[p] != self.expected[p]]
