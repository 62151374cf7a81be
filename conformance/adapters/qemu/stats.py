"""QEMU's balloon statistics as the suite asks for them: QEMU's polling timer (guest-stats-polling-interval)
and its guest-stats property, read once QEMU has parsed the driver's latest statsq buffer. A mixin of
:class:`conformance.adapters.qemu.device.QemuBalloon`, which provides the session state it reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.split.layout import AVAIL_IDX
from refmodel.virtio.virtq import QueueAddresses

from conformance.adapters.qemu.process import QemuError, QemuProcess

BALLOON_PATH = "/machine/peripheral/balloon0"
STATSQ = 2  # QEMU always offers STATS_VQ
UNSET_STAT = (1 << 64) - 1
#: QEMU's guest-stats names, by tag (include/standard-headers/linux/virtio_balloon.h order).
QEMU_STAT_NAMES = ("stat-swap-in", "stat-swap-out", "stat-major-faults", "stat-minor-faults", "stat-free-memory",
                   "stat-total-memory", "stat-available-memory", "stat-disk-caches", "stat-htlb-pgalloc",
                   "stat-htlb-pgfail")


class QemuStatistics:
    """request_stats and host_stats over QMP."""

    q: QemuProcess
    mem: GuestMemory
    packed: bool
    _enabled: dict[int, QueueAddresses]
    _settled: bool
    _stats_cycled: bool
    _stats_update: int | None
    _used_state: Callable[[int], int | bytes]
    _wait: Callable[..., Any]
    queue_status: Callable[[int], dict[str, Any]]

    def _set_stats_polling(self, seconds: int) -> None:
        self.q.qmp.execute("qom-set", path=BALLOON_PATH, property="guest-stats-polling-interval", value=seconds)

    def _guest_stats(self) -> dict[str, Any]:
        return self.q.qmp.execute("qom-get", path=BALLOON_PATH, property="guest-stats") or {}

    def request_stats(self) -> bool:
        """Start QEMU's polling timer and wait for the held stats buffer to come back on statsq (index 2:
        QEMU always offers STATS_VQ). False if none was held. Setting the interval (1 s, QEMU's least)
        fires the timer at once (balloon_stats_change_timer(s, 0)), so a request costs milliseconds; the
        timer is stopped again before it fires a second time."""
        self._stats_cycled = False
        statsq = self._enabled.get(STATSQ)
        if statsq is None:
            return False
        self._stats_update = self._guest_stats().get("last-update", 0)
        before = self._used_state(STATSQ)
        self._set_stats_polling(1)
        try:
            self._wait("the stats buffer back from the polling timer",
                       lambda: self._used_state(STATSQ) != before, seconds=3.0)
        except QemuError:
            return False
        finally:
            self._set_stats_polling(0)
            self._settled = False
        self._stats_cycled = True
        return True

    def _statsq_read(self) -> bool:
        """QEMU popped (and so parsed: one handler, under its big lock) every buffer made available on
        statsq. True too on a build without x-query-virtio-queue-status (then last-update decides)."""
        addrs = self._enabled.get(STATSQ)
        if addrs is None or self.packed:
            return True
        st = self.queue_status(STATSQ)
        return not st or st.get("last-avail-idx") == self.mem.read_u16(addrs.avail + AVAIL_IDX)

    def host_stats(self) -> dict[int, int]:
        """guest-stats once QEMU has read the driver's latest buffer. A tag the driver never sent reads
        all ones (QEMU's reset value)."""
        try:
            if self._stats_cycled and not self.queue_status(STATSQ):  # no queue status: wait for last-update
                got = self._wait("fresh guest-stats", lambda: (g := self._guest_stats()).get("last-update", 0)
                                 != self._stats_update and g, seconds=2.0)
            else:
                self._wait("QEMU to read the stats buffer", self._statsq_read, seconds=2.0)
                got = self._guest_stats()
        except QemuError:
            got = self._guest_stats()
        stats = got.get("stats", {})
        return {tag: int(stats[name]) for tag, name in enumerate(QEMU_STAT_NAMES)
                if name in stats and int(stats[name]) not in (-1, UNSET_STAT)}
