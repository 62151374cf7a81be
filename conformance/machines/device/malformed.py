"""Malformed driver input (§2.1.2): the suite's driver breaks one rule on purpose, through its own queues,
and records what the device did with the input.

What the device may do is open (the spec binds the driver), except that it SHOULD set
DEVICE_NEEDS_RESET when the input leaves it needing a reset (STATUS-DEV-2), and then, with DRIVER_OK,
MUST send a configuration change notification (STATUS-DEV-3). So the reactions are:

* it set DEVICE_NEEDS_RESET (a configuration change notification must follow);
* it reported the breach (the reference device raises :class:`PeerSpecViolation` naming the driver's
  requirement, and also asks for a reset): rejected, not a failure of the device;
* it returned the buffer, or kept it but still serves a well-formed inflate: it ignored the input and
  carries on, and nothing needed a reset;
* it kept the buffer, asked for nothing and serves nothing more: it broke without asking for a reset,
  and STATUS-DEV-2 fails.

Damage is judged elsewhere: pages it changed by the page checks (run before the reset forgets what the
device gave back), a crash or hang by the harness. What held for an input class in every example is the
report's observation ``malformed <queue>: <class>``. The input ends the example's protocol (the device
may be broken now): the driver resets the device and probes again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from hypothesis import strategies as st

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.constants import DeviceStatus
from refmodel.virtio.features import Feature
from refmodel.virtio.packed.layout import PDESC_FMT, PVIRTQ_DESC_SIZE
from refmodel.virtio.split.driver import QueueFull
from refmodel.virtio.split.layout import DESC_FMT, USED_ELEM_FMT, VIRTQ_DESC_SIZE, used_ring_entry
from refmodel.virtio.transport import Interrupts
from refmodel.virtio.virtq import u16

from conformance.harness import ImplementationError
from conformance.machines.base import note, step
from conformance.machines.device.hinting import DeviceHinting
from conformance.machines.device.malformed_inputs import OUTSIDE, UNPUBLISHED_ID, MalformedBuilders  # noqa: F401
from conformance.machines.device.notifications import OWED_LOOKS
from conformance.machines.device.reset import DeviceReset



@attrs.frozen
class Malformed:
    """One class of malformed input: where it goes, what it breaks, and the method that builds it."""

    queue: str
    name: str
    breaks: str  # the driver requirement it breaks (the reference device may name a more specific one)
    build: str  # DeviceMalformedInput method: (queue, scratch address) -> head on the ring, or None

    @property
    def topic(self) -> str:
        return f"malformed {self.queue}: {self.name}"


MALFORMED = (
    Malformed("free_page_vq", "command ID of 3 bytes", "BAL-FPH-DRV-1", "_short_command_id"),
    Malformed("free_page_vq", "hint as an out-buffer", "BAL-FPH-D3", "_hint_as_out_buffer"),
    Malformed("free_page_vq", "hint outside guest memory", "BAL-FPH-D3", "_hint_outside"),
    Malformed("free_page_vq", "command ID echoed twice", "BAL-FPH-DRV-3", "_second_echo"),
    Malformed("free_page_vq", "command ID never published", "BAL-FPH-D2", "_unpublished_id"),
    Malformed("inflateq", "PFN outside guest memory", "BAL-OP-D1", "_pfn_outside"),
    Malformed("deflateq", "PFN outside guest memory", "BAL-OP-D1", "_pfn_outside"),
    Malformed("reporting_vq", "report outside guest memory", "SPLIT-DRV-D1", "_report_outside"),
    Malformed("inflateq", "descriptor loop", "SPLIT-DRV-4", "_loop"),
    Malformed("inflateq", "indirect table longer than the queue", "SPLIT-DRV-8", "_long_indirect"),
)
#: Over packed rings: the same classes, the ring's own requirements, and a list that never ends for the loop.
PACKED_MALFORMED = (
    *MALFORMED[:7],
    Malformed("reporting_vq", "report outside guest memory", "PACKED-DRV-D4", "_report_outside"),
    Malformed("inflateq", "list longer than the ring", "PACKED-DRV-7", "_long_list"),
    Malformed("inflateq", "indirect table longer than the queue", "PACKED-DRV-14", "_long_indirect"),
)


class DeviceMalformedInput(MalformedBuilders, DeviceHinting, DeviceReset):
    scratch: list[int]  # pages the suite's driver took for the input at hand; given back after the reset

    def _malformed_kinds(self) -> list[Malformed]:
        """The classes this example's queues can carry (a second echo needs a round to echo, an indirect
        table the feature)."""
        needs = {"_second_echo": self._hinting(), "_long_indirect": self.has(Feature.VIRTIO_F_INDIRECT_DESC)}
        return [k for k in (PACKED_MALFORMED if self.packed else MALFORMED)
                if k.queue in self.drv.vqs and needs.get(k.build, True)]

    @step(needs=lambda self: self._malformed_kinds(), kind=st.integers(0, len(MALFORMED) - 1))
    def malformed_input(self, kind: int) -> None:
        kinds = self._malformed_kinds()
        k = kinds[kind % len(kinds)]
        self.scratch = []
        scratch = self._scratch_page()
        head = None if scratch is None else getattr(self, k.build)(k.queue, scratch)
        if head is None:
            note(f"{k.topic}: no room for it (no free page, or the ring is full)")
        else:
            note(f"driver puts a malformed input on {k.queue}: {k.name} ({k.breaks}), head {head}")
            before = self._used_idx(k.queue)  # an asynchronous device may take it as soon as it is kicked
            self._react(k, head, before, self._publish(k.queue))
            self.workload_pages_intact()  # before the reset forgets which pages the device gave back
        self._reprobe()
        for page in self.scratch:
            self.os.free_page(page)
        note("driver resets the device and probes again")

    # -- what the device did -------------------------------------------------------------------------------
    def _react(self, k: Malformed, head: int, before: int, rejected: PeerSpecViolation | None) -> None:
        name = k.queue
        config = needs_reset = returned = False
        looks = OWED_LOOKS
        while looks:
            looks -= 1
            if rejected is None:
                rejected = self._reported(self.dev.run)
            irq = self.dev.take_interrupts()
            if not isinstance(irq, Interrupts):
                raise ImplementationError("device.take_interrupts", f"returned {irq!r}, expected Interrupts")
            config = config or irq.config
            # The buffer before the status: a device that sets DEVICE_NEEDS_RESET, then returns the buffer
            # (QEMU: virtio_error, then virtqueue_push), is never seen returned with a stale status.
            returned = returned or head in self._used_heads(name, before)
            status = self.dev.read_status()
            if status & DeviceStatus.DEVICE_NEEDS_RESET and not needs_reset:
                # The notification follows the status (an asynchronous device sends it a moment later): it
                # gets as many looks from here, not what is left of the ones for the input.
                needs_reset, looks = True, OWED_LOOKS
            if needs_reset and config or returned and not needs_reset:
                break
        # The observation's words (what held in every example is kept, so timing details stay in the note).
        seen = {f"reported the breach ({rejected.req_id})"} if rejected is not None else set()
        if needs_reset:  # the suite's driver had set DRIVER_OK
            seen.add("set DEVICE_NEEDS_RESET")
            self.R.check("STATUS-DEV-3", config, f"DEVICE_NEEDS_RESET after {k.topic} ({k.breaks}) while "
                         f"DRIVER_OK is set, and no configuration change notification in {OWED_LOOKS} looks")
            if config:
                seen.add("sent a configuration change notification")
        alive = rejected is not None or needs_reset or returned or self._still_serves()
        if not (rejected is not None or needs_reset):
            seen.add("ignored it and carried on" if alive is not False
                     else "stopped without asking for a reset")
        self.R.check("STATUS-DEV-2", alive is not False, f"after {k.topic} ({k.breaks}) the device kept "
                     "the buffer, stopped serving inflateq and did not set DEVICE_NEEDS_RESET (status "
                     f"{status:#04x})")
        self.R.narrow(k.topic, seen)
        if name == "free_page_vq":
            self._check_hints()  # none of it may count as an applied hint
        note(f"the device: {', '.join(sorted(seen))}; the buffer {'came back' if returned else 'stayed'}")

    def _reported(self, call: Callable[[], object]) -> PeerSpecViolation | None:
        """Call the device; a violation it raises naming a driver requirement is its report of the breach."""
        try:
            call()
        except PeerSpecViolation as e:
            if e.role != "driver":
                raise
            return e
        return None

    def _used_heads(self, name: str, since: int) -> set[int]:
        vq = self.drv.vqs[name]
        if self.packed:  # the driver harvests nothing here: every used descriptor since is still unread
            return set(vq.used_ids())
        now = self._used_idx(name)
        count = min(u16(now - since), vq.queue_size)
        ring = vq.addrs.used
        return {self.os.mem.unpack(USED_ELEM_FMT, ring + used_ring_entry(u16(now - 1 - i) % vq.queue_size))[0]
                for i in range(count)}

    def _still_serves(self) -> bool | None:
        """A well-formed inflate of one page: does the device still use it? None if it cannot be tried."""
        vq = self.drv.vqs["inflateq"]
        page = self._scratch_page()
        if page is None:
            return None
        buf = page + BALLOON_PAGE_SIZE // 2  # the PFN array lives in the page it names
        self.os.mem.write_u32(buf, page // BALLOON_PAGE_SIZE)
        head = self._add("inflateq", readable=[(buf, 4)])
        if head is None:
            return None
        before = self._used_idx("inflateq")
        if self._publish("inflateq") is not None:
            return True  # it judged the new buffer: still at work
        for _ in range(OWED_LOOKS):
            if self._reported(self.dev.run) is not None:
                return True
            self.dev.take_interrupts()
            if head in self._used_heads("inflateq", before):
                return True
        return False

    # -- putting it on the ring ------------------------------------------------------------------------------
    def _scratch_page(self) -> int | None:
        """The address of a page the suite's driver takes from the guest for its own use."""
        try:
            page = self.os.alloc_contiguous(1)
        except MemoryError:
            return None
        self.scratch.append(page)  # given back after the reset
        return page * BALLOON_PAGE_SIZE

    def _add(self, name: str, readable: Sequence[tuple[int, int]] = (),
             writable: Sequence[tuple[int, int]] = (), indirect: bool = False) -> int | None:
        vq = self.drv.vqs[name]
        self._added_at = getattr(vq, "next_avail", 0)  # packed: the ring position the list starts at
        try:
            return vq.add(readable, writable, indirect=indirect)
        except QueueFull:
            return None

    def _patch(self, name: str, desc: int, **fields: int) -> None:
        """Rewrite fields of descriptor ``desc`` of ``name`` before the device may see it (packed: the first
        descriptor of the list just added)."""
        if self.packed:
            self._patch_packed(name, self._added_at, **fields)
            return
        addr = self.drv.vqs[name].addrs.desc + VIRTQ_DESC_SIZE * desc
        a, n, flags, nxt = self.os.mem.unpack(DESC_FMT, addr)
        values = {"addr": a, "len": n, "flags": flags, "next": nxt, **fields}
        self.os.mem.pack(DESC_FMT, addr, values["addr"], values["len"], values["flags"], values["next"])

    def _patch_packed(self, name: str, pos: int, **fields: int) -> None:
        """Rewrite fields of the packed descriptor at ring position ``pos``. A batch's first flags are
        written at publish (AMB-PACKED-BATCH), so only a later descriptor's flags may be patched."""
        vq = self.drv.vqs[name]
        addr = vq.addrs.desc + PVIRTQ_DESC_SIZE * (pos % vq.queue_size)
        a, n, buf_id, flags = self.os.mem.unpack(PDESC_FMT, addr)
        values = {"addr": a, "len": n, "id": buf_id, "flags": flags, **fields}
        self.os.mem.pack(PDESC_FMT, addr, values["addr"], values["len"], values["id"], values["flags"])

    def _publish(self, name: str) -> PeerSpecViolation | None:
        """Make it available and notify (always: a driver may), the device's report if it judged it then."""
        self.drv.vqs[name].publish()
        return self._reported(lambda: self.dev.notify(self.drv.index_of[name]))
