"""The reference device as the driver machine runs it: the strict peer, plus what the checks of the driver
need to see of its traffic. Only public calls and override points of :class:`BalloonDevice` are used.

* Status (§2.4, §3.1.1): a reset is complete once status reads 0 (RESET-DRV-1); status is re-read after
  FEATURES_OK before any setup, and a device that cleared FEATURES_OK is not set up (INIT-DRV-4); nothing
  is set up after FAILED (INIT-DRV-6). With ``refuse_features_ok`` the next FEATURES_OK is refused: the
  device SHOULD accept a valid subset (FEAT-DEV-2), so a device that cannot support it may clear the bit.
* Queues (§2.7): used flags read 0 when a queue is enabled (SPLIT-DRV-18; the machine fills guest RAM with
  stale bytes before boot, so a driver that leaves them shows); no chain has needless descriptors
  (SPLIT-DRV-3); every free_page_vq chain is logged for the hinting checks.
* Hints (§5.5.6.5): the pages the driver still holds when their hint is applied are overwritten, as
  BAL-FPH-DEV-4 allows, so a driver that releases one before DONE without initializing it shows
  (BAL-FPH-DRV-9).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.hinting import CMD_ID_SIZE, DeviceHintState, hinted_pages
from refmodel.errors import PeerSpecViolation, guarded
from refmodel.system.guest import bits
from refmodel.virtio.constants import DeviceStatus
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.layout import DESC_FLAGS, PVIRTQ_DESC_SIZE
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.layout import AVAIL_IDX, USED_FLAGS
from refmodel.virtio.status import StatusEvent, StatusState
from refmodel.virtio.virtq import Chain
from refmodel.virtio.rings import PACKED

#: What guest RAM holds before the driver runs: a driver initializes what it uses (SPLIT-DRV-18).
STALE = 0xEE
#: Whatever the host leaves in a hinted page it discarded (BAL-FPH-DEV-4); never a driver's fill.
DISCARDED = (0xD1, 0xD2)


def needless(chain: Chain) -> str | None:
    """Why ``chain`` uses more descriptors than its buffer needs (SPLIT-DRV-3), or None. The spec gives no
    number, so the suite counts only what no layout needs: a zero-length descriptor beside others, or one
    that continues its predecessor's bytes inside the same 4 KiB page (a page-by-page scatter list, which
    joins at page boundaries, is fine)."""
    descs = (*chain.readable, *chain.writable)
    if len(descs) > 1 and any(b.len == 0 for b in descs):
        return f"a zero-length descriptor among {len(descs)}"
    for group in (chain.readable, chain.writable):
        for prev, b in zip(group, group[1:]):
            if b.addr == prev.addr + prev.len and b.addr % BALLOON_PAGE_SIZE:
                return (f"[{prev.addr:#x}, +{prev.len}) and [{b.addr:#x}, +{b.len}) are one buffer inside a "
                        "page, split over two descriptors")
    return None


@attrs.frozen
class HintChain:
    """One chain the device took from free_page_vq, in the order the driver made them available."""

    ordinal: int  # chains on free_page_vq made available before it (since the queue was enabled)
    cmd: int | None  # the value of a 4-byte out-buffer (a command ID or STOP), else None
    hint: bool  # it has in-buffers: a hint
    pages: int  # the whole pages they cover, as a mask
    state: DeviceHintState | None  # the device's hinting state just before it handled the chain
    cmd_id: int | None  # ... and the command ID it published then


class _Watched:
    """What both rings' watched queues add: judge each chain's descriptors, count (and log) what is popped."""

    name = ""
    popped = 0
    log: list[HintChain] | None = None
    hint_state: Callable[[], tuple[DeviceHintState, int] | None] = staticmethod(lambda: None)
    judge_needless = True  # SPLIT-DRV-3 (a split-ring requirement)
    mem: Any

    @guarded
    def pop(self) -> Chain | None:
        chain = super().pop()  # type: ignore[misc]
        if chain is None:
            return None
        if self.judge_needless and (why := needless(chain)):
            raise PeerSpecViolation("SPLIT-DRV-3", f"{self.name} head {chain.head}: {why}")
        if self.log is not None:
            cmd = None
            if chain.readable_len == CMD_ID_SIZE and not chain.writable:
                cmd = int.from_bytes(chain.read_all(self.mem), "little")
            state = self.hint_state()
            self.log.append(HintChain(self.popped, cmd, bool(chain.writable),
                                      hinted_pages(chain, self.mem.end // BALLOON_PAGE_SIZE),
                                      state[0] if state else None, state[1] if state else None))
        self.popped += 1
        return chain


class WatchedQueue(_Watched, SplitQueueDevice):
    """A watched split queue."""

    def made_available(self) -> int:
        """Chains the driver has made available since the queue was enabled (popped or not)."""
        return self.popped + (self.mem.read_u16(self.addrs.avail + AVAIL_IDX) - self.last_avail_idx) % 0x10000


class WatchedPackedQueue(_Watched, PackedQueueDevice):
    """A watched packed queue."""

    judge_needless = False

    def made_available(self) -> int:
        """Lists the driver has made available since the queue was enabled (popped or not)."""
        pos, n = self.next_avail, self.popped
        try:
            while (got := self.walk_untrusted(pos)) is not None:
                pos, n = pos + got[1], n + 1
        except PeerSpecViolation:
            pass  # pop names it
        return n


class WatchedDevice(BalloonDevice):
    """:class:`BalloonDevice` with the observations above. ``still_hinted`` names the pages the guest's
    driver holds for hinting now (the machine's view of the guest); ``watch_status`` is off when the
    transport replays status rather than carrying it (vhost-user)."""

    def __init__(self, *args: Any, still_hinted: Callable[[], int] | None = None, watch_status: bool = True,
                 **kwargs: Any) -> None:
        self.still_hinted, self.watch_status = still_hinted, watch_status
        self.refuse_features_ok = False
        self.refused = 0  # FEATURES_OK writes refused
        self.resets = 0  # status writes of 0
        self.reset_after_failed = False  # a reset followed FAILED (STATUS-DRV-3's way back)
        self._reset_unread = False  # 0 written, status not yet read as 0 (RESET-DRV-1)
        self._features_ok_unread = False  # FEATURES_OK written, status not yet re-read (INIT-DRV-4)
        super().__init__(*args, **kwargs)
        self._forget()

    def _forget(self) -> None:
        """What a reset clears of the observations."""
        self.hint_log: list[HintChain] = []
        self.discarded = 0  # hinted pages overwritten while the driver held them

    # -- status ---------------------------------------------------------------------------------------
    def read_status(self) -> int:
        value = super().read_status()
        if value == 0:
            self._reset_unread = False
        self._features_ok_unread = False
        return value

    def _judge(self, call: str, setup: bool = False) -> None:
        """The driver makes transport call ``call`` (``setup``: one that sets the device up): may it now?"""
        if not self.watch_status:
            return
        if self._reset_unread:
            raise PeerSpecViolation("RESET-DRV-1", f"{call} after writing 0 to device status, before status "
                                    "read 0")
        if not setup:
            return
        state = self.status.state
        if state is StatusState.FEATURES_OK and self._features_ok_unread:
            raise PeerSpecViolation("INIT-DRV-4", f"{call} before re-reading device status after setting "
                                    "FEATURES_OK")
        if state is StatusState.FEATURES_REJECTED:
            raise PeerSpecViolation("INIT-DRV-4", f"{call} although the device cleared FEATURES_OK")
        if state is StatusState.FAILED and call != "DRIVER_OK":  # a status write there is STATUS-DRV-3's
            raise PeerSpecViolation("INIT-DRV-6", f"{call} after the driver set FAILED")

    @guarded
    def write_status(self, value: int) -> None:
        before = self.status.state
        if value == 0:
            self.resets += 1
            self.reset_after_failed |= before is StatusState.FAILED
            super().write_status(value)
            self._forget()
            self._reset_unread = self.watch_status
            return
        self._judge(f"status write {value:#04x}")
        if self.watch_status and before is StatusState.FAILED and value != self.status.status:
            raise PeerSpecViolation("STATUS-DRV-3", f"status write {value:#04x} to a device the driver set "
                                    "FAILED, without a reset first")
        if self.watch_status and before is StatusState.FEATURES_REJECTED \
                and value & ~(self.status.status | DeviceStatus.FAILED):
            raise PeerSpecViolation("INIT-DRV-4", f"status write {value:#04x} although the device cleared "
                                    "FEATURES_OK")
        if value & DeviceStatus.DRIVER_OK and not self.status.status & DeviceStatus.DRIVER_OK:
            self._judge("DRIVER_OK", setup=True)  # the last setup step
        refuse = self.refuse_features_ok and before is StatusState.DRIVER_LOADED
        if refuse and value & DeviceStatus.FEATURES_OK:
            events = self.status.driver_write(value)
            if StatusEvent.SET_FEATURES_OK in events:
                self.status.process(StatusEvent.REJECT_FEATURES)
                self.refuse_features_ok, self.refused = False, self.refused + 1
        else:
            super().write_status(value)
        if self.status.state in (StatusState.FEATURES_OK, StatusState.FEATURES_REJECTED) and before is not \
                self.status.state:
            self._features_ok_unread = self.watch_status

    # -- setup calls (guarded, so a breach is latched even if the driver swallows the exception) -----------
    @guarded
    def read_device_features(self) -> int:
        self._judge("read_device_features")
        return super().read_device_features()

    @guarded
    def write_driver_features(self, value: int) -> None:
        self._judge("write_driver_features")
        super().write_driver_features(value)

    @guarded
    def queue_max_size(self, index: int) -> int:
        self._judge("queue_max_size", setup=True)
        return super().queue_max_size(index)

    @guarded
    def enable_queue(self, index: int, size: int, addrs: Any) -> None:
        self._judge("enable_queue", setup=True)
        if self.ring is PACKED:
            self._check_zeroed(index, size, addrs)
        else:
            flags = self.mem.read_u16(addrs.used + USED_FLAGS) if self.mem.contains(addrs.used, 2) else 0
            if flags:
                raise PeerSpecViolation("SPLIT-DRV-18", f"queue {index}: used flags read {flags:#06x} when the "
                                        "driver enabled it")
        super().enable_queue(index, size, addrs)

    def _check_zeroed(self, index: int, size: int, addrs: Any) -> None:
        """PACKED-DRV-D12: the descriptors' flags read 0 when the queue is enabled (guest RAM holds stale bytes
        before the driver runs, so one left as it was looks available or used)."""
        if not isinstance(size, int) or not 0 < size <= 32768 or not self.mem.contains(addrs.desc, size * 16):
            return  # enable_queue names it
        for i in range(size):
            flags = self.mem.read_u16(addrs.desc + PVIRTQ_DESC_SIZE * i + DESC_FLAGS)
            if flags:
                raise PeerSpecViolation("PACKED-DRV-D12", f"queue {index}: descriptor {i} has flags {flags:#06x} "
                                        "when the driver enabled the queue: the ring is not zeroed")

    @guarded
    def read_config(self, offset: int, size: int) -> int:
        self._judge("read_config")
        return super().read_config(offset, size)

    @guarded
    def write_config(self, offset: int, size: int, value: int) -> None:
        self._judge("write_config", setup=True)
        super().write_config(offset, size, value)

    @guarded
    def notify(self, index: int) -> None:
        self._judge("notify", setup=True)
        super().notify(index)

    def make_queue(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.ring is PACKED:
            kwargs.setdefault("check_driver_writes", True)  # as BalloonDevice.make_queue
            q: Any = WatchedPackedQueue(*args, **kwargs)
        else:
            q = WatchedQueue(*args, **kwargs)
        q.name = name
        if name == "free_page_vq":
            q.log = self.hint_log
            q.hint_state = lambda: (self.hint.state, self.hint.cmd_id) if self.hint is not None else None
        return q

    # -- hints -----------------------------------------------------------------------------------------------
    def apply_hint(self, pages: int) -> None:
        super().apply_hint(pages)
        held = pages & self.still_hinted() if self.still_hinted is not None else 0
        fill = discard_fill(self.config.get("poison_val"))
        for p in bits(held):
            self.mem.write(p * BALLOON_PAGE_SIZE, fill)
        self.discarded |= held


def discard_fill(poison_val: int) -> bytes:
    """A page of :data:`DISCARDED` bytes, unlike ``poison_val`` (a driver may initialize with it)."""
    byte = next(b for b in DISCARDED if poison_val != int.from_bytes(bytes([b]) * 4, "little"))
    return bytes([byte]) * BALLOON_PAGE_SIZE
