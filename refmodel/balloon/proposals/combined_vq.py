"""Profile ``combined-inflate-deflate-vq``: Michael S. Tsirkin's ask in the 2016 seed thread (2016-04-19),
"a 3rd vq which does inflate/deflate in one go". No text or bit exists upstream (placeholder bit).

Our layout: le32 n_inflate, le32 n_deflate, then the PFNs to inflate and the PFNs to deflate
(``PROP-CMB-DRV-1``); no PFN twice, deflate only what the balloon holds (``PROP-CMB-DRV-2``); once
negotiated, inflateq and deflateq stay empty (``PROP-CMB-DRV-3``); the device applies a buffer whole
(``PROP-CMB-DEV-1``). What it saves: Linux's balloon page migration (compaction) inflates the new page
and deflates the old one in two round trips; here it is one.

The queue comes after every 1.4 queue under each numbering (:func:`combined_index`, ambiguity
``AMB-PROP-CMB-INDEX``). :class:`CombinedReferenceDevice` and :class:`CombinedReferenceDriver` are the
reference pair under the profile; the driver's :meth:`~CombinedReferenceDriver.exchange` is compaction.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from refmodel.errors import PeerSpecViolation

HEADER = struct.Struct("<II")
_LE32 = struct.Struct("<I")


def encode(inflate: Sequence[int], deflate: Sequence[int]) -> bytes:
    return HEADER.pack(len(inflate), len(deflate)) + b"".join(_LE32.pack(p) for p in (*inflate, *deflate))


def decode(data: bytes) -> tuple[list[int], list[int]]:
    """The device's parse of one combined buffer: (PFNs to inflate, PFNs to deflate). Malformed input is
    named (PROP-CMB-DRV-1: the layout; PROP-CMB-DRV-2: a PFN twice)."""
    if len(data) < HEADER.size:
        raise PeerSpecViolation("PROP-CMB-DRV-1",
                                f"combined buffer of {len(data)} bytes, shorter than its header")
    n_in, n_de = HEADER.unpack_from(data)
    if len(data) != HEADER.size + 4 * (n_in + n_de):
        need = HEADER.size + 4 * (n_in + n_de)
        raise PeerSpecViolation("PROP-CMB-DRV-1", f"{n_in} + {n_de} PFNs need {need} bytes, the buffer holds "
                                f"{len(data)}")
    pfns = [p for (p,) in _LE32.iter_unpack(data[HEADER.size:])]
    if len(set(pfns)) != len(pfns):
        raise PeerSpecViolation("PROP-CMB-DRV-2", "a PFN appears twice in one combined buffer")
    return pfns[:n_in], pfns[n_in:]


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
        inflate, deflate = decode(data)
        n_in, n_de = len(inflate), len(deflate)
        pfns = [*inflate, *deflate]
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


def migration_cost(pages: int, *, combined: bool, per_buffer: int = 1) -> tuple[int, int, int]:
    """(descriptors, device-readable bytes, round trips) to migrate ``pages`` balloon pages, ``per_buffer``
    pages a buffer (Linux's balloon_page_migrate moves one page a call): two le32 PFN arrays, or one
    combined buffer with its 8-byte header."""
    buffers = -(-pages // per_buffer)
    if combined:
        return buffers, buffers * HEADER.size + 8 * pages, buffers
    return 2 * buffers, 8 * pages, 2 * buffers


# -- the reference device and driver under the profile (composed by refmodel.balloon.proposals.reference) --

from typing import cast  # noqa: E402 - after the profile's own model

from refmodel.balloon.config import CFG_ACTUAL  # noqa: E402
from refmodel.balloon.constants import BALLOON_PAGE_SIZE, VIRTIO_BALLOON_PFN_SHIFT  # noqa: E402
from refmodel.balloon.device import needs_reset_on_breach  # noqa: E402
from refmodel.balloon.proposals.bits import BITS, Proposal  # noqa: E402
from refmodel.balloon.proposals.common import ProposalDevice, ProposalDriver  # noqa: E402
from refmodel.balloon.queues import BALLOON_QUEUES, QueueNumbering  # noqa: E402
from refmodel.errors import guarded  # noqa: E402
from refmodel.virtio.features import Feature, has  # noqa: E402
from refmodel.virtio.virtq import Chain, UsedBuffer  # noqa: E402

P = Proposal.COMBINED_VQ
#: The queue's name, as the device's and driver's queue maps spell it.
QUEUE = "combined_vq"
_Token = tuple[int, tuple[int, ...], tuple[int, ...]]  # (slot address, PFNs to inflate, PFNs to deflate)


def combined_index(numbering: QueueNumbering, offered: int, negotiated: int) -> int:
    """The combined queue's index (ambiguity ``AMB-PROP-CMB-INDEX``): after every 1.4 queue, so no 1.4 queue
    moves. ``FIXED``: 5, the slot after reporting_vq. Compact numberings: the count of 1.4 queues that exist,
    judged by ``offered`` (COMPACT_BY_OFFERED) or ``negotiated`` (COMPACT_BY_NEGOTIATED), as for the
    others."""
    if numbering is QueueNumbering.FIXED:
        return len(BALLOON_QUEUES)
    basis = offered if numbering is QueueNumbering.COMPACT_BY_OFFERED else negotiated
    return sum(1 for q in BALLOON_QUEUES if q.feature is None or has(basis, q.feature))


class CombinedReferenceDevice(ProposalDevice):
    """The device: a combined queue after the 1.4 ones, each buffer applied whole (PROP-CMB-DEV-1) after
    :func:`decode` and the balloon's own checks; inflateq and deflateq refused once negotiated
    (PROP-CMB-DRV-3)."""

    def reset_state(self) -> None:
        self.queue_max.setdefault(QUEUE, 64)
        super().reset_state()

    def _map_queues(self, negotiated: int) -> None:
        super()._map_queues(negotiated)
        if getattr(self, "negotiated", None) is not None and self.proposal_has(P):
            self.index_of[QUEUE] = combined_index(self.numbering, self.offered, negotiated)
            self.name_of[self.index_of[QUEUE]] = QUEUE

    @needs_reset_on_breach
    @guarded
    def run(self) -> None:
        if self.status.driver_ok and QUEUE in self.queues:
            self.serve_queue(QUEUE)  # before the 1.4 queues, which stay empty (PROP-CMB-DRV-3)
        super().run()

    def on_inflateq(self, chain: Chain) -> int | None:
        self._refuse("inflateq")
        return super().on_inflateq(chain)

    def on_deflateq(self, chain: Chain) -> int | None:
        self._refuse("deflateq")
        return super().on_deflateq(chain)

    def _refuse(self, queue: str) -> None:
        if self.proposal_has(P):
            raise PeerSpecViolation("PROP-CMB-DRV-3",
                                    f"a buffer on {queue} with the combined queue negotiated")

    def on_combined_vq(self, chain: Chain) -> int | None:
        """One exchange: every check before any change, then inflate and deflate in one step."""
        if chain.writable:
            raise PeerSpecViolation("PROP-CMB-DRV-1",
                                    f"combined buffer has {chain.writable_len} device-writable bytes")
        inflate, deflate = decode(chain.read_all(self.mem))
        for p in (*inflate, *deflate):
            if not self.mem.contains(p << VIRTIO_BALLOON_PFN_SHIFT, BALLOON_PAGE_SIZE):
                raise PeerSpecViolation("BAL-OP-D1", f"{QUEUE} PFN {p:#x} is outside guest memory")
        add, drop = sum(1 << p for p in inflate), sum(1 << p for p in deflate)
        if again := add & self.ballooned:
            raise PeerSpecViolation("BAL-OP-DRV-6", f"inflate of PFN {(again & -again).bit_length() - 1:#x}, "
                                    "already in the balloon")
        if stray := drop & ~self.ballooned:
            first = (stray & -stray).bit_length() - 1
            raise PeerSpecViolation("PROP-CMB-DRV-2", f"deflate of PFN {first:#x}, not in the balloon")
        after = (self.ballooned | add) & ~drop
        if (len(deflate) > len(inflate) and not self.negotiated_has(Feature.VIRTIO_BALLOON_F_DEFLATE_ON_OOM)
                and after.bit_count() < self._target_floor):
            raise PeerSpecViolation("BAL-OP-DRV-4", f"deflate to {after.bit_count()} pages while num_pages "
                                    f"has been at least {self._target_floor}")
        self.ballooned = after  # PROP-CMB-DEV-1: both halves in one step
        self._touch(add, None, "BAL-OP-DRV-9", "inflated page discarded before the combined ack")
        if self.negotiated_has(Feature.VIRTIO_BALLOON_F_MUST_TELL_HOST):
            self._touch(drop, None, "BAL-OP-DRV-7",
                        "deflated page replaced by a fresh one before the combined ack")
        return 0


class CombinedReferenceDriver(ProposalDriver):
    """The driver: every inflate and deflate on the combined queue (PROP-CMB-DRV-1 to -3), and
    :meth:`exchange`, balloon compaction in one buffer: fresh pages in, as many balloon pages out."""

    def _init_inflate(self) -> None:
        super()._init_inflate()
        self.exchanging = 0  # balloon pages out in exchanges not yet used: still counted in actual
        self.exchanges_used = 0  # exchange buffers the device has used

    def queue_indices(self, offered: int, accepted: int) -> dict[str, int]:
        out = super().queue_indices(offered, accepted)
        if accepted & BITS[P].mask:
            out[QUEUE] = combined_index(self.numbering, offered, accepted)
        return out

    def _setup_queue(self, name: str, index: int) -> None:
        super()._setup_queue(name, index)
        if name == QUEUE:
            size = self.vqs[name].num_free  # a fresh queue: all of it
            slot = HEADER.size + 2 * _LE32.size * self.batch
            area = self._scratch_pages(-(-slot * size // BALLOON_PAGE_SIZE)) * BALLOON_PAGE_SIZE
            self._slots[name] = [area + slot * i for i in range(size)]

    def combined_buffer(self, inflate: list[int], deflate: list[int]) -> bytes:
        """The bytes of one combined buffer (PROP-CMB-DRV-1, -2). Override point."""
        return encode(inflate, deflate)

    def send_combined(self, inflate: list[int], deflate: list[int]) -> int:
        """Make one combined buffer available and kick; returns its head. Override point."""
        assert self.os is not None
        slot = self._slots[QUEUE].pop()
        data = self.combined_buffer(inflate, deflate)
        self.os.mem.write(slot, data)
        head = self.vqs[QUEUE].add([(slot, len(data))], token=(slot, tuple(inflate), tuple(deflate)))
        self.kick(QUEUE)
        return head

    def _room(self) -> bool:
        return bool(self.vqs[QUEUE].num_free and self._slots[QUEUE])

    def _inflate(self, count: int) -> None:
        if not self.proposal_has(P):
            return super()._inflate(count)
        assert self.os is not None
        while count > 0 and self._room():
            pfns = [p for _ in range(min(count, self.batch)) if (p := self.os.alloc_page()) is not None]
            if not pfns:
                return
            self.send_combined(pfns, [])
            self.pfns_in_flight.update(pfns)
            self.inflating += len(pfns)
            count -= len(pfns)

    def _deflate(self, count: int) -> None:
        if not self.proposal_has(P):
            return super()._deflate(count)
        while count > 0 and self._room() and self.balloon:
            pfns = [self.balloon.pop() for _ in range(min(count, self.batch, len(self.balloon)))]
            self.send_combined([], pfns)
            count -= len(pfns)
            self._deflated(pfns)

    def _deflated(self, pfns: list[int]) -> None:
        if self.waits_for_deflate_ack():
            self.pfns_in_flight.update(pfns)
        else:
            self.release(pfns)  # BAL-OP-DRV-8

    @guarded
    def exchange(self, count: int) -> int:
        """Balloon compaction: up to ``count`` balloon pages leave the balloon for as many fresh ones, one
        buffer a batch; returns the pages exchanged (0 without the profile)."""
        if not self.ok or not self.proposal_has(P):
            return 0
        assert self.os is not None
        self._harvest()
        done = 0
        while count > done and self._room() and self.balloon:
            k = min(count - done, self.batch, len(self.balloon))
            new = [p for _ in range(k) if (p := self.os.alloc_page()) is not None]
            if not new:
                break
            old = [self.balloon.pop() for _ in new]
            self.send_combined(new, old)
            self.pfns_in_flight.update(new)
            self.inflating += len(new)
            self.exchanging += len(old)
            self._deflated(old)
            done += len(new)
        self.update_actual()
        return done

    def _used_combined_vq(self, used: UsedBuffer) -> None:
        slot, inflate, deflate = cast(_Token, used.token)
        self._slots[QUEUE].append(slot)
        self.inflating -= len(inflate)
        self.pfns_in_flight.difference_update(inflate)
        self.balloon.extend(inflate)
        if inflate and deflate:
            self.exchanging -= len(deflate)
            self.exchanges_used += 1
        if self.waits_for_deflate_ack():
            self.pfns_in_flight.difference_update(deflate)
            self.release(list(deflate))  # BAL-OP-DRV-7: only now

    def update_actual(self) -> None:
        n = len(self.balloon) + getattr(self, "exchanging", 0)  # an exchange leaves actual as it was
        if n != self.actual_written:
            self.dev.write_config(CFG_ACTUAL, 4, n)
            self.actual_written = n

