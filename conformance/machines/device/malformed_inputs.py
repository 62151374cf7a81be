"""The malformed driver inputs themselves: each builder puts one out-of-protocol buffer on a queue for
:class:`~conformance.machines.device.malformed.DeviceMalformedInput` (which judges what the device did)."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.virtio.constants import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT
from refmodel.virtio.packed.layout import PDESC_FMT, PVIRTQ_DESC_SIZE
from refmodel.virtio.split.layout import DESC_FMT, VIRTQ_DESC_SIZE

#: A command ID no device publishes in an example (the reference counts up from 2, QEMU from 2^31).
UNPUBLISHED_ID = 0x7FFFFFFF
#: Where a buffer "outside guest memory" points: past the end of RAM, clear of any device's registers.
OUTSIDE = 1 << 30


class MalformedBuilders:
    """Mixin: ``_add``, ``_patch``, ``_patch_packed`` and the guest come from the machine."""

    os: Any

    def _outside(self) -> int:
        return self.os.mem.end + OUTSIDE

    def _short_command_id(self, name: str, scratch: int) -> int | None:
        self.os.mem.write(scratch, b"\x02\x00\x00")
        return self._add(name, readable=[(scratch, 3)])

    def _hint_as_out_buffer(self, name: str, scratch: int) -> int | None:
        # A workload page, so a device that took it for a hint and dropped it shows as damage.
        page = min(self.os.workload, default=scratch // BALLOON_PAGE_SIZE)
        return self._add(name, readable=[(page * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)])

    def _hint_outside(self, name: str, scratch: int) -> int | None:
        head = self._add(name, writable=[(scratch, BALLOON_PAGE_SIZE)])
        if head is not None:
            self._patch(name, head, addr=self._outside())
        return head

    def _second_echo(self, name: str, scratch: int) -> int | None:
        hint = self.drv.hint
        if not self._hinting():
            return None  # no round to echo (a host without hinting controls)
        if hint is not None and hint.served is None:
            if self.current_id is None:
                self.hint_start(0)
            self._driver_run()  # the driver echoes the ID it read
        if hint is None or hint.served is None:
            return None
        self.os.mem.write_u32(scratch, hint.served)
        return self._add(name, readable=[(scratch, 4)])

    def _unpublished_id(self, name: str, scratch: int) -> int | None:
        self.os.mem.write_u32(scratch, UNPUBLISHED_ID)
        return self._add(name, readable=[(scratch, 4)])

    def _pfn_outside(self, name: str, scratch: int) -> int | None:
        self.os.mem.write_u32(scratch, self._outside() // BALLOON_PAGE_SIZE)
        return self._add(name, readable=[(scratch, 4)])

    def _report_outside(self, name: str, scratch: int) -> int | None:
        return self._hint_outside(name, scratch)

    def _victim_pfn(self, scratch: int) -> int:
        """A page a PFN array may name: another scratch page (a device that inflates it drops its contents,
        so never the page holding the array), or the array's own if none is free."""
        victim = self._scratch_page()
        return (scratch if victim is None else victim) // BALLOON_PAGE_SIZE

    def _loop(self, name: str, scratch: int) -> int | None:
        self.os.mem.write_u32(scratch, self._victim_pfn(scratch))
        head = self._add(name, readable=[(scratch, 4)])
        if head is not None:
            self._patch(name, head, flags=VIRTQ_DESC_F_NEXT, next=head)
        return head

    def _long_list(self, name: str, scratch: int) -> int | None:
        """Packed: a list of Queue Size descriptors, each the same one-PFN array, whose last one has NEXT
        too: it never ends (PACKED-DRV-7, the packed ring's loop). Needs the whole ring free."""
        vq = self.drv.vqs[name]
        qs = vq.queue_size
        if qs < 2 or vq.num_free < qs:
            return None
        self.os.mem.write_u32(scratch, self._victim_pfn(scratch))
        head = self._add(name, readable=[(scratch, 4)] * qs)
        if head is not None:
            last = self._added_at + qs - 1
            flags = self.os.mem.unpack(PDESC_FMT, vq.addrs.desc + PVIRTQ_DESC_SIZE * (last % qs))[3]
            self._patch_packed(name, last, flags=flags | VIRTQ_DESC_F_NEXT)
        return head

    def _long_indirect(self, name: str, scratch: int) -> int | None:
        """An indirect table of Queue Size + 1 descriptors, each the same one-PFN array."""
        if self.packed:
            return self._long_packed_indirect(name, scratch)
        n = self.drv.vqs[name].queue_size + 1
        table = scratch + 16 * VIRTQ_DESC_SIZE
        self.os.mem.write_u32(scratch, self._victim_pfn(scratch))
        for i in range(n):
            last = i + 1 == n
            self.os.mem.pack(DESC_FMT, table + VIRTQ_DESC_SIZE * i, scratch, 4,
                             0 if last else VIRTQ_DESC_F_NEXT, 0 if last else i + 1)
        head = self._add(name, readable=[(scratch, 4)])
        if head is not None:
            self._patch(name, head, addr=table, len=VIRTQ_DESC_SIZE * n, flags=VIRTQ_DESC_F_INDIRECT, next=0)
        return head

    def _long_packed_indirect(self, name: str, scratch: int) -> int | None:
        """Packed: a one-entry indirect list whose ring descriptor is then pointed at a table of Queue Size
        + 1 entries (PACKED-DRV-14); the entries carry no flags, as PACKED-DRV-13 asks."""
        vq = self.drv.vqs[name]
        if getattr(vq, "indirect_arena", None) is None:
            return None
        n = vq.queue_size + 1
        table = scratch + 16 * PVIRTQ_DESC_SIZE
        if table + PVIRTQ_DESC_SIZE * n > scratch + BALLOON_PAGE_SIZE:
            return None  # the table would leave the scratch page
        self.os.mem.write_u32(scratch, self._victim_pfn(scratch))
        for i in range(n):
            self.os.mem.pack(PDESC_FMT, table + PVIRTQ_DESC_SIZE * i, scratch, 4, 0, 0)
        head = self._add(name, readable=[(scratch, 4)], indirect=True)
        if head is not None:
            self._patch(name, head, addr=table, len=PVIRTQ_DESC_SIZE * n)
        return head
