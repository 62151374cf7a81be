"""QEMU's virtio-balloon-pci as a device under test: the same calls as the reference device, carried
out as virtio-pci register accesses over qtest and QMP commands.

One QEMU serves a whole run. Each example gets a fresh :class:`QemuBalloon` session: the device is
reset, the balloon target cleared, and guest RAM zeroed, so examples do not leak into each other.
Interrupts come from MSI-X where the balloon has it (QEMU 9.0 on, with ``vectors=8``): vector 0 for
config changes, vector 1 + i for queue i, each writing its data word into guest RAM (as libqos
programs them), so each queue's notifications are told apart (``per_queue_interrupts``). QEMU 7.2's
balloon has no MSI-X: there the ISR register (INTx) says only that some queue signalled.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from typing import Any

import attrs

from refmodel.capabilities import Capability
from refmodel.virtio.transport import Interrupts
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.features import Feature
from refmodel.virtio.packed.layout import desc_ring_size
from refmodel.virtio.split.layout import USED_IDX
from refmodel.virtio.virtq import QueueAddresses

from conformance.adapters.qemu import virtio_pci as vp
from conformance.adapters.qemu.process import DEFAULT_BINARY, DEFAULT_DEVICE, QemuError, QemuProcess
from conformance.adapters.qemu.qmp import QmpError
from conformance.adapters.qemu.stats import BALLOON_PATH, QemuStatistics

FREE_PAGE_VQ = 3  # QEMU always offers STATS_VQ, and compacts by offered features
#: Guest pages the suite must not use: the first MiB (VGA window, BIOS ROM aliases).
RESERVED_PAGES = 256
#: Guest RAM where MSI-X vector v writes its data word (v + 1): page 1, inside the reserved first MiB.
MSI_AREA = 0x1000
#: MSI-X vectors asked for (config + up to 5 queues), where the balloon has a ``vectors`` property.
VECTORS = 8
#: query-migrate states of a migration still under way (then: completed, failed, cancelled).
MIGRATING = ("setup", "active", "pre-switchover", "device", "cancelling")
#: max-bandwidth (bytes/s) of the migrations that make hint rounds: the first pass over guest RAM must not
#: end within an example. When it ends QEMU syncs the dirty bitmap, which publishes STOP and a new ID, or,
#: with nothing dirty, completes the migration (pending 0 completes whatever downtime-limit says): DONE,
#: and the VM paused. At 1 MiB/s a pass over the mostly zero 64 MiB guest took 0.2 s. At 100 B/s, 7.2 sends
#: one page per 100 ms window (max-bandwidth / 10 bytes, at least one page): 27 min a pass; 10.0 and 11.1
#: send about 32 pages a window, so zero pages are sent whole there too (zero-page-detection none): 51 s.
ROUND_BANDWIDTH = 100


class QemuBalloon(QemuStatistics):
    """One session on the shared QEMU."""

    #: Hint rounds come from real migrations: START on migrate, DONE on cancel. QEMU has no way to
    #: publish STOP on request, and which pages it skipped is not observable here (no "hinted_pages").
    #: Statistics come from QEMU's polling timer (guest-stats-polling-interval, 1 s at the least) and its
    #: guest-stats property. Per-queue interrupts where MSI-X vectors were accepted (see QemuFactory).
    capabilities = frozenset({Capability.HINTING, Capability.STATS})
    reserved_pages = RESERVED_PAGES
    #: QEMU signals from its own threads after it moved a used idx: a notification may come a look late.
    interrupts_lag = True

    def __init__(self, qemu: QemuProcess, caps: vp.VirtioCaps) -> None:
        self.q, self.qt, self.caps = qemu, qemu.qtest, caps
        self.msix = caps.msix
        if self.msix is not None:
            self.capabilities = self.capabilities | {Capability.PER_QUEUE_INTERRUPTS}
            self.msix.program(self.qt, MSI_AREA)
        self._stats_cycled = False
        self.mem = qemu.mem
        self._enabled: dict[int, QueueAddresses] = {}
        self._sizes: dict[int, int] = {}
        self.packed = False  # VIRTIO_F_RING_PACKED written with the driver features (needs packed=on)
        #: Nothing QEMU could still be working on since run() last saw the rings still: no notification,
        #: status, queue or config write since, and no round (the iothread polls free_page_vq in one).
        self._settled = False
        self._round = False
        self._irq_config = False
        self._stats_update = None  # guest-stats last-update when statistics were last asked for
        self._set_stats_polling(0)  # no timer left running from an earlier example
        self._cancel_migration()
        self._wait_free_page_vq_idle()
        self.write_status(0)
        self.set_target(0)
        self.mem._view[:] = bytes(self.mem.size)  # a clean guest for every example (and MSI words)
        self.qt.irqs.clear()
        if self.msix is not None:
            self.msix.mask_all(False)

    def _check_alive(self) -> None:
        if not self.q.alive:
            raise QemuError(f"QEMU exited ({self.q.proc.returncode}): {self.q.log_tail()}")

    # -- common configuration ---------------------------------------------------------------------------
    def _c(self, off: int) -> int:
        return self.caps.common + off

    def read_device_features(self) -> int:
        self.qt.writel(self._c(vp.DEVICE_FEATURE_SELECT), 0)
        lo = self.qt.readl(self._c(vp.DEVICE_FEATURE))
        self.qt.writel(self._c(vp.DEVICE_FEATURE_SELECT), 1)
        return lo | self.qt.readl(self._c(vp.DEVICE_FEATURE)) << 32

    def write_driver_features(self, value: int) -> None:
        self.packed = bool(value & Feature.VIRTIO_F_RING_PACKED.mask)
        for sel in (0, 1):
            self.qt.writel(self._c(vp.DRIVER_FEATURE_SELECT), sel)
            self.qt.writel(self._c(vp.DRIVER_FEATURE), value >> 32 * sel & 0xFFFFFFFF)

    def read_status(self) -> int:
        self._check_alive()
        return self.qt.readb(self._c(vp.DEVICE_STATUS))

    def write_status(self, value: int) -> None:
        self._settled = False
        self.qt.writeb(self._c(vp.DEVICE_STATUS), value)
        if value == 0:
            self._enabled.clear()
            self.qt.writew(self._c(vp.MSIX_CONFIG), 0 if self.msix is not None else vp.NO_VECTOR)
            self.qt.readb(self.caps.isr)  # drop anything pending from before the reset
            if self.msix is not None:
                self._take_msix()  # the same for vectors written before the reset

    def config_generation(self) -> int:
        return self.qt.readb(self._c(vp.CONFIG_GENERATION))

    def read_config(self, offset: int, size: int) -> int:
        addr = self.caps.device + offset
        return {1: self.qt.readb, 2: self.qt.readw, 4: self.qt.readl}[size](addr)

    def write_config(self, offset: int, size: int, value: int) -> None:
        self._settled = False
        addr = self.caps.device + offset
        {1: self.qt.writeb, 2: self.qt.writew, 4: self.qt.writel}[size](addr, value)

    # -- queues -----------------------------------------------------------------------------------------------
    def queue_max_size(self, index: int) -> int:
        if index >= self.qt.readw(self._c(vp.NUM_QUEUES)):
            return 0
        self.qt.writew(self._c(vp.QUEUE_SELECT), index)
        return self.qt.readw(self._c(vp.QUEUE_SIZE))

    def enable_queue(self, index: int, size: int, addrs: QueueAddresses) -> None:
        self._settled = False
        self.qt.writew(self._c(vp.QUEUE_SELECT), index)
        self.qt.writew(self._c(vp.QUEUE_SIZE), size)
        self.qt.writew(self._c(vp.QUEUE_MSIX_VECTOR), 1 + index if self.msix is not None else vp.NO_VECTOR)
        for off, addr in ((vp.QUEUE_DESC, addrs.desc), (vp.QUEUE_DRIVER, addrs.avail), (vp.QUEUE_DEVICE, addrs.used)):
            self.qt.writel(self._c(off), addr & 0xFFFFFFFF)
            self.qt.writel(self._c(off) + 4, addr >> 32)
        self.qt.writew(self._c(vp.QUEUE_ENABLE), 1)
        self._enabled[index] = addrs
        self._sizes[index] = size

    def notify(self, index: int) -> None:
        self._settled = False
        self.qt.writew(self._c(vp.QUEUE_SELECT), index)
        off = self.qt.readw(self._c(vp.QUEUE_NOTIFY_OFF))
        self.qt.writew(self.caps.notify + off * self.caps.notify_multiplier, index)

    def take_interrupts(self) -> Interrupts:
        if self.msix is not None:
            return self._take_msix()
        isr = self.qt.readb(self.caps.isr)  # reading clears it (§4.1.4.5)
        queues = frozenset(self._enabled) if isr & 1 else frozenset()
        return Interrupts(queues, bool(isr & 2))

    def _take_msix(self) -> Interrupts:
        """Which vectors wrote their word since the last look. Masked while read and cleared, so a vector
        firing meanwhile stays pending and is delivered (written) when unmasked: it counts next time."""
        assert self.msix is not None
        self.msix.mask_all(True)
        fired = [v for v in range(self.msix.entries) if self.mem.read_u32(MSI_AREA + 4 * v)]
        for v in fired:
            self.mem.write_u32(MSI_AREA + 4 * v, 0)
        self.msix.mask_all(False)
        return Interrupts(frozenset(v - 1 for v in fired if v - 1 in self._enabled), 0 in fired)

    def run(self) -> None:
        """QEMU works asynchronously (notifications through ioeventfds, free_page_vq in an iothread): wait
        until the used rings are still, unless nothing has happened since they last were."""
        self._check_alive()
        if self._settled and not self._round:
            return
        last, quiet, deadline = None, 0, time.monotonic() + 1.0
        while time.monotonic() < deadline and quiet < 2:
            now = tuple(self._used_state(i) for i in self._enabled)
            quiet = quiet + 1 if now == last else 0
            last = now
            time.sleep(0.002)
        self._settled = quiet >= 2

    def _used_state(self, index: int) -> int | bytes:
        """What QEMU changes when it uses buffers of queue ``index``: the used idx (split) or, packed, the
        descriptor ring it writes used descriptors into."""
        addrs = self._enabled[index]
        if self.packed:
            return self.mem.read(addrs.desc, desc_ring_size(self._sizes[index]))
        return self.mem.read_u16(addrs.used + USED_IDX)

    # -- host side (QMP) ----------------------------------------------------------------------------------------
    def _migration_status(self) -> str:
        return (self.q.qmp.execute("query-migrate") or {}).get("status", "none")

    def _wait(self, what: str, done: Any, seconds: float = 5.0) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._check_alive()
            if (value := done()) is not None and value is not False:
                return value
            time.sleep(0.005)
        raise QemuError(f"QEMU: {what} did not happen within {seconds:g} s")

    def _cancel_migration(self) -> None:
        self._settled = False  # the iothread may still finish the round's last hints
        status = self._migration_status()
        if status in MIGRATING:
            if status != "cancelling":
                self.q.qmp.execute("migrate_cancel")
            try:  # one that failed or completed meanwhile has left MIGRATING too
                self._wait("migration cancel", lambda: self._migration_status() not in MIGRATING)
            except QemuError:
                why = None if self.packed else corrupted_queue(self.queue_status(FREE_PAGE_VQ))
                if why is None:
                    raise
                self.q.wedged = True  # the factory starts a fresh QEMU for the next session
                raise PeerSpecViolation("SPLIT-DEV-D3", f"migrate_cancel never completed: {why} (the "
                                        "reset/iothread race, reproducer reset-during-round)") from None
        self._round = False

    def queue_status(self, index: int) -> dict[str, Any]:
        """QEMU's own view of a queue (QMP x-query-virtio-queue-status: last-avail-idx, used-idx, ...);
        empty on a QEMU build without the command."""
        try:
            return self.q.qmp.execute("x-query-virtio-queue-status", path=f"{BALLOON_PATH}/virtio-backend",
                                      queue=index) or {}
        except QmpError:
            return {}

    def _wait_free_page_vq_idle(self, seconds: float = 2.0) -> None:
        """Before the reset that starts a session: let QEMU's iothread finish with the previous session's
        free_page_vq. A reset that lands while it pops corrupts the queue (reproducer reset-during-round,
        known deviation SPLIT-DEV-D3); that is a finding when the driver resets, not when we set up."""
        deadline, last = time.monotonic() + seconds, None
        while time.monotonic() < deadline:
            st = self.queue_status(FREE_PAGE_VQ)
            if not st:
                time.sleep(0.02)  # no such command (another QEMU build): a short grace instead
                return
            now = (st.get("last-avail-idx"), st.get("used-idx"), st.get("inuse"))
            if now == last and not st.get("inuse") and st.get("last-avail-idx") == st.get("shadow-avail-idx"):
                return
            last = now
            time.sleep(0.005)

    def _ensure_running(self) -> None:
        """A migration that finished leaves the VM paused (postmigrate); hinting needs it running."""
        if not (self.q.qmp.execute("query-status") or {}).get("running", False):
            self.q.qmp.execute("cont")

    def _cmd_id(self) -> int:
        return self.read_config(8, 4)

    def hint_start(self) -> int:
        """Start a migration (to nowhere, at ROUND_BANDWIDTH, so it never completes): QEMU publishes a new
        command ID after its first sync and keeps it until the migration is cancelled."""
        before = self._cmd_id()
        self._cancel_migration()
        self._ensure_running()
        self.q.qmp.execute("migrate", uri="exec:cat > /dev/null")
        self._round = True  # until cancelled
        return self._wait("a new command ID", lambda: (c := self._cmd_id()) >= 2 and c != before and c)

    def hint_done(self) -> None:
        """Cancel the migration: QEMU's CLEANUP notifier publishes DONE. Without one, nothing to do."""
        if self._migration_status() not in MIGRATING:
            return
        self._cancel_migration()
        self._wait("DONE", lambda: self._cmd_id() == 1)

    def set_target(self, num_pages: int) -> None:
        # QEMU: num_pages = (ram_size - target) >> 12; target 0 is refused, so clamp to one page.
        target = max(self.q.ram_bytes - num_pages * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)
        self.q.qmp.execute("balloon", value=target)


