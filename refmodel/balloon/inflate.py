"""Inflate and deflate (§5.5.6.1, §5.5.6.2): the balloon follows num_pages through PFN arrays.

:class:`InflateDevice` and :class:`InflateDriver` are parts of the balloon device and driver; each
names, under ``TYPE_CHECKING``, what it uses of the side it is part of.
"""

from __future__ import annotations

import struct
from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Any, cast

from refmodel.balloon.config import CFG_ACTUAL, CFG_NUM_PAGES
from refmodel.balloon.constants import BALLOON_PAGE_SIZE, VIRTIO_BALLOON_PFN_SHIFT
from refmodel.balloon.queues import BALLOON_QUEUES
from refmodel.errors import PeerSpecViolation, Sticky, guarded
from refmodel.virtio.features import Feature
from refmodel.virtio.virtq import Chain, UsedBuffer

if TYPE_CHECKING:
    from refmodel.balloon.config import BalloonConfigSpace
    from refmodel.system.guest_os import GuestOS
    from refmodel.virtio.memory import GuestMemory
    from refmodel.virtio.split.driver import SplitQueueDriver

F = Feature
_PFN = struct.Struct("<I")
#: The queues of le32 PFN arrays: the two every balloon has.
PFN_QUEUES = tuple(q.name for q in BALLOON_QUEUES if q.feature is None)
_Token = tuple[int, tuple[int, ...]]  # a PFN buffer's (slot address, PFNs)


class InflateDevice(Sticky):
    """Part of :class:`~refmodel.balloon.device.BalloonDevice`: the host's target and the balloon's pages."""

    target: int  # the host's num_pages
    ballooned: int  # pages in the balloon (inflate acknowledged, deflate not)
    _target_floor: int  # the lowest target since the last run: what a deflate made available may go to
    if TYPE_CHECKING:  # provided by BalloonDevice
        mem: GuestMemory
        config: BalloonConfigSpace

        def negotiated_has(self, feature: Feature) -> bool: ...
        def _config_changed(self, before: int, field: str) -> None: ...
        def _touch(self, pages: int, fill: bytes | None, req_id: str, why: str) -> None: ...

    def _reset_inflate(self) -> None:
        self.ballooned = 0
        self._target_floor = self.target

    @guarded
    def set_target(self, num_pages: int) -> None:
        """The host asks for a balloon of ``num_pages`` 4 KiB pages."""
        if not 0 <= num_pages <= 0xFFFFFFFF:
            raise ValueError(f"num_pages {num_pages!r} does not fit le32")
        before = self.config.generation
        self.target = num_pages
        self._target_floor = min(self._target_floor, num_pages)
        self.config.device_set("num_pages", num_pages)
        self._config_changed(before, "num_pages")

    def _end_inflate_run(self) -> None:
        # Deflates made available from now on were decided under the current target at the lowest.
        self._target_floor = self.target

    def pfns_untrusted(self, chain: Chain, queue: str) -> list[int]:
        """The PFNs of an inflateq or deflateq buffer, parsed from untrusted memory (an override point: a
        profile that carries pages in another form parses them here)."""
        if chain.writable or chain.readable_len % _PFN.size:
            raise PeerSpecViolation("BAL-OP-D1", f"{queue} buffer of {chain.readable_len} readable and "
                                    f"{chain.writable_len} writable bytes is not an le32 PFN array")
        data = chain.read_all(self.mem)
        pfns = list(struct.unpack(f"<{len(data) // _PFN.size}I", data))
        # Guest memory is one flat range, so the lowest and highest PFN decide for all (a buffer holds
        # thousands); the first PFN outside is looked for only to name it.
        if pfns and not (self._page_in_memory(min(pfns)) and self._page_in_memory(max(pfns))):
            p = next(p for p in pfns if not self._page_in_memory(p))
            raise PeerSpecViolation("BAL-OP-D1", f"{queue} PFN {p:#x} is outside guest memory")
        return pfns

    def _page_in_memory(self, pfn: int) -> bool:
        return self.mem.contains(pfn << VIRTIO_BALLOON_PFN_SHIFT, BALLOON_PAGE_SIZE)

    @staticmethod
    def _mask(pfns: list[int]) -> int:
        """The balloon bitmap of ``pfns`` (one bit per distinct page, built without a Python loop)."""
        return reduce(or_, map((1).__lshift__, set(pfns)), 0)

    def on_inflateq(self, chain: Chain) -> int | None:
        """Take the pages of one inflate buffer; returns the used length. Override point."""
        pfns = self.pfns_untrusted(chain, "inflateq")
        mask = self._mask(pfns)
        if mask & self.ballooned:
            p = next(p for p in pfns if self.ballooned >> p & 1)
            raise PeerSpecViolation("BAL-OP-DRV-6", f"inflate of PFN {p:#x}, already in the balloon: the "
                                    "driver took a balloon page back without a deflate request")
        self.ballooned |= mask
        self._touch(mask, None, "BAL-OP-DRV-9", "inflated page discarded before the inflate ack")
        return 0

    def on_deflateq(self, chain: Chain) -> int | None:
        """Give back the pages of one deflate buffer; returns the used length. Override point."""
        pfns = self.pfns_untrusted(chain, "deflateq")
        mask = self._mask(pfns)
        if mask & ~self.ballooned:
            p = next(p for p in pfns if not self.ballooned >> p & 1)
            raise PeerSpecViolation("BAL-OP-DRV-10", f"deflate of PFN {p:#x}, which is not in the balloon")
        remaining = (self.ballooned & ~mask).bit_count()
        if not self.negotiated_has(F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM) and remaining < self._target_floor:
            raise PeerSpecViolation("BAL-OP-DRV-4", f"deflate to {remaining} pages while num_pages has been "
                                    f"at least {self._target_floor}")
        self.ballooned &= ~mask
        if self.negotiated_has(F.VIRTIO_BALLOON_F_MUST_TELL_HOST):
            # BAL-OP-DEV-2: with MUST_TELL_HOST the page is the device's until this ack.
            self._touch(mask, None, "BAL-OP-DRV-7", "deflated page replaced by a fresh one before the ack")
        return 0


