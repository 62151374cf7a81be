"""Profile ``combined-inflate-deflate-vq``: Michael S. Tsirkin's ask in the 2016 seed thread (2016-04-19),
"a 3rd vq which does inflate/deflate in one go". No text or bit exists upstream (placeholder bit).

Our layout: le32 n_inflate, le32 n_deflate, then the PFNs to inflate and the PFNs to deflate
(``PROP-CMB-DRV-1``); no PFN twice, deflate only what the balloon holds (``PROP-CMB-DRV-2``); once
negotiated, inflateq and deflateq stay empty (``PROP-CMB-DRV-3``); the device applies a buffer whole
(``PROP-CMB-DEV-1``). What it saves: Linux's balloon page migration (compaction) inflates the new page
and deflates the old one in two round trips; here it is one.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from refmodel.errors import PeerSpecViolation

HEADER = struct.Struct("<II")
_LE32 = struct.Struct("<I")


def encode(inflate: Sequence[int], deflate: Sequence[int]) -> bytes:
    return HEADER.pack(len(inflate), len(deflate)) + b"".join(_LE32.pack(p) for p in (*inflate, *deflate))


class CombinedBalloonDevice:
    """The balloon's page set when inflate and deflate share one queue."""

    def __init__(self, n_pages: int) -> None:
        self.n_pages = n_pages
        self.balloon = 0  # PFN mask
        self.actual = 0

    def buffer_on(self, queue: str) -> None:
        if queue in ("inflateq", "deflateq"):
            raise PeerSpecViolation("PROP-CMB-DRV-3",
                                    f"a buffer on {queue} with the combined queue negotiated")

    def process(self, data: bytes) -> tuple[int, int]:
        """Apply one buffer whole; returns (inflated, deflated). Nothing changes if it is malformed."""
        if len(data) < HEADER.size:
            raise PeerSpecViolation("PROP-CMB-DRV-1",
                                    f"combined buffer of {len(data)} bytes, shorter than its header")
        n_in, n_de = HEADER.unpack_from(data)
        if len(data) != HEADER.size + 4 * (n_in + n_de):
            need = HEADER.size + 4 * (n_in + n_de)
            raise PeerSpecViolation("PROP-CMB-DRV-1", f"{n_in} + {n_de} PFNs need {need} bytes, "
                                    f"the buffer holds {len(data)}")
        pfns = [p for (p,) in _LE32.iter_unpack(data[HEADER.size:])]
        if len(set(pfns)) != len(pfns):
            raise PeerSpecViolation("PROP-CMB-DRV-2", "a PFN appears twice in one combined buffer")
        inflate, deflate = pfns[:n_in], pfns[n_in:]
        for p in pfns:
            if p >= self.n_pages:
                raise PeerSpecViolation("BAL-OP-D1", f"PFN {p:#x} is outside guest memory")
        add = sum(1 << p for p in inflate)
        drop = sum(1 << p for p in deflate)
        if again := add & self.balloon:
            raise PeerSpecViolation("BAL-OP-DRV-6", f"inflate of PFN {(again & -again).bit_length() - 1:#x}, "
                                    "already in the balloon")
        if stray := drop & ~self.balloon:
            first = (stray & -stray).bit_length() - 1
            raise PeerSpecViolation("PROP-CMB-DRV-2", f"deflate of PFN {first:#x}, not in the balloon")
        self.balloon = (self.balloon | add) & ~drop  # PROP-CMB-DEV-1: in one step
        self.actual += n_in - n_de
        return n_in, n_de


def migration_round_trips(pages: int, *, combined: bool) -> int:
    """Round trips to migrate ``pages`` balloon pages (compaction): inflate new + deflate old each."""
    return pages if combined else 2 * pages
