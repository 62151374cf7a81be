"""Used lengths (SPLIT-DEV-15; PACKED-DEV-D13 over packed rings): a device that returns a chain with used
len L wrote its first L bytes, from the first device-writable buffer on, before it moved the used idx (or
marked the used descriptor used).

Only reporting_vq returns device-writable buffers the device may change. Without PAGE_POISON the
suite's driver (:class:`~conformance.machines.device.canary.CanaryDriver`) fills each reported page
with a canary before the report (a guest may write its free pages); a used len that covers a canary
word still in place claims bytes the device never wrote. With PAGE_POISON the pages hold poison_val,
which a conforming device may write back unchanged, so nothing can be told apart there.

Over packed rings the used descriptors are read where the device wrote them, before the driver harvests
them, and each Buffer ID leads to the device-writable elements the suite's driver made available with it
(its own record, since the device overwrites the ring). A used descriptor without VIRTQ_DESC_F_WRITE
claims no bytes (§2.8.4: its len is reserved; AMB-PACKED-USED-WRITE).
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.virtio.constants import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE
from refmodel.virtio.features import Feature, has
from refmodel.virtio.split.layout import DESC_FMT, USED_ELEM_FMT, VIRTQ_DESC_SIZE, used_ring_entry
from refmodel.virtio.virtq import u16

from conformance.machines.base import note, step
from conformance.machines.device.canary import WORD, canary
from conformance.machines.device.operation import DeviceOperation
from conformance.machines.device.reporting import DeviceReportingAndOom
from conformance.machines.device.reset import DeviceReset


class DeviceUsedLengths(DeviceOperation, DeviceReportingAndOom, DeviceReset):
    def _after_device_run(self) -> None:
        super()._after_device_run()
        self._check_used_lengths("reporting_vq")

    def _writable(self, name: str, head: int) -> list[tuple[int, int]] | None:
        """The device-writable buffers of the chain at ``head``, read from the driver's own descriptor
        table; None if it is not a plain chain (the used-ring parsers judge the rest)."""
        vq = self.drv.vqs[name]
        out, idx = [], head
        for _ in range(vq.queue_size):
            if idx >= vq.queue_size:
                return None
            addr, length, flags, nxt = self.os.mem.unpack(DESC_FMT, vq.addrs.desc + VIRTQ_DESC_SIZE * idx)
            if flags & VIRTQ_DESC_F_INDIRECT:
                return None
            if flags & VIRTQ_DESC_F_WRITE:
                out.append((addr, length))
            if not flags & VIRTQ_DESC_F_NEXT:
                return out
            idx = nxt
        return None

    def _canaried(self, bufs: Sequence[tuple[int, int]]) -> bool:
        """``bufs`` are whole pages the suite's driver canaried and the device has not returned yet."""
        return all(a % BALLOON_PAGE_SIZE == 0 and n == BALLOON_PAGE_SIZE
                   and a // BALLOON_PAGE_SIZE in self.drv.canaried for a, n in bufs)

    def _check_used_lengths(self, name: str) -> None:
        vq = self.drv.vqs.get(name)
        if vq is None:
            return
        if self.packed:
            self._check_packed_used_lengths(name)
            return
        now = self._used_idx(name)
        seen = self.used_seen.get(name, vq.last_used_idx)
        self.used_seen[name] = now
        if u16(now - seen) > vq.queue_size:  # a wrapped ring keeps the last queue-size elements only
            seen = u16(now - vq.queue_size)
        for i in range(u16(now - seen)):
            head, length = self.os.mem.unpack(USED_ELEM_FMT, vq.addrs.used + used_ring_entry(u16(seen + i)
                                                                                           % vq.queue_size))
            bufs = self._writable(name, head) if head < vq.queue_size else None
            if not bufs or not self._canaried(bufs):
                continue  # not a canaried report (with PAGE_POISON, or not the suite's layout)
            self._check_written(name, f"head {head}", length, bufs, "SPLIT-DEV-15")

    def _check_packed_used_lengths(self, name: str) -> None:
        """Each used descriptor not yet harvested whose buffer is a canaried report (PACKED-DEV-D13). One
        judged is not judged again: its pages leave ``canaried``."""
        vq = self.drv.vqs[name]
        for buf_id, length, flags in vq.used_descs():
            bufs = vq.writable_of(buf_id)
            if not bufs or not self._canaried(bufs):
                continue
            if not flags & VIRTQ_DESC_F_WRITE and vq.used_len_needs_write:
                length = 0  # reserved without WRITE: the device says it wrote nothing (PACKED-DRV-D3)
            self._check_written(name, f"Buffer ID {buf_id}", length, bufs, "PACKED-DEV-D13")

    def _check_written(self, name: str, which: str, length: int, bufs: Sequence[tuple[int, int]],
                       req: str) -> None:
        """The first ``length`` bytes of ``bufs`` (whole canaried pages) no longer hold the canary."""
        off = 0
        for addr, size in bufs:
            page = addr // BALLOON_PAGE_SIZE
            self.drv.canaried.discard(page)
            want = canary(page)
            for w in range(0, max(0, min(size, length - off)), WORD.size):
                if self.os.mem.read(addr + w, WORD.size) == want[w:w + WORD.size]:
                    self.R.check(req, False, f"{name}: {which} came back with used len "
                                 f"{length}, but byte {off + w} of its device-writable buffers still holds "
                                 "the canary the driver wrote there: the device did not write it")
            off += size
        self.R.saw(req)

    @step(when=lambda self: has(self.offered, Feature.VIRTIO_BALLOON_F_PAGE_REPORTING), poison=st.booleans())
    def report_and_return(self, poison: bool) -> None:
        """A report the device returns in the next cycle, with PAGE_POISON or without (re-probing for it
        if need be): with it the pages must come back holding poison_val (BAL-FPR-DEV-2), without it the
        canaried pages let the used len be judged (SPLIT-DEV-15, PACKED-DEV-D13)."""
        self._want_feature(Feature.VIRTIO_BALLOON_F_PAGE_POISON, poison)
        self._want_feature(Feature.VIRTIO_BALLOON_F_PAGE_REPORTING, True)
        n = self._report()
        self._cycles(1)
        poisoned = self.has(Feature.VIRTIO_BALLOON_F_PAGE_POISON)
        note(f"driver reports {n} page(s) {'with' if poisoned else 'without'} PAGE_POISON, then a cycle")
