"""Profile ``bitmap-inflate-deflate``: Michael S. Tsirkin's ask in the 2016 seed thread (2016-04-19),
"feature to use a bitmap for inflate/deflate ... there seems no reason to use bitmap for free pages but
not for inflate/deflate". No text or bit exists upstream (placeholder bit, :mod:`.bits`).

Our layout, ``struct virtio_balloon_bitmap``: le64 base_pfn (a multiple of 64), le64 nbits, then
ceil(nbits/64) le64 words; bit i stands for PFN base_pfn + i (``PROP-BMP-DRV-1`` to ``-3``). The device
treats a set bit as one PFN of an array (``PROP-BMP-DEV-1``). :func:`cost` and :func:`pfn_cost` are
what the benchmark compares.
"""

from __future__ import annotations

import struct

import attrs

from refmodel.errors import PeerSpecViolation

HEADER = struct.Struct("<QQ")
WORD = 8
#: Linux's VIRTIO_BALLOON_ARRAY_PFNS_MAX: PFNs per inflate buffer, one buffer in flight.
PFNS_PER_BUFFER = 256
#: Our cap on one bitmap buffer (one 4 KiB page of words: 32768 pages, 128 MiB).
MAX_BITMAP_BYTES = 4096


def words(nbits: int) -> int:
    return -(-nbits // 64)


def encode(base_pfn: int, nbits: int, pages: int) -> bytes:
    """One buffer: ``pages`` is a mask relative to base_pfn (bit i = PFN base_pfn + i)."""
    return HEADER.pack(base_pfn, nbits) + (pages & ((1 << nbits) - 1)).to_bytes(words(nbits) * WORD, "little")


def decode(data: bytes, n_pages: int) -> int:
    """The device's parse: the buffer's pages as an absolute PFN mask. Malformed input is named."""
    if len(data) < HEADER.size:
        raise PeerSpecViolation("PROP-BMP-DRV-1",
                                f"bitmap buffer of {len(data)} bytes, shorter than its header")
    base, nbits = HEADER.unpack_from(data)
    if base % 64:
        raise PeerSpecViolation("PROP-BMP-DRV-2", f"base_pfn {base:#x} is not a multiple of 64")
    if base + nbits > n_pages:
        raise PeerSpecViolation("PROP-BMP-DRV-3", f"base_pfn {base:#x} + nbits {nbits} runs past the "
                                f"{n_pages} pages of guest memory")
    have = len(data) - HEADER.size
    if words(nbits) * WORD != have:
        raise PeerSpecViolation("PROP-BMP-DRV-1", f"nbits {nbits} needs {words(nbits) * WORD} bitmap bytes, "
                                f"the buffer holds {have}")
    return (int.from_bytes(data[HEADER.size:], "little") & ((1 << nbits) - 1)) << base


class BitmapBalloonDevice:
    """The balloon's page set under the profile: inflate and deflate buffers are bitmaps."""

    def __init__(self, n_pages: int) -> None:
        self.n_pages = n_pages
        self.balloon = 0  # PFN mask

    def inflate(self, data: bytes) -> int:
        pages = decode(data, self.n_pages)
        if again := pages & self.balloon:
            raise PeerSpecViolation("BAL-OP-DRV-6", f"inflate of PFN {(again & -again).bit_length() - 1:#x}, "
                                    "already in the balloon")
        self.balloon |= pages  # PROP-BMP-DEV-1: each set bit is one PFN
        return pages.bit_count()

    def deflate(self, data: bytes) -> int:
        pages = decode(data, self.n_pages)
        if stray := pages & ~self.balloon:
            first = (stray & -stray).bit_length() - 1
            raise PeerSpecViolation("BAL-OP-DRV-10", f"deflate of PFN {first:#x}, not in the balloon")
        self.balloon &= ~pages
        return pages.bit_count()


@attrs.frozen
class Cost:
    descriptors: int  # buffers, one descriptor each
    bytes: int  # device-readable bytes
    round_trips: int  # Linux sends one buffer and waits for it to be used


def pfn_cost(n_pfns: int) -> Cost:
    """PFN arrays (virtio 1.4): 4 bytes a page, 256 pages a buffer."""
    n = -(-n_pfns // PFNS_PER_BUFFER)
    return Cost(n, 4 * n_pfns, n)


def cost(span_pages: int) -> Cost:
    """Bitmaps covering ``span_pages`` PFNs (the lowest to the highest page inflated, 64-aligned), whatever
    share of them is set: one bit a page of the span, in buffers of at most MAX_BITMAP_BYTES."""
    per = MAX_BITMAP_BYTES * 8
    n = -(-span_pages // per)
    return Cost(n, n * HEADER.size + words(span_pages) * WORD, n)


def buffers_for(mask: int, n_pages: int) -> list[bytes]:
    """Encode a PFN mask as buffers of at most MAX_BITMAP_BYTES, skipping empty stretches."""
    per = MAX_BITMAP_BYTES * 8
    out = []
    for base in range(0, n_pages, per):
        chunk = mask >> base & ((1 << per) - 1)
        if chunk:
            nbits = min(per, n_pages - base, chunk.bit_length())
            out.append(encode(base, nbits, chunk))
    return out


# -- the reference device and driver under the profile (composed by refmodel.balloon.proposals.reference) --

from refmodel.balloon.proposals.bits import Proposal  # noqa: E402 - after the profile's own model
from refmodel.balloon.proposals.common import ProposalDevice, ProposalDriver  # noqa: E402
from refmodel.system.guest import bits  # noqa: E402
from refmodel.virtio.virtq import Chain  # noqa: E402

P = Proposal.BITMAP_INFLATE_DEFLATE


class BitmapReferenceDevice(ProposalDevice):
    """The device: inflateq and deflateq carry bitmaps, parsed by :func:`decode` (PROP-BMP-DRV-1 to -3),
    each set bit taken as the PFN an array would name (PROP-BMP-DEV-1)."""

    def pfns_untrusted(self, chain: Chain, queue: str) -> list[int]:
        if not self.proposal_has(P):
            return super().pfns_untrusted(chain, queue)
        if chain.writable:
            raise PeerSpecViolation("PROP-BMP-DRV-1", f"{queue} bitmap chain has {chain.writable_len} "
                                    "device-writable bytes")
        return bits(decode(chain.read_all(self.mem), self.n_pages))


class BitmapReferenceDriver(ProposalDriver):
    """The driver: each PFN batch goes out as one bitmap from the 64-aligned base below its lowest PFN."""

    @property
    def slot_bytes(self) -> int:
        """Bytes in each bitmap buffer slot (header and bitmap)."""
        return self._slot_bytes

    def _setup_pfn_slots(self, name: str, size: int) -> None:
        if not self.proposal_has(P):
            return super()._setup_pfn_slots(name, size)
        assert self.os is not None
        self._slot_bytes = HEADER.size + min(words(self.os.mem.end // 4096) * WORD, MAX_BITMAP_BYTES)
        area = self._scratch_pages(-(-self._slot_bytes * size // 4096)) * 4096
        self._slots[name] = [area + self._slot_bytes * i for i in range(size)]

    def bitmap_of(self, pfns: list[int]) -> bytes:
        """One buffer for ``pfns`` (PROP-BMP-DRV-1, -2, -3). Override point."""
        base = min(pfns) & ~63
        nbits = max(pfns) - base + 1
        return encode(base, nbits, sum(1 << (p - base) for p in pfns))

    def send_pfns(self, name: str, pfns: list[int]) -> int:
        if not self.proposal_has(P):
            return super().send_pfns(name, pfns)
        assert self.os is not None
        data = self.bitmap_of(pfns)
        if len(data) > self._slot_bytes:  # too wide for one buffer: split the batch in two
            half = sorted(pfns)
            self.send_pfns(name, half[:len(half) // 2])
            return self.send_pfns(name, half[len(half) // 2:])
        vq, slot = self.vqs[name], self._slots[name].pop()
        self.os.mem.write(slot, data)
        head = vq.add([(slot, len(data))], token=(slot, tuple(pfns)))
        self.kick(name)
        return head
