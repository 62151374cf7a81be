"""The 2016 seed proposal (``VIRTIO_BALLOON_F_GET_FREE_PAGES``, bit 3 then), as an opt-in profile.

What the patch did (``seed-thread-2016-free-page-bitmap.txt``):

* the driver keeps one 8-byte in-buffer (``struct cache_drop_ctrl``) on ``free_pages_vq``;
* the host *requests* a bitmap by returning that buffer, with a cache-drop flag written in it;
* the driver builds a bitmap of the pages free at that moment and replies with one out-chain:
  ``le64 bmap_len`` then ``bmap_len`` bytes of bitmap, and posts the in-buffer again;
* nothing pairs a reply with its request, and the guest may reuse a page the moment after it was
  put in the bitmap.

Both review questions show up here: a reply describes "free at some time after *some* request", so a
host that applies it after a later dirty-bitmap sync clears a page the guest has since written
(``unordered`` host). The safe host keeps one request outstanding (``SEED-DEV-2``) and drops a reply
if a sync happened after its request (``SEED-DEV-1``): the dirty log then covers every write after
the bitmap was built.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from refmodel.errors import LocalSpecViolation, PeerSpecViolation, Sticky, guarded
from refmodel.system.guest import GuestPages
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver

CACHE_DROP_SIZE = 8
_LE64 = struct.Struct("<Q")


def bitmap_bytes(n_pages: int) -> int:
    """``ALIGN(max_pfn, BITS_PER_LONG) / 8`` from the patch (64-bit longs)."""
    return -(-n_pages // 64) * 8


class SeedDriver(Sticky):
    """The guest side of the 2016 patch on one queue."""

    def __init__(self, vq: SplitQueueDriver, guest: GuestPages, *, ctrl_buf: int, reply_buf: int) -> None:
        self.vq, self.guest, self.ctrl_buf, self.reply_buf = vq, guest, ctrl_buf, reply_buf
        self.replies = 0
        self.vq.add(writable=[(ctrl_buf, CACHE_DROP_SIZE)], token="ctrl")
        self.vq.publish()

    @guarded
    def handle_request(self) -> bool:
        """``free_pages_handle_rq``: if the host returned the ctrl buffer, reply with a fresh bitmap."""
        got = [u for u in self.vq.harvest() if u.token == "ctrl"]
        if not got:
            return False
        n = bitmap_bytes(self.guest.n_pages)
        free = self.guest.free  # SEED-DRV-4: the pages free right now
        self.vq.mem.write(self.reply_buf, _LE64.pack(n) + free.to_bytes(n, "little"))
        self.vq.add([(self.reply_buf, _LE64.size), (self.reply_buf + _LE64.size, n)], token="reply")  # SEED-DRV-1
        self.vq.add(writable=[(self.ctrl_buf, CACHE_DROP_SIZE)], token="ctrl")
        self.vq.publish()
        self.replies += 1
        return True


class SeedDevice(Sticky):
    """The host side. ``ordered`` is the safe host; ``apply`` receives each accepted bitmap as a mask."""

    def __init__(self, vq: SplitQueueDevice, n_pages: int, apply: Callable[[int], None], *,
                 ordered: bool = True) -> None:
        self.vq, self.n_pages, self.apply, self.ordered = vq, n_pages, apply, ordered
        self._ctrl_head: int | None = None
        self.outstanding: list[int] = []  # sync epoch at which each unanswered request was sent
        self.epoch = 0
        self.applied = 0
        self.dropped = 0

    def dirty_log_synced(self) -> None:
        self.epoch += 1

    @guarded
    def request(self, cache_drop: int = 0) -> bool:
        """Ask for a bitmap by returning the driver's ctrl buffer. False if it has none posted."""
        if self.ordered and self.outstanding:
            raise LocalSpecViolation("SEED-DEV-2", "a second request while one is unanswered")
        self._take_ctrl()
        if self._ctrl_head is None:
            return False
        self.vq.mem.write_u64(self.vq.in_flight_chain(self._ctrl_head).writable[0].addr, cache_drop)
        self.vq.add_used(self._ctrl_head, CACHE_DROP_SIZE)
        self._ctrl_head = None
        self.outstanding.append(self.epoch)
        return True

    def _take_ctrl(self) -> None:
        while self._ctrl_head is None and (chain := self.vq.pop()) is not None:
            self._handle_untrusted(chain)

    @guarded
    def process(self) -> int:
        """Consume replies (and a re-posted ctrl buffer); returns the replies handled."""
        n = 0
        while (chain := self.vq.pop()) is not None:
            n += self._handle_untrusted(chain)
        return n

    def _handle_untrusted(self, chain) -> int:
        if not chain.readable:
            if chain.writable_len != CACHE_DROP_SIZE:
                raise PeerSpecViolation("SEED-DRV-1", f"ctrl in-buffer of {chain.writable_len} bytes, not 8")
            if self._ctrl_head is not None:
                raise PeerSpecViolation("SEED-DRV-1", "a second ctrl in-buffer while one is posted")
            self._ctrl_head = chain.head
            return 0
        data = chain.read_all(self.vq.mem)
        self.vq.add_used(chain.head, 0)
        if chain.writable or len(data) < _LE64.size:
            raise PeerSpecViolation("SEED-DRV-1", f"reply of {len(data)} readable, {chain.writable_len} "
                                    "writable bytes")
        (bmap_len,) = _LE64.unpack_from(data)
        if bmap_len != len(data) - _LE64.size:
            raise PeerSpecViolation("SEED-DRV-1", f"bmap_len {bmap_len} but {len(data) - _LE64.size} bitmap bytes")
        if bmap_len > bitmap_bytes(self.n_pages):
            raise PeerSpecViolation("SEED-DRV-2", f"bitmap of {bmap_len} bytes for {self.n_pages} pages "
                                    f"({bitmap_bytes(self.n_pages)} bytes at most)")
        if not self.outstanding:
            raise PeerSpecViolation("SEED-DRV-3", "a reply with no request outstanding")
        sent_at = self.outstanding.pop(0)
        mask = int.from_bytes(data[_LE64.size:], "little") & ((1 << self.n_pages) - 1)
        if self.ordered and sent_at != self.epoch:
            self.dropped += 1  # SEED-DEV-1: a sync came between request and reply
        else:
            self.applied += 1
            self.apply(mask)
        return 1
