"""Free page hinting (§5.5.6.5): the command-ID handshake, both sides, on a real split virtqueue.

Rules (h11 style): every state change of either side is a row of :data:`DEVICE_TRANSITIONS` or
:data:`DRIVER_TRANSITIONS`; the docs draw the diagrams from these tables.

The tagging rule (``AMB-FPH-TAGGING``): a hint in-buffer is tagged with the command ID of the most
recent command-ID out-buffer the device consumed before it (an out-buffer earlier in the same chain
counts). The device applies a hint only while ACTIVE and only if its tag equals the ID it published
(``BAL-FPH-DEV-3``); every other hint is ignored.

The device never reuses an ID before a reset (``AMB-FPH-ID-REUSE``), which is stricter than
``BAL-FPH-DEV-2`` (no reuse until the driver's STOP).

:class:`HintingDevice` and :class:`HintingDriver` are the balloon's parts that host these two sides.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from refmodel.balloon.config import CFG_CMD_ID, BalloonConfigSpace
from refmodel.balloon.constants import (BALLOON_PAGE_SIZE, VIRTIO_BALLOON_CMD_ID_DONE,
    VIRTIO_BALLOON_CMD_ID_STOP)
from refmodel.errors import LocalSpecViolation, NotNegotiated, PeerSpecViolation, Sticky, guarded
from refmodel.system.guest import GuestPages, bits, range_mask
from refmodel.virtio.virtq import Chain
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver

if TYPE_CHECKING:
    from refmodel.system.guest_os import GuestOS

CMD_ID_SIZE = 4  # BAL-FPH-DRV-1
_LE32 = struct.Struct("<I")
_CMD_ID_FIELD = "free_page_hint_cmd_id"


class DeviceHintState(enum.Enum):
    STOP = "stop"  # config reads STOP (also the state after reset)
    REQUESTED = "requested"  # an ID is published; waiting for the driver's echo
    ACTIVE = "active"  # the driver echoed the current ID; hints tagged with it are applied
    DONE = "done"  # config reads DONE; hinted pages belong to the guest again


class DeviceHintEvent(enum.Enum):
    START = "publish a new command ID"
    STOP = "publish STOP"
    DONE = "publish DONE"
    RECV_CURRENT_ID = "consume an out-buffer with the current ID"
    RECV_OTHER_ID = "consume an out-buffer with another ID"
    RECV_STOP = "consume an out-buffer with STOP"


DS, DE = DeviceHintState, DeviceHintEvent
DEVICE_TRANSITIONS: dict[tuple[DeviceHintState, DeviceHintEvent], DeviceHintState] = {
    **{(s, DE.START): DS.REQUESTED for s in DS},
    **{(s, DE.STOP): DS.STOP for s in DS},
    **{(s, DE.DONE): DS.DONE for s in DS},
    (DS.REQUESTED, DE.RECV_CURRENT_ID): DS.ACTIVE,
    # QEMU: the driver's STOP ends an active round from the device side too (AMB-FPH-ROUND-END).
    (DS.ACTIVE, DE.RECV_STOP): DS.STOP,
    # Everything else the driver sends leaves the device state alone (stale echoes, late STOPs).
    **{(s, DE.RECV_OTHER_ID): s for s in DS},
    **{(s, DE.RECV_STOP): s for s in (DS.STOP, DS.REQUESTED, DS.DONE)},
    **{(s, DE.RECV_CURRENT_ID): s for s in (DS.STOP, DS.DONE)},
}


class DriverHintState(enum.Enum):
    IDLE = "idle"  # no round; nothing held, or pages held until DONE
    HINTING = "hinting"  # echoed the current ID; supplying pages
    STOPPED = "stopped"  # sent STOP for the last ID; holding its pages until DONE


class DriverHintEvent(enum.Enum):
    SEND_ID = "send the command ID read from config"
    SEND_HINT = "send a page block"
    SEND_STOP = "send STOP"
    SEE_DONE = "read DONE: release every hinted page"


RS, RE = DriverHintState, DriverHintEvent
DRIVER_TRANSITIONS: dict[tuple[DriverHintState, DriverHintEvent], DriverHintState] = {
    (RS.IDLE, RE.SEND_ID): RS.HINTING,
    (RS.STOPPED, RE.SEND_ID): RS.HINTING,
    (RS.HINTING, RE.SEND_HINT): RS.HINTING,
    (RS.HINTING, RE.SEND_STOP): RS.STOPPED,
    **{(s, RE.SEE_DONE): RS.IDLE for s in (RS.IDLE, RS.STOPPED)},
}


def hinted_pages(chain: Chain, n_pages: int) -> int:
    """The whole 4 KiB pages a chain's writable buffers cover (AMB-FPH-ALIGNMENT), as a mask."""
    mask = 0
    for b in chain.writable:
        first = -(-b.addr // BALLOON_PAGE_SIZE)
        end = (b.addr + b.len) // BALLOON_PAGE_SIZE
        end = min(end, n_pages)
        if end > first:
            mask |= range_mask(first, end - first)
    return mask


class FreePageHintDevice(Sticky):
    """The reference device's side of hinting: publishes IDs, consumes free_page_vq, applies hints.

    ``apply`` receives the page mask of every accepted hint (the host clears them from its
    to-send bitmap, or discards them, per its policy). ``accept_stale`` turns off the tag check:
    the unsafe ``apply_stale_hints`` host policy.
    """

    def __init__(self, config: BalloonConfigSpace, vq: SplitQueueDevice, n_pages: int,
                 apply: Callable[[int], None], *, first_id: int = 2, accept_stale: bool = False) -> None:
        self.config, self.vq, self.n_pages, self.apply = config, vq, n_pages, apply
        self.state = DS.STOP
        self.cmd_id = VIRTIO_BALLOON_CMD_ID_STOP
        self.first_id = max(first_id, 2)
        self._next_id = self.first_id
        self.issued: set[int] = set()  # every ID published since reset (monotonic, never reused)
        self.tag: int | None = None  # the tagging rule: last ID out-buffer consumed
        self.echoed: set[int] = set()  # IDs the driver has echoed (BAL-FPH-DRV-3)
        self.accept_stale = accept_stale
        self.applied_pages = 0
        self.received_pages = 0  # pages in every hint buffer, applied or not (the driver holds them)
        self.ignored_hints = 0
        self.config_notifications = 0
        # What the driver chose where the spec is silent (observations, not violations):
        self.part_page_hints = 0  # hint buffers not on 4 KiB boundaries (AMB-FPH-ALIGNMENT, PROP-FPH-8)
        self.whole_page_hints = 0
        self.device_ended_rounds = 0  # rounds the device ended (new ID, STOP, DONE) while the driver hinted
        self.stops_after_device_end = 0  # ... that the driver closed with a STOP buffer (PROP-FPH-7)
        self.stop_owed = False

    def _go(self, event: DeviceHintEvent) -> None:
        if self.state is DS.ACTIVE and event in (DE.START, DE.STOP, DE.DONE) and not self.stop_owed:
            self.stop_owed = True  # the device ended a round the driver was hinting in
            self.device_ended_rounds += 1
        self.state = DEVICE_TRANSITIONS[self.state, event]

    def _publish(self, value: int) -> None:
        if self.config.device_set(_CMD_ID_FIELD, value):
            self.config_notifications += 1  # NOTIFY-DEV-D1 (AMB-FPH-CONFIG-NOTIFY)

    # -- host-driven ---------------------------------------------------------------------------------
    def next_command_id(self) -> int:
        """The ID :meth:`start` publishes: one never issued since reset (BAL-FPH-DEV-2, AMB-FPH-ID-REUSE).

        Override point: a device with its own ID allocator.
        """
        cid = self._next_id
        for _ in range(1 << 32):
            if cid not in self.issued:
                break
            cid = cid + 1 if cid < 0xFFFFFFFF else self.first_id
        else:  # pragma: no cover - 2^32 IDs outstanding
            raise LocalSpecViolation("BAL-FPH-DEV-2", "no command ID is free")
        self._next_id = cid + 1 if cid < 0xFFFFFFFF else self.first_id
        return cid

    @guarded
    def start(self) -> int:
        """Publish :meth:`next_command_id` and wait for the driver's echo."""
        cid = self.next_command_id()
        self.cmd_id = cid
        self.issued.add(cid)
        self._go(DE.START)
        self._publish(cid)
        return cid

    @guarded
    def stop(self) -> None:
        """BAL-FPH-DEV-1: STOP whenever hints cannot be used (before every bitmap sync)."""
        self.cmd_id = VIRTIO_BALLOON_CMD_ID_STOP
        self._go(DE.STOP)
        self._publish(VIRTIO_BALLOON_CMD_ID_STOP)

    @guarded
    def done(self) -> None:
        """BAL-FPH-DEV-6: the device no longer needs the hinted pages."""
        self.cmd_id = VIRTIO_BALLOON_CMD_ID_DONE
        self._go(DE.DONE)
        self._publish(VIRTIO_BALLOON_CMD_ID_DONE)

    # -- queue-driven ----------------------------------------------------------------------------------
    @guarded
    def process(self) -> int:
        """Consume every available chain; returns how many. Hints are applied or ignored here."""
        n = 0
        while (chain := self.vq.pop()) is not None:
            self._handle_untrusted(chain)
            self.vq.add_used(chain.head, 0)  # AMB-FPH-USED-LEN
            n += 1
        return n

    def _handle_untrusted(self, chain: Chain) -> None:
        if chain.readable:
            if chain.readable_len and chain.readable_len % BALLOON_PAGE_SIZE == 0:
                raise PeerSpecViolation("BAL-FPH-D3", f"out-buffer of {chain.readable_len} bytes (whole pages) on "
                                        "free_page_vq: hints are device-writable buffers")
            if chain.readable_len != CMD_ID_SIZE:
                raise PeerSpecViolation("BAL-FPH-DRV-1", f"out-buffer of {chain.readable_len} bytes on free_page_vq")
            (cid,) = _LE32.unpack(chain.read_all(self.vq.mem))
            self._recv_id(cid)
        if chain.writable:
            if self.tag is None:
                raise PeerSpecViolation("BAL-FPH-DRV-2", "hint buffer not preceded by a command ID out-buffer")
            pages = hinted_pages(chain, self.n_pages)
            self.received_pages += pages.bit_count()
            if all(b.addr % BALLOON_PAGE_SIZE == 0 and b.len % BALLOON_PAGE_SIZE == 0 for b in chain.writable):
                self.whole_page_hints += 1
            else:
                self.part_page_hints += 1
            if self.accept_stale or (self.state is DS.ACTIVE and self.tag == self.cmd_id):
                self.applied_pages += pages.bit_count()
                self.apply(pages)
            else:
                self.ignored_hints += 1  # BAL-FPH-DEV-3

    def _recv_id(self, cid: int) -> None:
        if self.stop_owed:
            self.stop_owed = False
            self.stops_after_device_end += cid == VIRTIO_BALLOON_CMD_ID_STOP
        if cid == VIRTIO_BALLOON_CMD_ID_STOP:
            # BAL-FPH-DEV-2 would now allow reusing every earlier ID; the model never does, since an
            # echo of an older ID can sit in the ring behind this STOP (AMB-FPH-ID-REUSE).
            self.tag = None
            ended_round = self.state is DS.ACTIVE
            self._go(DE.RECV_STOP)
            if ended_round:
                self.cmd_id = VIRTIO_BALLOON_CMD_ID_STOP
                self._publish(VIRTIO_BALLOON_CMD_ID_STOP)
            return
        if cid == VIRTIO_BALLOON_CMD_ID_DONE:
            raise PeerSpecViolation("BAL-FPH-D2", "the driver echoed DONE, which the device never asks it to")
        if cid in self.echoed:
            raise PeerSpecViolation("BAL-FPH-DRV-3", f"second out-buffer with command ID {cid}")
        if cid not in self.issued:
            raise PeerSpecViolation("BAL-FPH-D2", f"echoed command ID {cid} was never published")
        self.echoed.add(cid)
        self.tag = cid
        self._go(DE.RECV_CURRENT_ID if cid == self.cmd_id else DE.RECV_OTHER_ID)


class FreePageHintDriver(Sticky):
    """The reference driver's side of hinting, after Linux's ``report_free_page_func``.

    Page blocks of 2^``order`` pages are taken from the guest and held until DONE. The STOP buffer is
    separate from the ID buffers (as Linux v29 made it), and an ID buffer is rewritten only after the
    device has returned it: a single reused ID buffer lets a slow device read the *next* ID twice,
    which looks like a double echo (BAL-FPH-DRV-3). ``id_area`` holds ``id_slots`` 4-byte buffers.
    """

    #: Bytes in each command ID or STOP out-buffer (BAL-FPH-DRV-1). Override point.
    out_len = CMD_ID_SIZE
    #: Hints go out as device-writable buffers (BAL-FPH-D3). Override point.
    hints_writable = True

    def __init__(self, read_cmd_id: Callable[[], int], vq: SplitQueueDriver, guest: GuestPages, *,
                 id_area: int, stop_buf: int, id_slots: int = 8, order: int = 0, min_order: int | None = None,
                 kick: Callable[[], None] | None = None) -> None:
        self.read_cmd_id, self.vq, self.guest, self.kick = read_cmd_id, vq, guest, kick
        self.stop_buf, self.order = stop_buf, order
        # Blocks of 2^order pages first; then, once none is free, smaller ones down to 2^min_order (the
        # free memory left in partly used blocks). Linux hints only 2^(MAX_ORDER-1): min_order = order.
        self.min_order = order if min_order is None else min_order
        self._id_free = [id_area + CMD_ID_SIZE * i for i in range(id_slots)]
        self._pending: list[tuple[int, object]] = []  # ID/STOP buffers waiting for ring space, in order
        self.state = RS.IDLE
        self.served: int | None = None  # cmd_id_active: never served twice (BAL-FPH-DRV-3)
        self.stops_returned = 0  # STOP buffers the device has used
        self.latest: int | None = None  # the command ID read at the last configuration change
        self.sent_under: dict[int, int] = {}  # command ID -> mask of pages hinted after echoing it
        vq.mem.write_u32(stop_buf, VIRTIO_BALLOON_CMD_ID_STOP)

    def _go(self, event: DriverHintEvent) -> None:
        try:
            self.state = DRIVER_TRANSITIONS[self.state, event]
        except KeyError:
            raise LocalSpecViolation("BAL-FPH-DRV-2", f"cannot {event.value} in state {self.state.value}") from None

    def _send(self, buf: int, token: object = None) -> None:
        self._pending.append((buf, token))
        self._flush()

    def _flush(self) -> None:
        """Add queued ID/STOP buffers while the ring has room (order kept; hints wait behind them)."""
        sent = False
        while self._pending and self.vq.num_free:  # a free descriptor implies a free ring slot
            buf, token = self._pending.pop(0)
            self.vq.add([(buf, self.out_len)], token=token)
            sent = True
        if sent:
            self._publish()

    def _publish(self) -> None:
        if self.vq.publish() and self.kick is not None:
            self.kick()

    def _reap(self) -> None:
        for used in self.vq.harvest():
            if isinstance(used.token, tuple) and used.token[0] == "id":
                self._id_free.append(used.token[1])
            elif used.token == "stop":
                self.stops_returned += 1
        self._flush()

    @guarded
    def on_config_change(self) -> None:
        """Re-read free_page_hint_cmd_id (Linux does this from the config interrupt's work item)."""
        cid = self.latest = self.read_cmd_id()
        if cid == VIRTIO_BALLOON_CMD_ID_DONE:
            if self.state is RS.HINTING:
                self._stop()
            self.release_after_done(self.guest.hinted)
            self._go(RE.SEE_DONE)
        elif cid == VIRTIO_BALLOON_CMD_ID_STOP:
            if self.state is RS.HINTING:
                self._stop()  # BAL-FPH-DRV-5
        elif cid != self.served:
            if self.state is RS.HINTING:
                self._stop()
            self._reap()
            if not self.send_command_id(cid):
                return  # every ID buffer is still with the device; retry on the next config change
            self.served = cid
            self._go(RE.SEND_ID)

    def send_command_id(self, cid: int) -> bool:
        """Queue an out-buffer holding ``cid`` (BAL-FPH-DRV-2, once per ID); False if no ID buffer is free.

        Override point: a driver that echoes differently.
        """
        if not self._id_free:
            return False
        buf = self._id_free.pop()
        self.vq.mem.write_u32(buf, cid)
        self._send(buf, ("id", buf))
        return True

    def send_stop(self) -> None:
        """Queue the STOP out-buffer (BAL-FPH-DRV-6). Override point: a driver that stops silently."""
        self._send(self.stop_buf, "stop")

    def release_after_done(self, pages: int) -> None:
        """DONE read: give the hinted pages back to the guest (BAL-FPH-DRV-10).

        Override point: a driver that holds on to them.
        """
        self.guest.release_hinted(pages)

    def _stop(self) -> None:
        self._reap()
        self.send_stop()
        self._go(RE.SEND_STOP)

    @guarded
    def shrink(self, count: int) -> int:
        """The guest needs memory before DONE (Linux's shrinker): give up to ``count`` hinted pages back,
        which BAL-FPH-DRV-7 allows, each written with zeros first (BAL-FPH-DRV-9): the device may have
        discarded it. Returns how many."""
        pages = bits(self.guest.hinted)[:max(count, 0)]
        for p in pages:
            self.vq.mem.fill(self.guest.page_addr(p), BALLOON_PAGE_SIZE, 0)
        self.guest.release_hinted(sum(1 << p for p in pages))
        return len(pages)

    @guarded
    def hint_one(self) -> bool:
        """Supply one page block if a round is active; STOP when none is left. Returns True if sent."""
        if self.state is not RS.HINTING:
            return False
        if self.latest != self.served:  # Linux reads the field only on a config change (AMB-FPH-ACTIVE-VALUE)
            return False  # a config change is pending; on_config_change will end the round
        self._reap()
        if self._pending:
            return False  # an ID or STOP is still waiting for ring space; hints go after it
        order, start = self.order, None
        while order >= self.min_order and (start := self.guest.take_free_block(order)) is None:
            order -= 1
        if start is None:
            self._stop()
            return False
        mask = range_mask(start, 1 << order)
        if self.vq.num_free < 2:  # keep a slot for STOP, as Linux keeps one for the ID
            self.guest.release_hinted(mask)
            return False
        self._add_hint(start, order, mask)
        assert self.served is not None
        self.sent_under[self.served] = self.sent_under.get(self.served, 0) | mask
        self._publish()
        self._go(RE.SEND_HINT)
        return True

    def _add_hint(self, start: int, order: int, mask: int) -> None:
        """Put the block ``[start, start + 2**order)`` (pages ``mask``) on free_page_vq as one hint buffer."""
        side = "writable" if self.hints_writable else "readable"
        self.vq.add(**{side: [(self.guest.page_addr(start), BALLOON_PAGE_SIZE << order)]})


class HintingDevice(Sticky):
    """Part of :class:`~refmodel.balloon.device.BalloonDevice`: the host's hinting controls around a
    :class:`FreePageHintDevice`, made at DRIVER_OK when free_page_vq is enabled."""

    hint: FreePageHintDevice | None
    hinted: int  # pages the host may skip: hints accepted since the last hint_start
    if TYPE_CHECKING:  # provided by BalloonDevice
        config: BalloonConfigSpace
        queues: dict[str, SplitQueueDevice]
        n_pages: int
        first_cmd_id: int

        def _config_changed(self, before: int, field: str) -> None: ...
        def signal_used(self, name: str) -> None: ...

    def _reset_hinting(self) -> None:
        self.hint = None
        self.hinted = 0

    def _start_hinting(self) -> None:
        if "free_page_vq" in self.queues:
            self.hint = self.make_hint_device(self.config, self.queues["free_page_vq"], self.n_pages,
                                              self.apply_hint, first_id=self.first_cmd_id)

    def make_hint_device(self, *args: Any, **kwargs: Any) -> FreePageHintDevice:
        """The hinting side, given :class:`FreePageHintDevice`'s arguments. Override point."""
        return FreePageHintDevice(*args, **kwargs)

    def apply_hint(self, pages: int) -> None:
        """The host's policy for accepted hints: skip those pages in migration (see :meth:`hinted_pages`)."""
        self.hinted |= pages

    def _hint_side(self) -> FreePageHintDevice:
        if self.hint is None:
            raise NotNegotiated("VIRTIO_BALLOON_F_FREE_PAGE_HINT", "free page hinting (with DRIVER_OK)")
        return self.hint

    @guarded
    def hint_start(self) -> int:
        """Migration's AFTER_BITMAP_SYNC: forget earlier hints, publish a fresh command ID."""
        hint, before = self._hint_side(), self.config.generation
        self.hinted = 0
        cid = hint.start()
        self._config_changed(before, _CMD_ID_FIELD)
        return cid

    @guarded
    def hint_stop(self) -> None:
        hint, before = self._hint_side(), self.config.generation
        hint.stop()
        self._config_changed(before, _CMD_ID_FIELD)

    @guarded
    def hint_done(self) -> None:
        hint, before = self._hint_side(), self.config.generation
        hint.done()
        self._config_changed(before, _CMD_ID_FIELD)

    def hinted_pages(self) -> int:
        """Pages the host would skip in migration: hints accepted since the last hint_start."""
        return self.hinted

    def _serve_hints(self) -> None:
        if self.hint is None:
            return
        before = self.config.generation
        self.hint.process()
        # A driver STOP ending the round publishes STOP (AMB-FPH-ROUND-END).
        self.queues["free_page_vq"].set_avail_notifications(True)
        self._config_changed(before, _CMD_ID_FIELD)
        self.signal_used("free_page_vq")


class HintingDriver(Sticky):
    """Part of :class:`~refmodel.balloon.driver.BalloonDriver`: a :class:`FreePageHintDriver` on
    free_page_vq, told of configuration changes and given ``hint_burst`` blocks per run."""

    hint: FreePageHintDriver | None
    hint_burst: int
    hint_order: int  # hint blocks of 2^order pages (Linux: MAX_ORDER - 1, 4 MiB)
    hint_min_order: int | None  # then smaller blocks, down to this order (Linux: none)
    if TYPE_CHECKING:  # provided by BalloonDriver
        dev: Any
        os: GuestOS | None
        vqs: dict[str, SplitQueueDriver]
        index_of: dict[str, int]

        def _scratch_page(self) -> int: ...

    def _setup_hinting(self) -> None:
        if "free_page_vq" not in self.vqs:
            return
        assert self.os is not None
        area = self._scratch_page() * BALLOON_PAGE_SIZE
        index = self.index_of["free_page_vq"]
        self.hint = self.make_hint_driver(lambda: self.dev.read_config(CFG_CMD_ID, 4),
                                          self.vqs["free_page_vq"], self.os.pages, id_area=area,
                                          stop_buf=area + 64, order=self.hint_order, min_order=self.hint_min_order,
                                          kick=lambda: self.dev.notify(index))

    def make_hint_driver(self, *args: Any, **kwargs: Any) -> FreePageHintDriver:
        """The hinting side, given :class:`FreePageHintDriver`'s arguments. Override point."""
        return FreePageHintDriver(*args, **kwargs)

    @guarded
    def shrink(self, count: int) -> int:
        """The guest reclaims memory: up to ``count`` hinted pages go back before DONE, initialized
        (:meth:`FreePageHintDriver.shrink`). Returns how many."""
        if self.hint is None:
            return 0
        return self.hint.shrink(count)

    def _run_hinting(self, config_changed: bool) -> None:
        if self.hint is None:
            return
        if config_changed:
            self.hint.on_config_change()
        for _ in range(self.hint_burst):
            if not self.hint.hint_one():
                break
