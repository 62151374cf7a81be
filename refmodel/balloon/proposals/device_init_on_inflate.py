"""Profile ``device-init-on-inflate``: oasis-tcs/virtio-spec issue #242 (Michael S. Tsirkin, 2026-04-22),
``VIRTIO_BALLOON_F_DEVICE_INIT_ON_INFLATE``, proposed as bit 6 (see :mod:`.bits`).

The device says which inflated pages it initialized (zeros, or poison_val with PAGE_POISON) in a
device-writable bitmap after each inflate PFN array, so the guest need not initialize them again on
deflate. The driver trusts a bit only inside the used length (``PROP-DII-DRV-2``); the reference driver
checks each claim against the page (``PROP-DII-DEV-1``), which only a model can see.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from refmodel.errors import PeerSpecViolation
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.virtq import Chain

_LE32 = struct.Struct("<I")


def bitmap_len(n_pfns: int) -> int:
    """Bytes of the inflate bitmap for ``n_pfns`` PFNs (``PROP-DII-DRV-1``)."""
    return -(-n_pfns // 8)


class InitOnInflateDevice:
    """The device side of #242. ``initialize(pfn)`` drops the page (MADV_DONTNEED, a hole punch) and
    returns True if the page now reads as zeros (or poison_val); the device claims exactly those."""

    def __init__(self, mem: GuestMemory, n_pages: int, initialize: Callable[[int], bool]) -> None:
        self.mem, self.n_pages, self.initialize = mem, n_pages, initialize

    def handle_inflate(self, chain: Chain) -> tuple[list[int], int]:
        """Take one inflate chain; returns its PFNs and the used length (the bitmap bytes written)."""
        if chain.readable_len % _LE32.size:
            raise PeerSpecViolation("BAL-OP-D1", f"inflate PFN array of {chain.readable_len} bytes")
        data = chain.read_all(self.mem)
        pfns = [p for (p,) in _LE32.iter_unpack(data)]
        if chain.writable_len < bitmap_len(len(pfns)):
            raise PeerSpecViolation("PROP-DII-DRV-1", f"{len(pfns)} PFNs need a {bitmap_len(len(pfns))}-byte "
                                    f"bitmap, the chain has {chain.writable_len} writable bytes")
        bitmap = 0
        for i, p in enumerate(pfns):
            if p >= self.n_pages:
                raise PeerSpecViolation("BAL-OP-D1", f"inflate PFN {p:#x} is outside guest memory")
            if self.initialize(p):  # PROP-DII-DEV-1: a bit only for a page really initialized
                bitmap |= 1 << i
        return pfns, chain.write_all(self.mem, bitmap.to_bytes(bitmap_len(len(pfns)), "little"))


def initialized_pfns(pfns: Sequence[int], bitmap: bytes, used_len: int) -> list[int]:
    """The driver's reading (``PROP-DII-DRV-2``): PFNs whose bit is set within the used length."""
    valid = int.from_bytes(bitmap[:used_len], "little")
    return [p for i, p in enumerate(pfns) if valid >> i & 1]


def check_inflate_claims(pfns: Sequence[int], bitmap: bytes, used_len: int,
                         reads_initialized: Callable[[int], bool]) -> list[int]:
    """The reference driver's check of a device's bitmap against the pages (a model can look)."""
    claimed = initialized_pfns(pfns, bitmap, used_len)
    for p in claimed:
        if not reads_initialized(p):
            raise PeerSpecViolation("PROP-DII-DEV-1", f"PFN {p:#x} marked initialized but holds other data")
    return claimed