class InflateDriver(Sticky):
    """Part of :class:`~refmodel.balloon.driver.BalloonDriver`: follow num_pages, report actual."""

    batch: int  # PFNs per buffer
    balloon: list[int]  # pages in the balloon (inflate acknowledged)
    inflating: int  # pages in inflate buffers not yet acknowledged
    actual_written: int | None
    released: list[int]  # every page given back to the OS after a deflate, in order
    pfns_in_flight: set[int]  # pages in inflate or deflate buffers the device has not returned, still held
    _slots: dict[str, list[int]]  # free PFN-array buffers per queue
    if TYPE_CHECKING:  # provided by BalloonDriver
        dev: Any
        os: GuestOS | None
        ok: bool
        vqs: dict[str, SplitQueueDriver]

        def negotiated_has(self, feature: Feature) -> bool: ...
        def kick(self, name: str) -> None: ...
        def _harvest(self) -> None: ...
        def _scratch_pages(self, count: int) -> int: ...
        def poison(self, pages: list[int]) -> None: ...

    def _init_inflate(self) -> None:
        self.balloon = []
        self.inflating = 0
        self.actual_written = None
        self.released = []
        self.pfns_in_flight = set()
        self._slots = {}

    def _setup_pfn_slots(self, name: str, size: int) -> None:
        slot_bytes = _PFN.size * self.batch
        area = self._scratch_pages(-(-slot_bytes * size // BALLOON_PAGE_SIZE)) * BALLOON_PAGE_SIZE
        self._slots[name] = [area + slot_bytes * i for i in range(size)]

    def resize(self) -> None:
        """Move the balloon toward num_pages (an override point: a driver that will not inflate)."""
        target = self.dev.read_config(CFG_NUM_PAGES, 4)
        have = len(self.balloon) + self.inflating
        if target > have:
            self._inflate(target - have)
        elif target < len(self.balloon) and not self.inflating:
            self._deflate(len(self.balloon) - target)

    def can_send(self, name: str) -> bool:
        """Whether ``name`` has a free descriptor and a free PFN-array buffer for :meth:`send_pfns`."""
        return bool(self.vqs[name].num_free and self._slots[name])

    def send_pfns(self, name: str, pfns: list[int]) -> int:
        """Make one PFN array available on ``name`` and kick; returns its head. Override point."""
        vq = self.vqs[name]
        slot = self._slots[name].pop()
        self.os.mem.write(slot, b"".join(_PFN.pack(p) for p in pfns))  # type: ignore[union-attr]
        head = vq.add([(slot, _PFN.size * len(pfns))], token=(slot, tuple(pfns)))
        self.kick(name)
        return head

    def _inflate(self, count: int) -> None:
        assert self.os is not None
        while count > 0 and self.can_send("inflateq"):
            pfns: list[int] = []
            while len(pfns) < min(count, self.batch) and (p := self.os.alloc_page()) is not None:
                pfns.append(p)
            if not pfns:
                return  # no free memory: try again later (BAL-OP-DRV-1 is a SHOULD)
            self.send_pfns("inflateq", pfns)  # BAL-OP-D1; pages untouched until the ack (BAL-OP-DRV-9)
            self.pfns_in_flight.update(pfns)
            self.inflating += len(pfns)
            count -= len(pfns)

    def _used_inflateq(self, used: UsedBuffer) -> None:
        slot, pfns = cast(_Token, used.token)
        self._slots["inflateq"].append(slot)
        self.inflating -= len(pfns)
        self.pfns_in_flight.difference_update(pfns)
        self.balloon.extend(pfns)

    def waits_for_deflate_ack(self) -> bool:
        """Whether deflated pages wait for the device's ack: with MUST_TELL_HOST (BAL-OP-DRV-7), else
        not (BAL-OP-DRV-8). Override point."""
        return self.negotiated_has(F.VIRTIO_BALLOON_F_MUST_TELL_HOST)

    def _deflate(self, count: int) -> None:
        vq = self.vqs["deflateq"]
        while count > 0 and vq.num_free and self._slots["deflateq"] and self.balloon:
            pfns = [self.balloon.pop() for _ in range(min(count, self.batch, len(self.balloon)))]
            self.send_pfns("deflateq", pfns)  # BAL-OP-DRV-6
            count -= len(pfns)
            if not self.waits_for_deflate_ack():
                self.release(pfns)  # BAL-OP-DRV-8: no need to wait for the ack
            else:
                self.pfns_in_flight.update(pfns)

    def _used_deflateq(self, used: UsedBuffer) -> None:
        slot, pfns = cast(_Token, used.token)
        self._slots["deflateq"].append(slot)
        if self.waits_for_deflate_ack():
            self.pfns_in_flight.difference_update(pfns)
            self.release(list(pfns))  # BAL-OP-DRV-7: only now

    def release(self, pfns: list[int]) -> None:
        """Give deflated pages back to the OS, poisoned first (BAL-PP-DRV-1). Override point."""
        assert self.os is not None
        self.poison(pfns)
        for p in pfns:
            self.os.free_page(p)
            self.released.append(p)

    def update_actual(self) -> None:
        """Write actual when the balloon's size changed (BAL-OP-DRV-11). Override point."""
        n = len(self.balloon)
        if n != self.actual_written:
            self.dev.write_config(CFG_ACTUAL, 4, n)
            self.actual_written = n

    @guarded
    def oom(self, count: int) -> int:
        """Memory pressure: give back up to ``count`` balloon pages if DEFLATE_ON_OOM allows it."""
        if not self.ok or not self.negotiated_has(F.VIRTIO_BALLOON_F_DEFLATE_ON_OOM):
            return 0
        self._harvest()
        before = len(self.balloon)
        self._deflate(count)
        self.update_actual()
        return before - len(self.balloon)
