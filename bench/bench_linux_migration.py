"""Real-guest migrations under QEMU TCG: Linux's own driver with free page hinting on, off, and with
free page reporting, side by side in one run, beside the model's prediction for the same workload.

The guest (Debian's cloud kernel, built by conformance.adapters.linux.qemu_guest) keeps KEEP MiB in use and
writes then frees FILL MiB, so its free memory is non-zero. Each migration goes to ``exec:cat`` (or with
``--sink file`` to ``file:``, written by QEMU's migration thread: cat's copy is CPU time no QEMU thread
shows, and unpinned it competes with the vCPUs, so the pass's speed followed the host's load) with
no bandwidth cap, or at ``--link-mbps`` in every mode (a network's rate, against which the time an
ordering spends waiting for hints is weighed). Figures: MB sent, pages sent in full, seconds; the ideal
is the pages the guest had in use (RAM size - MemFree). The model (``refmodel.system.migration.Migration``) predicts the full pages
for the same workload with no hints and with every page the driver held as a hint applied before the
bulk pass; the gap between that and the measured hint run is the freed memory whose hint came after
the bulk pass had sent it. The timing model (``refmodel.system.timing``, calibrated by
``bench/bench_timing_model.py``) predicts each mode's full pages and seconds.

``--ordering SPEC`` adds ``hint-ordered``: the same hinting guest under a host ordering
(``conformance.adapters.qemu.migration.OrderedStart``; ``cap:GBPS``, ``gate`` or ``pace:SHARE``: see
``refmodel.system.orderings``; bounded), and ``off-ordered``: a guest that never hints under the same
ordering (the bound). ``--pin`` puts the vCPUs on one core and QEMU's other threads on another.
``--check`` keeps RAM in files, writes the migration stream to one, loads it into a
destination QEMU and compares every page. Ends with one key=value line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attrs  # noqa: E402

from conformance.adapters.linux.qemu_guest import INIT, MODULES, build  # noqa: E402
from conformance.adapters.qemu.migration import OrderedStart  # noqa: E402
from conformance.adapters.qemu.qmp import QmpClient  # noqa: E402
from refmodel.system.migration import HonestIdeal, predict_full_pages  # noqa: E402
from refmodel.system.orderings import UNCAPPED_BPS, CapThenLift, Paced, parse  # noqa: E402
from refmodel.system.real_runs import measured_load, modelled  # noqa: E402

PAGE = 4096
BLOCK = 1 << 10  # Linux hints order-10 blocks (4 MiB)
MODES = {"hint": "free-page-hint=on,iothread=io0", "off": "", "report": "free-page-reporting=on"}
ORDERED = {"hint-ordered": "hint", "off-ordered": "off"}  # mode -> the device it runs with
MIGRATION_THREADS = ("live_migration", "mig/src/main")  # QEMU's migration thread, before and from 9.0


def thread_cpu(pid: int, seen: dict[str, tuple[str, float, float]]) -> dict[str, float]:
    """CPU seconds QEMU's threads have run (``/proc/PID/task/TID/schedstat``, ns), by role: ``vcpu0``,
    ``vcpu1``.. (named ``CPU n/TCG`` with ``-name debug-threads=on``), ``migration`` (``live_migration``;
    ``mig/src/main`` from QEMU 9.0), ``io``, ``other`` and the ``process`` as a whole; and ``ROLE_wait``: seconds each was runnable but
    waiting for a core (what a loaded host takes away). ``seen`` (thread id: role, run, wait) carries a
    thread's last figures past its exit (the migration thread ends with the migration). A share is the
    growth of one of these over the wall time between two samples."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            run_ns, wait_ns, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        role = (f"vcpu{comm.split()[1].split('/')[0]}" if comm.startswith("CPU ") else
                "migration" if comm.startswith(MIGRATION_THREADS) else "io" if comm.startswith("IO ") else "other")
        seen[tid] = (role, int(run_ns) / 1e9, int(wait_ns) / 1e9)
    out: dict[str, float] = {}
    for role, run, wait in seen.values():
        for k, v in ((role, run), (f"{role}_wait", wait), ("process", run)):
            out[k] = out.get(k, 0.0) + v
    return out


PIN: tuple[set[int], set[int]] | None = None  # --pin: (the guest's core, the host's core)