def corrupted_queue(status: dict[str, Any]) -> str | None:
    """What is wrong with a queue, from QEMU's x-query-virtio-queue-status, or None. A consistent queue
    has nothing popped ahead of what it last read of the avail idx."""
    if not status:
        return None
    last, shadow = status.get("last-avail-idx"), status.get("shadow-avail-idx")
    if last is None or shadow is None or (shadow - last) % 65536 <= status.get("vring-num", 0):
        return None
    return f"free_page_vq reads last-avail-idx {last} past shadow-avail-idx {shadow}"


class QemuFactory:
    """Starts QEMU once (lazily) and hands out a fresh session per example."""

    provides_memory = True

    def __init__(self, binary: str | None = None, device: str | None = None, **kwargs: Any) -> None:
        if shutil.which(binary or DEFAULT_BINARY) is None:
            raise QemuError(f"QEMU binary {binary or DEFAULT_BINARY!r} not found (install qemu-system-x86 "
                            "or pass --qemu-binary)")
        self.binary, self.device, self.kwargs = binary, device, kwargs
        self.qemu: QemuProcess | None = None
        self.caps: vp.VirtioCaps | None = None
        self.version: str | None = None  # filled when QEMU starts (QMP query-version)

    def _device(self) -> str:
        """The -device argument: MSI-X vectors for config and every queue where the build can give them."""
        device = self.device or DEFAULT_DEVICE
        if "vectors=" not in device and has_vectors_property(self.binary):
            device += f",vectors={VECTORS}"
        return device

    def __call__(self) -> QemuBalloon:
        if self.qemu is None or not self.qemu.alive or self.qemu.wedged or self.qemu.qmp.broken:
            if self.qemu is not None:
                self.qemu.close()
            self.qemu = QemuProcess(self.binary, device=self._device(), **self.kwargs)
            self.caps = vp.setup(vp.find_balloon(self.qemu.qtest))
            if self.caps.msix is not None and vectors_accepted(self.qemu, self.caps):
                self.caps.msix.enable()
            else:
                self.caps = attrs.evolve(self.caps, msix=None)  # no MSI-X or too few vectors: INTx it is
            # Hinting starts only in a running VM during a migration; keep that migration too slow to
            # finish its first pass (ROUND_BANDWIDTH), so a hint round lasts until hint_done cancels it.
            slow: dict[str, Any] = {"max-bandwidth": ROUND_BANDWIDTH, "downtime-limit": 1}
            if "zero-page-detection" in (self.qemu.qmp.execute("query-migrate-parameters") or {}):
                slow["zero-page-detection"] = "none"  # 9.0 on
            self.qemu.qmp.execute("migrate-set-parameters", **slow)
            self.qemu.qmp.execute("cont")
            v = self.qemu.qmp.execute("query-version") or {}
            q = v.get("qemu", {})
            self.version = f"QEMU {q.get('major')}.{q.get('minor')}.{q.get('micro')} {v.get('package', '').strip()}".strip()
        assert self.caps is not None
        return QemuBalloon(self.qemu, self.caps)

    def with_packed(self) -> QemuFactory:
        """The same QEMU with ``packed=on`` on the balloon: it offers VIRTIO_F_RING_PACKED (--ring packed)."""
        return QemuFactory(self.binary, f"{self.device or DEFAULT_DEVICE},packed=on", **self.kwargs)

    def close(self) -> None:
        if self.qemu is not None:
            self.qemu.close()
            self.qemu = None


