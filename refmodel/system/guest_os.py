"""The guest operating system a balloon driver runs in: real bytes in :class:`GuestMemory`, page
states in :class:`GuestPages`, and a workload whose writes can be checked byte for byte.

A page the workload owns holds an 8-byte version pattern repeated over the page. If a device
modified it (discard, poison fill), :meth:`GuestOS.corrupted` finds it. The balloon driver gets its
pages from the same allocator, so a driver that hands a page back to the OS too early lets the
workload write a page the device still owns, and the device's later change shows up as corruption.
"""

from __future__ import annotations

import struct

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.system.guest import GuestPages, bits, range_mask
from refmodel.virtio.memory import GuestMemory

_PATTERN = struct.Struct("<Q")


def page_pattern(version: int) -> bytes:
    return _PATTERN.pack(version) * (BALLOON_PAGE_SIZE // _PATTERN.size)


def poison_pattern(poison_val: int) -> bytes:
    """A page filled with ``poison_val`` (le32 repeated), as PAGE_POISON means it (§5.5.6.6)."""
    return poison_val.to_bytes(4, "little") * (BALLOON_PAGE_SIZE // 4)


class GuestOS:
    """``n_pages`` pages of guest RAM, an allocator over them and a workload that writes them."""

    def __init__(self, n_pages: int, *, mem: GuestMemory | None = None, reserved: int = 0) -> None:
        self.mem = mem if mem is not None else GuestMemory(n_pages * BALLOON_PAGE_SIZE)
        if self.mem.size < n_pages * BALLOON_PAGE_SIZE or self.mem.base:
            raise ValueError("guest memory must start at 0 and hold every page")
        self.pages = GuestPages(n_pages, track_contents=False)
        self.pages.allocated |= range_mask(0, reserved)  # firmware holes nobody may use
        self.n_pages = n_pages
        self.workload: dict[int, int] = {}  # page -> version the workload last wrote
        self._version = 0

    @classmethod
    def over(cls, mem: GuestMemory, *, reserved: int = 0) -> "GuestOS":
        """A guest over memory someone else owns (a VMM's RAM, shared with us)."""
        return cls(mem.size // BALLOON_PAGE_SIZE, mem=mem, reserved=reserved)

    # -- kernel allocations (the driver's rings, buffers and balloon pages) ------------------------
    def alloc_contiguous(self, count: int) -> int:
        """``count`` contiguous pages for the driver's own structures; returns the first page."""
        free = self.pages.free
        block = range_mask(0, count)
        for start in range(self.n_pages - count, -1, -1):  # from the top: rings stay out of the way
            if free >> start & block == block:
                self.pages.allocated |= block << start
                return start
        raise MemoryError(f"no {count} contiguous free pages")

    def alloc_page(self) -> int | None:
        return self.pages.alloc()

    def free_page(self, page: int) -> None:
        self.workload.pop(page, None)
        self.pages.free_page(page)

    def fill(self, page: int, data: bytes) -> None:
        self.mem.write(page * BALLOON_PAGE_SIZE, data)

    def holds(self, page: int, data: bytes) -> bool:
        return self.mem.read(page * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) == data

    # -- workload ----------------------------------------------------------------------------------
    def workload_alloc_write(self, *, top: bool = False) -> int | None:
        """Allocate a free page (the lowest, or with ``top`` the highest) and write it."""
        if top:
            free = self.pages.free
            page = free.bit_length() - 1 if free else None
            if page is not None:
                self.pages.allocated |= 1 << page
        else:
            page = self.pages.alloc()
        if page is not None:
            self.workload_write(page)
        return page

    def workload_write(self, page: int) -> None:
        self._version += 1
        self.workload[page] = self._version
        self.fill(page, page_pattern(self._version))

    def workload_free(self, page: int) -> None:
        if page not in self.workload:
            raise ValueError(f"page {page} is not a workload page")
        self.free_page(page)

    def corrupted(self) -> list[int]:
        """Workload pages whose bytes differ from what the workload last wrote."""
        return [p for p, v in sorted(self.workload.items()) if not self.holds(p, page_pattern(v))]

    def free_pages(self) -> list[int]:
        return bits(self.pages.free)