def pin_cores() -> tuple[set[int], set[int]]:
    """Two cores this process may use: the first for the guest's vCPUs, the second for the rest."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit(f"--pin needs two cores; this process may use {len(cores)}: {cores}")
    return {cores[0]}, {cores[1]}


def pin(pid: int) -> None:
    """QEMU's vCPU threads on the guest's core; its other threads on the host's, where threads it starts
    later inherit it from the main loop (the migration thread, and ``exec:``'s shell and ``cat``)."""
    assert PIN is not None
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text()
            os.sched_setaffinity(int(tid), PIN[0] if comm.startswith("CPU ") else PIN[1])
        except (OSError, ProcessLookupError):  # a thread that exited meanwhile
            pass


FILE_SINK_SINCE = (8, 2)  # QEMU's file: migration URI


def qemu_version(version_line: str) -> tuple[int, int] | None:
    """(major, minor) from ``qemu-system-x86_64 --version``'s first line, None if it says none."""
    m = re.search(r"version (\d+)\.(\d+)", version_line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def guest_clock(pid: int) -> Callable[[], float]:
    """The ordering's guest clock: wall seconds less the most any vCPU thread waited for a core, so a
    guest starved by a loaded host is not taken for one that stopped hinting (an idle vCPU sleeps and
    does not wait)."""
    seen: dict[str, tuple[str, float, float]] = {}
    t0, w0 = time.monotonic(), None

    def now() -> float:
        nonlocal w0
        waits = {k: v for k, v in thread_cpu(pid, seen).items() if k.startswith("vcpu") and k.endswith("_wait")}
        w0 = waits if w0 is None else w0
        return time.monotonic() - t0 - max((v - w0.get(k, v) for k, v in waits.items()), default=0.0)

    return now


def shares(samples: list[tuple[float, dict[str, float]]], t_from: float, t_to: float) -> dict[str, float]:
    """Each role's CPU share (CPU seconds per wall second) between the samples nearest ``t_from`` and
    ``t_to``, and ``vcpu``: the busiest vCPU's (the one the driver hints on)."""
    if len(samples) < 2:
        return {}
    a = min(samples, key=lambda s: abs(s[0] - t_from))
    b = min(samples, key=lambda s: abs(s[0] - t_to))
    if b[0] <= a[0]:
        a, b = samples[0], samples[-1]
    wall = b[0] - a[0]
    out = {k: round((b[1].get(k, 0.0) - a[1].get(k, 0.0)) / wall, 3) for k in b[1]}
    out["vcpu"] = max((v for k, v in out.items() if k.startswith("vcpu") and "_" not in k), default=0.0)
    out["window_s"] = round(wall, 3)
    return out


def machine_args(qemu: str, mem_mib: int, ram_file: Path | None) -> list[str]:
    mem = ["-m", str(mem_mib)]
    if ram_file is not None:  # RAM in a file we can read after the migration
        mem += ["-object", f"memory-backend-file,id=ram0,size={mem_mib}M,mem-path={ram_file},share=on"]
    machine = "q35" + (",memory-backend=ram0" if ram_file is not None else "")
    return [qemu, "-machine", machine, "-accel", "tcg",
            "-smp", "2", *mem, "-nographic", "-nodefaults", "-no-user-config", "-object", "iothread,id=io0",
            "-name", "vc,debug-threads=on"]


def provisioned(name: str) -> tuple[Path, Path, str]:
    """(vmlinuz, initrd, release) for a kernel of conformance.provision (``trixie``, ``sid``..): the same
    /init as qemu_guest.build's, with that kernel's modules (compressed ones unpacked) in load order."""
    from conformance.adapters.linux.guest import BUSYBOX, cache_dir
    from conformance.adapters.linux.qemu_guest import _cpio_newc
    from conformance.adapters.linux.qemu_route import _load_order, _modules, kernel_build

    image, modules, release = kernel_build(name)
    found = _modules(modules / release)
    order = _load_order(found, ("virtio_pci", "virtio_balloon"))
    init = INIT.replace(" ".join(MODULES), " ".join(n for n, _ in order))
    busybox = Path(BUSYBOX)
    key = hashlib.sha256(init.encode() + busybox.read_bytes() + b"".join(d for _, d in order)).hexdigest()[:16]
    out = cache_dir() / "qemu-guest" / f"{release}-{key}.initrd"
    if not out.exists():
        entries: list[tuple[str, int, bytes, int]] = [
            (d, stat.S_IFDIR | 0o755, b"", 0) for d in ("bin", "dev", "proc", "sys", "w", "lib")]
        entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5 << 8) | 1))
        entries.append(("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes(), 0))
        applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
        entries += [(f"bin/{a}", stat.S_IFLNK | 0o777, b"busybox", 0) for a in applets if a != "busybox"]
        entries += [(f"lib/{n}.ko", stat.S_IFREG | 0o644, d, 0) for n, d in order]
        entries.append(("init", stat.S_IFREG | 0o755, init.encode(), 0))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        tmp.write_bytes(_cpio_newc(entries))
        tmp.replace(out)
    return image, out, release


KERNEL: str | None = None  # --kernel: a provisioned release; None: qemu_guest.build's (apt's newest)


class GuestPanic(RuntimeError):
    """The guest's kernel panicked before the workload was ready (seen once in ~20 boots of 6.12 under
    QEMU 7.2 TCG on a loaded host, in urandom_read_iter): boot again, the run has not started."""


class Guest:
    def __init__(self, qemu: str, mode: str, mem_mib: int, keep: int, fill: int, workdir: Path,
                 ram_file: Path | None = None) -> None:
        kernel, initrd, self.kernel = provisioned(KERNEL) if KERNEL else build()
        self.qmp_path = str(workdir / f"{mode}.qmp")
        device = MODES[ORDERED.get(mode, mode)]
        dev = "virtio-balloon-pci" + (f",{device}" if device else "")
        self.dev = dev
        self.boot = ["-kernel", str(kernel), "-initrd", str(initrd),
                     "-append", f"console=ttyS0 rdinit=/init quiet KEEP={keep} FILL={fill} TICK=0.02"]
        args = [*machine_args(qemu, mem_mib, ram_file), "-serial", "stdio", *self.boot,
                "-device", dev, "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = b""
        self.free: list[tuple[float, int]] = []  # (host time, MemFree bytes)
        self.free_guest: list[tuple[float, float, int]] = []  # (host time, guest uptime, MemFree bytes)
        self.ready = False
        self.log = b""

    def pump(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        self.log = (self.log + chunk)[-20000:]
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        now = time.monotonic()
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if "@@READY" in line:
                self.ready = True
            elif "@@FREE" in line:
                parts = line[line.index("@@FREE"):].split()  # @@FREE <uptime> <idle> <kB>
                kib = int(parts[-1])
                self.free.append((now, kib * 1024))
                try:
                    self.free_guest.append((now, float(parts[1]), kib * 1024))
                except (IndexError, ValueError):
                    pass
            elif "@@ERROR" in line:
                raise RuntimeError(line)
            elif "Kernel panic" in line and not self.ready:
                raise GuestPanic(f"the guest's kernel panicked while booting: {line[:200]}")

    def wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not (self.ready and len(self.free) >= 3):
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError(f"guest not ready; console:\n{self.log.decode('utf-8', 'replace')[-2000:]}")
            self.pump(0.2)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def ring_pages(qmp: QmpClient) -> set[int]:
    """The guest pages holding the balloon's virtqueues (QEMU 7.2's x-query-virtio-queue-status), so a
    page that differs at the destination can be told to be a ring the source device wrote after the
    final sync (a stopped source still serves its queues) rather than guest data; empty if QEMU lacks it."""
    pages: set[int] = set()
    try:
        devs = qmp.execute("x-query-virtio") or []
        path = next(d["path"] for d in devs if "balloon" in d.get("name", ""))
        for q in range(5):
            st = qmp.execute("x-query-virtio-queue-status", path=path, queue=q) or {}
            num = int(st.get("vring-num", 0))
            for key, size in (("vring-desc", 16 * num), ("vring-avail", 6 + 2 * num), ("vring-used", 6 + 8 * num)):
                addr = int(st.get(key, 0))
                if addr and num:
                    pages.update(range(addr // PAGE, (addr + size - 1) // PAGE + 1))
    except Exception:  # an older QEMU, a queue that does not exist
        pass
    return pages


def classify(src, dst, before) -> dict:
    """Compare the stopped source's RAM with the destination's, page by page (``src``, ``dst`` and
    ``before``, the destination before the stream, are binary files). A page that differs is:

    - ``unsent_free``: zero at the destination and not at the source: never sent (a free page hinted or
      reported that the guest left as it was): allowed;
    - ``discarded_after_send``: zero at the source and not at the destination: the source discarded it
      after sending it (QEMU discards a reported page, ``ram_block_discard_range``, and the dirty log does
      not see a discard), so the destination keeps the copy the guest gave up: allowed, the guest holds
      no data there (free page reporting, §5.5.6.7);
    - ``lost``: neither side zero: the destination holds a stale copy of a page the source changed after
      sending it. ``differing`` lists the first 20 (page, bytes that differ), ``never_written_by_stream``
      counts those the destination still holds as it was before the stream."""
    zero = bytes(PAGE)
    unsent, discarded, differ, untouched = 0, 0, [], 0
    base = 0
    while True:
        a, b, c = src.read(1 << 24), dst.read(1 << 24), before.read(1 << 24)
        if not a:
            break
        if a != b:
            for off in range(0, len(a), PAGE):
                pa, pb = a[off:off + PAGE], b[off:off + PAGE]
                if pa != pb:
                    if pb == zero:
                        unsent += 1
                    elif pa == zero:
                        discarded += 1
                    else:  # which page, and how many bytes differ (a ring index is a few)
                        differ.append(((base + off) // PAGE, sum(x != y for x, y in zip(pa, pb))))
                        untouched += pb == c[off:off + PAGE]
        base += len(a)
    return {"lost": len(differ), "differing": differ[:20], "unsent_free": unsent,
            "discarded_after_send": discarded, "never_written_by_stream": untouched}


def compare(qemu: str, mem_mib: int, g: Guest, src_ram: Path, stream: Path, workdir: Path) -> dict:
    """Load the migration stream into a destination QEMU (paused, -S) and compare its RAM with the
    source's (paused after the migration), page by page (:func:`classify`)."""
    dst_ram, before_ram = workdir / "dst.ram", workdir / "dst.before"
    qmp_path = str(workdir / "dst.qmp")
    args = [*machine_args(qemu, mem_mib, dst_ram), "-S", "-serial", "null", *g.boot, "-device", g.dev,
            "-qmp", f"unix:{qmp_path},server=on,wait=off", "-incoming", "defer"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        end = time.monotonic() + 30
        while True:  # the socket file appears before QEMU listens on it
            try:
                qmp = QmpClient(qmp_path)
                break
            except Exception:
                if time.monotonic() > end or proc.poll() is not None:
                    err = proc.stderr.read().decode()[-500:] if proc.stderr else ""
                    raise RuntimeError(f"destination did not start: {err}") from None
                time.sleep(0.05)
        # What the destination holds before the stream (its own -kernel/-initrd blobs, zeros elsewhere): a
        # differing page the stream left as it was was never sent; one it rewrote got a stale copy.
        shutil.copyfile(dst_ram, before_ram)
        qmp.execute("migrate-incoming", uri=f"exec:cat {stream}")
        end = time.monotonic() + 300
        while (status := (qmp.execute("query-migrate") or {}).get("status")) != "completed":
            if status == "failed" or time.monotonic() > end:
                raise RuntimeError(f"destination load {status}")
            time.sleep(0.05)
        qmp.close()
        with open(src_ram, "rb") as fs, open(dst_ram, "rb") as fd, open(before_ram, "rb") as fb:
            return classify(fs, fd, fb)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        dst_ram.unlink(missing_ok=True)
        before_ram.unlink(missing_ok=True)


def migrate(qemu: str, mode: str, mem_mib: int, keep: int, fill: int, workdir: Path, settle: float,
            ordering: CapThenLift | Paced | None = None, check: bool = False,
            link_bps: int = UNCAPPED_BPS, sink: str = "cat") -> dict:
    src_ram, stream = workdir / "src.ram", workdir / "stream"
    for attempt in range(3):
        g = Guest(qemu, mode, mem_mib, keep, fill, workdir, src_ram if check else None)
        try:
            g.wait_ready(600)
            if PIN is not None:
                pin(g.proc.pid)
            break
        except GuestPanic as e:
            g.close()
            print(f"{mode}: {e}; booting again", file=sys.stderr)
            if attempt == 2:
                raise
    resident: list[tuple[float, int]] = []  # (host time, bytes of guest RAM the host holds)

    def held() -> None:
        if check:  # reporting's discards punch holes in the RAM file: its allocated size is what the host holds
            try:
                resident.append((time.monotonic(), os.stat(src_ram).st_blocks * 512))
            except OSError:
                pass

    try:
        end = time.monotonic() + settle  # reporting reports 2 s after the free; let every mode wait alike
        while time.monotonic() < end:
            g.pump(0.1)
            held()
        qmp = QmpClient(g.qmp_path)
        mem_total = mem_mib << 20
        free_before = g.free[-1][1]
        qmp.execute("migrate-set-parameters", **{"max-bandwidth": link_bps})  # the network, every mode alike
        rings = ring_pages(qmp)
        ordered = (OrderedStart(ordering, qmp.execute, lift_to=link_bps, guest_clock=guest_clock(g.proc.pid))
                   if ordering is not None and mode in ORDERED else None)
        if ordered is not None:
            ordered.begin()
        threads: dict[str, tuple[str, float, float]] = {}
        cpu = [(time.monotonic(), thread_cpu(g.proc.pid, threads))]
        load_avg = os.getloadavg()[0]
        t0 = time.monotonic()
        target = stream if check else Path("/dev/null")
        qmp.execute("migrate", uri=f"file:{target}" if sink == "file" else f"exec:cat > {target}")
        if ordered is not None:
            ordered.started()
        progress: list[tuple[float, int]] = []
        ram_curve: list[tuple[float, int, int, int]] = []  # (time, normal, duplicate, remaining bytes)
        bulk_end: float | None = None
        while True:
            g.pump(0.005 if ordered is not None else 0.05)
            info = qmp.execute("query-migrate")
            if ordered is not None:
                ordered.poll(info)
            ram = info.get("ram", {})
            now = time.monotonic()
            progress.append((now, int(ram.get("normal", 0))))
            ram_curve.append((now, int(ram.get("normal", 0)), int(ram.get("duplicate", 0)),
                              int(ram.get("remaining", 0))))
            if len(ram_curve) % 4 == 0:
                held()
            cpu.append((now, thread_cpu(g.proc.pid, threads)))
            if bulk_end is None and int(ram.get("dirty-sync-count", 0)) > 1:
                bulk_end = now - t0
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
        wall = time.monotonic() - t0
        if info.get("status") != "completed":
            raise RuntimeError(f"{mode}: migration {info.get('status')}: {info}")
        qmp.close()
        hint_curve = [(t - t0, max(free_before - f, 0)) for t, f in g.free if t >= t0]
        # The same on the guest's clock: console lines can reach the host in bursts. The guest's uptime plus
        # the smallest (arrival - uptime) seen is the host time at which the guest sampled.
        offset = min((h - u for h, u, _ in g.free_guest), default=0.0)
        hint_curve_guest = [(u + offset - t0, max(free_before - f, 0)) for h, u, f in g.free_guest if h >= t0]
        out = {"mode": mode, "mb": ram["transferred"] / 1e6, "full_pages": ram["normal"], "wall": wall,
               "zero_pages": ram.get("duplicate", 0), "ideal": (mem_total - free_before) // PAGE,
               "free_before": free_before, "hinted_max": max((h for _, h in hint_curve), default=0) // PAGE,
               "hint_curve": hint_curve, "hint_curve_guest": hint_curve_guest,
               "progress": [(t - t0, n) for t, n in progress], "kernel": g.kernel,
               "dirty_syncs": int(ram.get("dirty-sync-count", 0)), "bulk_end_s": bulk_end,
               "load_avg_1min": load_avg,
               # On the guest's clock, from its first MemFree line (within a tick of the free) to migrate.
               "since_free_s": round(t0 - offset - g.free_guest[0][1], 3) if g.free_guest else None}
        # QEMU's side of the hints: pages that left the bitmap unsent (n - remaining - sent) until the first sync.
        out["ram_curve"] = [(round(t - t0, 4), a, b, c) for t, a, b, c in ram_curve]
        out["resident_curve"] = [(round(t - t0, 3), b) for t, b in resident]
        rel = [(t - t0, c) for t, c in cpu if c]
        out["cpu_shares"] = {"bulk": shares(rel, 0.0, bulk_end or wall), "migration": shares(rel, 0.0, wall)}
        step = max(1, len(rel) // 100)  # about every 1% of the run, and the last
        out["cpu"] = [(round(t, 4), {k: round(v, 3) for k, v in c.items()}) for t, c in rel[::step] + rel[-1:]]
        if ordered is not None:
            out["ordering"] = ordered.summary()
        g.close()
        if check:
            try:
                out["compare"] = compare(qemu, mem_mib, g, src_ram, stream, workdir)
                out["compare"]["in_balloon_rings"] = sum(p in rings for p, _ in out["compare"]["differing"])
            except Exception as e:  # keep the migration's figures; say the compare could not be made
                out["compare"] = {"lost": -1, "error": str(e)[:300]}
        return out
    finally:
        g.close()
        for f in (src_ram, stream):
            f.unlink(missing_ok=True)


def timing_model(args: dict, run: dict) -> dict:
    """The calibrated timing model's full pages and seconds for one measured run's guest and mode, at the
    CPU shares the run got (refmodel.system.real_runs), and on an idle host (a core each)."""
    m, idle = modelled(args, run), modelled(args, run, loaded=False)
    return {"full_pages": round(m.full_pages), "wall": round(m.wall_s, 3), "mb": round(m.mb, 1),
            "idle_full_pages": round(idle.full_pages), "idle_wall": round(idle.wall_s, 3)}


def predict(n_pages: int, ideal: int, fill: int, hinted: int) -> int:
    """Full pages the model sends when the driver's ``hinted`` pages are all applied before the bulk
    pass: in-use pages, plus the written-and-freed (non-zero) pages no hint covered. Never-written free
    pages are zero, which QEMU sends as a flag, not a page. Linux hints 4 MiB blocks of free memory
    without regard to contents, so the hinted blocks are drawn from all free blocks."""
    rng = random.Random(1)
    n_blocks = n_pages // BLOCK
    blocks = list(range(n_blocks))
    rng.shuffle(blocks)
    used, rest = blocks[:-(-ideal // BLOCK)], blocks[-(-ideal // BLOCK):]
    nonzero_free, hint_blocks = rest[:fill // BLOCK], rng.sample(rest, min(len(rest), hinted // BLOCK))

    def mask(bs: list[int]) -> int:
        buf = bytearray(n_pages // 8)
        for b in bs:
            buf[b * BLOCK // 8:(b + 1) * BLOCK // 8] = b"\xff" * (BLOCK // 8)
        return int.from_bytes(buf, "little")

    allocated = mask(used)
    return predict_full_pages(n_pages, allocated | mask(nonzero_free), mask(hint_blocks) & ~allocated)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qemu", default=shutil.which("qemu-system-x86_64") or "qemu-system-x86_64")
    p.add_argument("--mem-mib", type=int, default=2048)
    p.add_argument("--keep-mib", type=int, default=256, help="MiB the guest keeps in use")
    p.add_argument("--fill-mib", type=int, default=1500, help="MiB written then freed before migrating")
    p.add_argument("--settle", type=float, default=6.0, help="seconds between the free and the migration")
    p.add_argument("--json", type=Path, help="write the figures (and timelines) here")
    p.add_argument("--ordering", metavar="SPEC",
                   help="also run hint-ordered and off-ordered under cap:GBPS, gate or pace:SHARE "
                        "(refmodel.system.orderings)")
    p.add_argument("--quiet-ms", type=float, default=50.0, help="the ordering's 'hints stopped' time")
    p.add_argument("--first-hint-bound", type=float, default=0.25, help="the ordering's bound if no hint came")
    p.add_argument("--bound", type=float, default=2.0, help="the ordering's bound on the capped start")
    p.add_argument("--clock", choices=("wall", "guest"), default="wall",
                   help="what the ordering's quiet time and first-hint bound are counted on (guest: wall time "
                        "less the vCPUs' waits for a core)")
    p.add_argument("--kernel", metavar="RELEASE",
                   help="a kernel of conformance.provision (bookworm, trixie, sid); default: apt's newest cloud kernel")
    p.add_argument("--link-mbps", type=float, default=0.0,
                   help="max-bandwidth in MB/s for every mode, a network's rate (an ordering never goes above "
                        "it and lifts to it); 0: uncapped, as fast as exec:cat takes the stream")
    p.add_argument("--modes", metavar="MODE,..", help=f"only these of {', '.join([*MODES, *ORDERED])} (an "
                   "experiment: the summary needs hint, off and report)")
    p.add_argument("--pin", action="store_true",
                   help="the guest's vCPUs on one core, QEMU's other threads (the migration thread, the stream's "
                        "cat) and this bench on another, as a host that pins vCPUs does; default: the "
                        "scheduler's choice on a shared host")
    p.add_argument("--sink", choices=("cat", "file"), default="cat",
                   help="where QEMU writes the stream: cat, through a pipe to exec:cat (every QEMU; cat's copy "
                        "into the file is CPU time no QEMU thread shows), or file:, written by the migration "
                        "thread itself (QEMU 8.2 and later)")
    p.add_argument("--check", action="store_true",
                   help="load each stream into a destination QEMU and compare every page (RAM in /dev/shm)")
    args = p.parse_args()
    bounds = {"quiet_s": args.quiet_ms / 1e3, "first_hint_bound_s": args.first_hint_bound,
              "bound_s": args.bound, "clock": args.clock}
    try:
        ordering = None if args.ordering is None else parse(args.ordering, **bounds)
    except ValueError as e:
        p.error(str(e))
    modes = [*MODES, *(ORDERED if ordering is not None else ())]
    if args.modes:
        wanted = args.modes.split(",")
        if bad := [m for m in wanted if m not in modes]:
            p.error(f"--modes: {', '.join(bad)} not among {', '.join(modes)} (ordered modes need --ordering)")
        modes = wanted
    if args.sink == "file":
        line = subprocess.run([args.qemu, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        got = qemu_version(line)
        if got is None or got < FILE_SINK_SINCE:
            p.error(f"--sink file needs QEMU {'.'.join(map(str, FILE_SINK_SINCE))} or later (file: migration); "
                    f"{args.qemu} says {line.strip() or 'nothing'!r}")
    global KERNEL, PIN
    KERNEL = args.kernel
    if args.pin:
        PIN = pin_cores()
        os.sched_setaffinity(0, PIN[1])
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="vc-migr-", dir="/dev/shm" if args.check else None))
    try:
        link = int(args.link_mbps * 1e6) if args.link_mbps > 0 else UNCAPPED_BPS
        runs = [migrate(args.qemu, mode, args.mem_mib, args.keep_mib, args.fill_mib, work, args.settle,
                        ordering, args.check, link, args.sink) for mode in modes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n_pages = (args.mem_mib << 20) // PAGE
    ver = subprocess.run([args.qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    if not {"hint", "off", "report"} <= set(modes):  # an experiment: the figures, no comparison
        for r in runs:
            got = measured_load(r)
            r["load"] = None if got is None else attrs.asdict(got)
            print(f"{r['mode']}: {r['full_pages']} full pages, {r['zero_pages']} zero, {r['mb']:.1f} MB, "
                  f"{r['wall']:.2f} s, {r['dirty_syncs']} dirty-log syncs, first at {r['bulk_end_s']}")
        if args.json:
            args.json.write_text(json.dumps({"runs": runs, "qemu": ver, "partial": True,
                                             "args": vars(args) | {"json": str(args.json)}}, indent=1))
        print(" ".join(f"{r['mode']}_pages={r['full_pages']} {r['mode']}_s={r['wall']:.2f}" for r in runs))
        return
    hint = runs[0]
    fill = (args.fill_mib << 20) // PAGE
    held = hint["hinted_max"]
    model_hint = predict(n_pages, hint["ideal"], fill, held)
    model_off = predict(n_pages, hint["ideal"], fill, 0)
    by = {r["mode"]: r for r in runs}
    off = by["off"]
    for r in runs:
        r["honest_ideal"] = HonestIdeal.estimated(r["ideal"], off["full_pages"], off["zero_pages"],
                                                  n_pages).pages
        got = measured_load(r)
        r["load"] = None if got is None else attrs.asdict(got)
        r["timing_model"] = timing_model(vars(args), r)
    print(f"{ver}; guest {hint['kernel']}, {args.mem_mib} MiB, {args.keep_mib} MiB kept, {args.fill_mib} MiB "
          f"written and freed, TCG, migration to {'file:' if args.sink == 'file' else 'exec:cat'}"
          + (", vCPUs pinned to one core" if args.pin else ""))
    print(f"{'mode':>13}{'MB sent':>10}{'full pages':>12}{'zero pages':>12}{'seconds':>9}{'honest':>9}"
          f"{'x honest':>9}{'old ideal':>10}{'x old':>7}{'timing model':>14}{'model s':>8}{'lost':>6}")
    for r in runs:
        lost = r.get("compare", {}).get("lost", "-")
        print(f"{r['mode']:>13}{r['mb']:>10.1f}{r['full_pages']:>12}{r['zero_pages']:>12}{r['wall']:>9.2f}"
              f"{r['honest_ideal']:>9}{r['full_pages'] / r['honest_ideal']:>9.2f}{r['ideal']:>10}"
              f"{r['full_pages'] / r['ideal']:>7.2f}{r['timing_model']['full_pages']:>14}"
              f"{r['timing_model']['wall']:>8.2f}{lost:>6}")
        c = r["cpu_shares"]["bulk"]
        if c:
            print(f"{'':>13}CPU share in the bulk pass ({c['window_s']:.2f} s): busiest vCPU {c['vcpu']:.2f}, "
                  f"migration thread {c.get('migration', 0):.2f}, QEMU {c['process']:.2f} of {os.cpu_count()} cores")
        if "ordering" in r:
            o = r["ordering"]
            what = (f"cap {o['cap_bps'] / 1e9:g} GB/s" if "cap_bps" in o else
                    f"paced at {o['share']:g} x the hint rate, {o.get('cap_changes', 0)} cap changes")
            lifted = o["lifted_s"] if o["lifted_s"] is None else round(o["lifted_s"], 3)
            print(f"{'':>13}ordering: {what}, lifted at {lifted} s ({o['lifted_because']}), "
                  f"{o['hinted_seen']} hinted pages seen over QMP")
    print(f"{'model':>8}{'':>10}{model_hint:>12}{'':>12}{'':>9}{hint['ideal']:>9}{model_hint / hint['ideal']:>9.2f}"
          f"   hints (the {held} pages the driver held) all applied before the bulk pass")
    print(f"{'model':>8}{'':>10}{model_off:>12}{'':>12}{'':>9}{hint['ideal']:>9}{model_off / hint['ideal']:>9.2f}"
          "   no hints")
    free = hint["free_before"] // PAGE
    t_hinted = next((t for t, h in hint["hint_curve"] if held and h // PAGE >= 0.9 * held), None)
    print(f"the driver held {held} pages as hints, {held / max(free, 1):.0%} of the {free} free pages, and 90% of "
          f"them only {t_hinted if t_hinted is None else round(t_hinted, 2)} s into the {hint['wall']:.2f} s "
          f"migration (MemFree sampled every 0.02 s in the guest); measured minus model-with-those-hints-first: "
          f"{hint['full_pages'] - model_hint} full pages")
    if args.json:
        load = {"start": load_start, "end": os.getloadavg(), "nice": os.nice(0), "cores": os.cpu_count()}
        args.json.write_text(json.dumps({"runs": runs, "model_hint": model_hint, "model_off": model_off,
                                         "qemu": ver, "load_avg": load,
                                         "args": vars(args) | {"json": str(args.json)}}, indent=1))
    extra = ""
    if "hint-ordered" in by:
        ho, oo = by["hint-ordered"], by["off-ordered"]
        extra = (f" ordered_pages={ho['full_pages']} ordered_mb={ho['mb']:.1f} ordered_s={ho['wall']:.2f} "
                 f"ordered_over_honest={ho['full_pages'] / ho['honest_ideal']:.3f} "
                 f"never_hinting_ordered_s={oo['wall']:.2f}")
    if args.check:
        extra += f" lost_pages={sum(r['compare']['lost'] for r in runs)}"
    print(f"hint_mb={by['hint']['mb']:.1f} off_mb={by['off']['mb']:.1f} report_mb={by['report']['mb']:.1f} "
          f"hint_s={by['hint']['wall']:.2f} off_s={by['off']['wall']:.2f} report_s={by['report']['wall']:.2f} "
          f"ideal_pages={hint['ideal']} hint_pages={by['hint']['full_pages']} off_pages={by['off']['full_pages']} "
          f"report_pages={by['report']['full_pages']} model_hint_pages={model_hint} model_off_pages={model_off} "
          f"hint_over_off={by['hint']['mb'] / by['off']['mb']:.3f}"
          f" hint_over_honest={by['hint']['full_pages'] / by['hint']['honest_ideal']:.3f}{extra}")


if __name__ == "__main__":
    main()
