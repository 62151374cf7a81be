"""Memory statistics (§5.5.6.3): one buffer of 10-byte entries on statsq, returned when the host asks.

:class:`StatsDevice` and :class:`StatsDriver` are parts of the balloon device and driver; each names,
under ``TYPE_CHECKING``, what it uses of the side it is part of.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from refmodel.balloon.constants import BALLOON_PAGE_SIZE, VIRTIO_BALLOON_STAT_SIZE, BalloonStatTag
from refmodel.errors import PeerSpecViolation, Sticky, guarded
from refmodel.virtio.virtq import Chain, UsedBuffer

if TYPE_CHECKING:
    from refmodel.system.guest_os import GuestOS
    from refmodel.virtio.memory import GuestMemory
    from refmodel.virtio.split.device import SplitQueueDevice
    from refmodel.virtio.split.driver import SplitQueueDriver

_STAT = struct.Struct("<HQ")  # le16 tag, le64 val, packed: VIRTIO_BALLOON_STAT_SIZE bytes
KNOWN_STAT_TAGS = frozenset(int(t) for t in BalloonStatTag)
#: The tags the reference driver reports by default.
STATS_TAGS = (BalloonStatTag.VIRTIO_BALLOON_S_SWAP_IN, BalloonStatTag.VIRTIO_BALLOON_S_SWAP_OUT,
              BalloonStatTag.VIRTIO_BALLOON_S_MEMFREE, BalloonStatTag.VIRTIO_BALLOON_S_MEMTOT,
              BalloonStatTag.VIRTIO_BALLOON_S_AVAIL, BalloonStatTag.VIRTIO_BALLOON_S_CACHES)


class StatsDevice(Sticky):
    """Part of :class:`~refmodel.balloon.device.BalloonDevice`: read each stats buffer, hold it until
    the host asks for fresh statistics."""

    stats: dict[int, int]  # the last buffer's known entries
    stats_tags: frozenset[int] | None  # the first buffer's tags: every later buffer has the same
    stats_updates: int
    stats_held: Chain | None
    _stats_requested: bool  # the host asked while no buffer was held: return the next one at once
    if TYPE_CHECKING:  # provided by BalloonDevice
        mem: GuestMemory
        queues: dict[str, SplitQueueDevice]

        def signal_used(self, name: str) -> None: ...

    def _reset_stats(self) -> None:
        self.stats = {}
        self.stats_tags = None
        self.stats_updates = 0
        self.stats_held = None
        self._stats_requested = False

    @guarded
    def request_stats(self) -> bool:
        """Return the held stats buffer so the driver refills it (§5.5.6.3). False if none is held."""
        if self.stats_held is None:
            self._stats_requested = True
            return False
        q = self.queues["statsq"]
        q.add_used(self.stats_held.head, 0)
        self.stats_held = None
        self.signal_used("statsq")
        return True

    def host_stats(self) -> dict[int, int]:
        return dict(self.stats)

    def on_statsq(self, chain: Chain) -> int | None:
        """Read one stats buffer; returns the used length, or None to hold it. Override point."""
        if self.stats_held is not None:
            raise PeerSpecViolation("BAL-ST-DRV-1", "a second statsq buffer while the device holds one")
        n = chain.readable_len
        if chain.writable or n % VIRTIO_BALLOON_STAT_SIZE:
            raise PeerSpecViolation("BAL-ST-DRV-5", f"stats buffer of {n} readable, {chain.writable_len} "
                                    f"writable bytes is not a whole number of 10-byte entries")
        entries = list(_STAT.iter_unpack(chain.read_all(self.mem)))  # one read: not one per entry
        tags = frozenset(t for t, _ in entries)
        if self.stats_tags is not None and tags != self.stats_tags:
            raise PeerSpecViolation("BAL-ST-DRV-8", f"stats tags {sorted(tags)} differ from the first "
                                    f"buffer's {sorted(self.stats_tags)}")
        self.stats_tags = tags
        # BAL-ST-DEV-1 / -2: unknown tags are ignored; order does not matter.
        self.stats = {t: v for t, v in entries if t in KNOWN_STAT_TAGS}
        self.stats_updates += 1
        if self._stats_requested:
            self._stats_requested = False
            return 0
        self.stats_held = chain
        return None  # held until the host asks for fresh statistics


class StatsDriver(Sticky):
    """Part of :class:`~refmodel.balloon.driver.BalloonDriver`: one stats buffer, refilled on each return."""

    stats_tags: tuple[int, ...]
    last_stats: dict[int, int]  # what the last buffer sent
    _stats_buf: int  # guest address of the one buffer
    _stats_in_flight: bool
    if TYPE_CHECKING:  # provided by BalloonDriver
        dev: Any
        os: GuestOS | None
        vqs: dict[str, SplitQueueDriver]
        index_of: dict[str, int]

        def kick(self, name: str) -> None: ...
        def _scratch_page(self) -> int: ...

    def _init_stats(self) -> None:
        self.last_stats = {}
        self._stats_buf = 0
        self._stats_in_flight = False

    def _setup_stats(self) -> None:
        if "statsq" in self.vqs:
            self._stats_buf = self._scratch_page() * BALLOON_PAGE_SIZE
            self.send_stats(kick=False)  # BAL-ST-DRV-2; no notification before DRIVER_OK (INIT-DRV-5)

    def _stats_driver_ok(self) -> None:
        if "statsq" in self.vqs:
            self.dev.notify(self.index_of["statsq"])

    def encode_stats(self, stats: dict[int, int]) -> bytes:
        """The buffer for ``stats``: one entry per tag (BAL-ST-DRV-4, -8). Override point."""
        data = b"".join(_STAT.pack(t, v) for t, v in stats.items())
        assert len(data) == VIRTIO_BALLOON_STAT_SIZE * len(stats)
        return data

    def send_stats(self, kick: bool = True) -> None:
        """Fill the stats buffer and make it available; ``kick`` notifies when due. Override point."""
        assert self.os is not None
        free = self.os.pages.free.bit_count() * BALLOON_PAGE_SIZE
        values = {BalloonStatTag.VIRTIO_BALLOON_S_MEMFREE: free, BalloonStatTag.VIRTIO_BALLOON_S_AVAIL: free,
                  BalloonStatTag.VIRTIO_BALLOON_S_MEMTOT: self.os.n_pages * BALLOON_PAGE_SIZE}
        self.last_stats = {int(t): values.get(t, 0) for t in self.stats_tags}  # type: ignore[call-overload]
        data = self.encode_stats(self.last_stats)
        self.os.mem.write(self._stats_buf, data)
        self.vqs["statsq"].add([(self._stats_buf, len(data))])
        self._stats_in_flight = True  # BAL-ST-DRV-1: one at a time
        if kick:
            self.kick("statsq")
        else:
            self.vqs["statsq"].publish()

    def _used_statsq(self, used: UsedBuffer) -> None:
        self._stats_in_flight = False
        self.send_stats()  # BAL-ST-DRV-3