@functools.lru_cache(maxsize=None)
def has_vectors_property(binary: str | None) -> bool:
    """Whether this QEMU's virtio-balloon-pci takes ``vectors`` (9.0 on; 7.2's balloon has no MSI-X)."""
    path = shutil.which(binary or os.environ.get("VIRTIO_CONFORMANCE_QEMU", DEFAULT_BINARY))
    if path is None:
        return False
    try:
        out = subprocess.run([path, "-device", "virtio-balloon-pci,help"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "vectors=" in out


def vectors_accepted(qemu: QemuProcess, caps: vp.VirtioCaps) -> bool:
    """Whether QEMU takes vector 0 for config and 1 + i for every queue i (it reads back NO_VECTOR for a
    vector it refuses, §4.1.5.1.2); left at NO_VECTOR again."""
    qt = qemu.qtest
    n = qt.readw(caps.common + vp.NUM_QUEUES)
    if caps.msix is None or caps.msix.entries < n + 1:
        return False
    ok = True
    qt.writew(caps.common + vp.MSIX_CONFIG, 0)
    ok &= qt.readw(caps.common + vp.MSIX_CONFIG) == 0
    qt.writew(caps.common + vp.MSIX_CONFIG, vp.NO_VECTOR)
    for i in range(n):
        qt.writew(caps.common + vp.QUEUE_SELECT, i)
        qt.writew(caps.common + vp.QUEUE_MSIX_VECTOR, 1 + i)
        ok &= qt.readw(caps.common + vp.QUEUE_MSIX_VECTOR) == 1 + i
        qt.writew(caps.common + vp.QUEUE_MSIX_VECTOR, vp.NO_VECTOR)
    return ok
