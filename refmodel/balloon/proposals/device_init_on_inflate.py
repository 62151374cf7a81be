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


# -- the reference device and driver under the profile (composed by refmodel.balloon.proposals.reference) --

from typing import cast  # noqa: E402 - after the profile's own model

import attrs  # noqa: E402

from refmodel.balloon.constants import BALLOON_PAGE_SIZE  # noqa: E402
from refmodel.balloon.proposals.bits import Proposal  # noqa: E402
from refmodel.balloon.proposals.common import ProposalDevice, ProposalDriver  # noqa: E402
from refmodel.system.guest_os import poison_pattern  # noqa: E402
from refmodel.virtio.features import Feature  # noqa: E402
from refmodel.virtio.virtq import UsedBuffer  # noqa: E402

P = Proposal.DEVICE_INIT_ON_INFLATE


class InitOnInflateBalloonDevice(ProposalDevice):
    """The device: each inflate chain carries a bitmap (PROP-DII-DRV-1); it initializes every inflated page
    (zeros, or poison_val) and sets its bit (PROP-DII-DEV-1). The used length is the bitmap's."""

    def initialize(self, pages: int) -> bool:
        """Make ``pages`` read as initialized; True if they now do. Override point."""
        poison = self.poison_val
        self._touch(pages, None if poison is None else poison_pattern(poison), "BAL-OP-DRV-9",
                    "inflated page initialized before the inflate ack")
        return True

    def on_inflateq(self, chain: Chain) -> int | None:
        if not self.proposal_has(P):
            return super().on_inflateq(chain)
        n = chain.readable_len // _LE32.size
        if chain.writable_len < bitmap_len(n):
            raise PeerSpecViolation("PROP-DII-DRV-1", f"{n} PFNs need a {bitmap_len(n)}-byte bitmap, the chain "
                                    f"has {chain.writable_len} writable bytes")
        super().on_inflateq(attrs.evolve(chain, writable=()))  # the PFN array, as 1.4 takes it
        pfns = [p for (p,) in _LE32.iter_unpack(chain.read_all(self.mem))]
        done = self.initialize(sum(1 << p for p in pfns))
        bitmap = ((1 << n) - 1) if done else 0
        return chain.write_all(self.mem, bitmap.to_bytes(bitmap_len(n), "little"))


class InitOnInflateBalloonDriver(ProposalDriver):
    """The driver: a zeroed bitmap after each inflate PFN array; on the ack it checks every claimed page
    (PROP-DII-DEV-1, a model can look) and keeps them in ``initialized``."""

    def _init_inflate(self) -> None:
        super()._init_inflate()
        self._bitmaps: dict[int, int] = {}
        self.initialized: set[int] = set()
        self.claims_checked = 0

    def _setup_pfn_slots(self, name: str, size: int) -> None:
        super()._setup_pfn_slots(name, size)
        if name == "inflateq" and self.proposal_has(P):
            n = bitmap_len(self.batch)
            area = self._scratch_pages(-(-n * size // BALLOON_PAGE_SIZE)) * BALLOON_PAGE_SIZE
            self._bitmaps = {slot: area + n * i for i, slot in enumerate(self._slots[name])}

    def send_pfns(self, name: str, pfns: list[int]) -> int:
        if name != "inflateq" or not self.proposal_has(P):
            return super().send_pfns(name, pfns)
        assert self.os is not None
        vq, slot = self.vqs[name], self._slots[name].pop()
        bm = self._bitmaps[slot]
        self.os.mem.write(slot, b"".join(_LE32.pack(p) for p in pfns))
        self.os.mem.fill(bm, bitmap_len(len(pfns)), 0)
        head = vq.add([(slot, _LE32.size * len(pfns))], [(bm, bitmap_len(len(pfns)))], token=(slot, tuple(pfns)))
        self.kick(name)
        return head

    def _reads_initialized(self, pfn: int) -> bool:
        assert self.os is not None
        want = poison_pattern(self.poison_val) if self.negotiated_has(Feature.VIRTIO_BALLOON_F_PAGE_POISON) \
            else bytes(BALLOON_PAGE_SIZE)
        return self.os.mem.read(pfn * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) == want

    def _used_inflateq(self, used: UsedBuffer) -> None:
        if self.proposal_has(P):
            assert self.os is not None
            slot, pfns = cast(tuple[int, tuple[int, ...]], used.token)
            data = self.os.mem.read(self._bitmaps[slot], bitmap_len(len(pfns)))
            self.initialized.update(check_inflate_claims(pfns, data, used.len, self._reads_initialized))
            self.claims_checked += 1
        super()._used_inflateq(used)

    def release(self, pfns: list[int]) -> None:
        self.initialized.difference_update(pfns)
        super().release(pfns)

