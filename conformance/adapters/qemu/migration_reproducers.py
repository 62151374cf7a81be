"""A standalone reproducer for pages that differ at the destination of a TCG migration, which the
real-guest bench (``bench/bench_linux_migration.py --check``) met on QEMU 7.2 with hinting on and off.
``python -m conformance.adapters.qemu.migration_reproducers tcg-dirty-tlb [--qemu-binary PATH]``; the
exit status is 1 when the destination's copy differs from the source's (writes lost by the migration).

No virtio device takes part: a boot sector keeps incrementing one 32-bit counter in each of 16 pages,
the source migrates to a file (paced as ``tcg_dirty_tlb`` says), a destination paused with ``-S`` loads that file, and
the counters are read on both sides over QMP (``xp``) once both are stopped.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conformance.adapters.qemu.qmp import QmpClient
from conformance.adapters.qemu.reproducers import Reproduction, reproducer_main

PAGES = 16
BASE = 0x10000  # the counters: the first dword of each page from 64 KiB


def boot_sector() -> bytes:
    """Real-mode code at 0x7c00: ES=0x1000, then forever ``inc dword es:[di]`` for di = 0, 0x1000, ..,
    0xF000. A tight loop over 16 pages keeps their TCG TLB entries resident for the whole run."""
    code = bytearray(b"\xfa"                  # cli
                     b"\xb8\x00\x10"          # mov ax, 0x1000
                     b"\x8e\xc0")             # mov es, ax
    outer = len(code)
    code += b"\x31\xff"                       # xor di, di
    code += b"\xb9" + PAGES.to_bytes(2, "little")  # mov cx, PAGES
    inner = len(code)
    code += b"\x26\x66\xff\x05"               # inc dword es:[di]
    code += b"\x81\xc7\x00\x10"               # add di, 0x1000
    code += b"\xe2" + bytes([(inner - (len(code) + 2)) & 0xFF])  # loop inner
    code += b"\xeb" + bytes([(outer - (len(code) + 2)) & 0xFF])  # jmp outer
    return bytes(code.ljust(510, b"\0") + b"\x55\xaa")


#: SeaBIOS, for a provisioned build whose root lacks the seabios package (QEMU searches every -L in turn)
SEABIOS = Path("/usr/share/seabios")


def _qemu(binary: str, disk: Path, qmp_path: str, *extra: str) -> subprocess.Popen:
    bios = ["-L", str(SEABIOS)] if SEABIOS.is_dir() else []
    return subprocess.Popen([binary, *bios, "-machine", "pc", "-accel", "tcg", "-m", "16", "-display", "none",
                             "-nodefaults", "-no-user-config", "-serial", "null",
                             "-drive", f"file={disk},format=raw,if=ide",
                             "-qmp", f"unix:{qmp_path},server=on,wait=off", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _connect(proc: subprocess.Popen, path: str) -> QmpClient:
    end = time.monotonic() + 30
    while True:  # the socket file appears before QEMU listens on it
        try:
            return QmpClient(path)
        except Exception:
            if time.monotonic() > end or proc.poll() is not None:
                err = proc.stderr.read().decode()[-300:] if proc.stderr else ""
                raise RuntimeError(f"QEMU did not start: {err}") from None
            time.sleep(0.05)


def _wait(qmp: QmpClient, want: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while (status := (qmp.execute("query-migrate") or {}).get("status")) != want:
        if status == "failed" or time.monotonic() > end:
            raise RuntimeError(f"migration {status}, waiting for {want}")
        time.sleep(0.02)


def _counters(qmp: QmpClient) -> list[int]:
    out = []
    for k in range(PAGES):
        line = qmp.execute("human-monitor-command", **{"command-line": f"xp /1wx {BASE + k * 0x1000:#x}"})
        out.append(int(line.split(":")[1].split()[0], 16))
    return out


def tcg_dirty_tlb(binary: str | None = None, run_s: float = 1.0, converge_s: float = 10.0) -> Reproduction:
    """The destination must hold what the source held when it stopped: every page the guest wrote after
    it was sent is dirty and is sent again, last in the final pass with the vCPUs stopped.

    QEMU 7.2 under TCG loses those writes. ``cpu_physical_memory_sync_dirty_bitmap``
    (include/exec/ram_addr.h) takes a whole word of the migration dirty bitmap at a time (its fast path,
    for aligned RAM blocks) and clears it without resetting the TCG TLB's write entries
    (``tlb_reset_dirty_range_all``), so a page whose entry was already marked dirty keeps taking stores on
    the fast path, which set no dirty bit: after the first sync such a page is never sent again. The slow
    path, ``cpu_physical_memory_test_and_clear_dirty``, does reset them. Fixed upstream in QEMU 9.0 by
    03bfc2188f ("physmem: Fix migration dirty bitmap coherency with TCG memory access", Fixes:
    aa8dc044772); Debian's 7.2.22 does not carry it. KVM is not affected (its dirty log is the kernel's).
    """
    binary = binary or "qemu-system-x86_64"
    with tempfile.TemporaryDirectory(prefix="vc-tcgmig-") as d:
        work = Path(d)
        disk, stream = work / "boot.img", work / "stream"
        disk.write_bytes(boot_sector().ljust(1 << 20, b"\0"))
        src = _qemu(binary, disk, str(work / "src.qmp"))
        dst = None
        try:
            sq = _connect(src, str(work / "src.qmp"))
            time.sleep(run_s)  # SeaBIOS boots the sector; the counters run
            before = _counters(sq)
            if before == [0] * PAGES:
                raise RuntimeError("the boot sector's counters did not start")
            # A 1 ms downtime limit keeps the migration iterating while any page is dirty. Once the bulk
            # pass is over (the second sync; 256 KiB/s until then), the stream slows to 16 KiB/s, so the next pass takes about
            # 4 s to send the 16 counter pages again while the counters run: each must then be dirty at
            # the next sync. If their writes go unseen, the migration converges and completes with the
            # copies of that pass, which the counters have since left behind.
            sq.execute("migrate-set-parameters", **{"max-bandwidth": 256 << 10, "downtime-limit": 1})
            sq.execute("migrate", uri=f"exec:cat > {stream}")
            slowed = False
            end = time.monotonic() + converge_s
            while (status := (info := sq.execute("query-migrate") or {}).get("status")) != "completed":
                if status == "failed" or time.monotonic() > end:
                    break
                if not slowed and int(info.get("ram", {}).get("dirty-sync-count", 0)) >= 2:
                    sq.execute("migrate-set-parameters", **{"max-bandwidth": 16 << 10})
                    slowed = True
                time.sleep(0.01)
            converged = status == "completed"  # nothing left dirty although the counters kept running
            if converged and not slowed:
                raise RuntimeError("inconclusive: the migration completed before its second pass was slowed "
                                   "(a stalled host?); run it again")
            if not converged:  # let it finish: the final pass sends what is dirty with the vCPUs stopped
                sq.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 40, "downtime-limit": 2000})
                _wait(sq, "completed")
            source = _counters(sq)  # the source is stopped (postmigrate) from the final pass on
            dst = _qemu(binary, disk, str(work / "dst.qmp"), "-S", "-incoming", "defer")
            dq = _connect(dst, str(work / "dst.qmp"))
            dq.execute("migrate-incoming", uri=f"exec:cat {stream}")
            _wait(dq, "completed")
            dest = _counters(dq)
            version = (sq.execute("query-version") or {}).get("qemu", {})
            sq.close()
            dq.close()
        finally:
            for p in (src, dst):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
    lost = [k for k in range(PAGES) if dest[k] != source[k]]
    ver = ".".join(str(version.get(k, "?")) for k in ("major", "minor", "micro"))
    behind = [source[k] - dest[k] for k in lost]
    return Reproduction(
        name="tcg-dirty-tlb", requirement="migration, not virtio",
        expected=f"the destination's {PAGES} counters equal the stopped source's",
        observed=(f"QEMU {ver}: {len(lost)} of {PAGES} pages differ at the destination"
                  + (f" (behind the source by {min(behind)}..{max(behind)} increments)" if lost else "")
                  + ("; the migration converged by itself while they ran" if converged else
                     f"; still dirty after {converge_s:g} s, completed once the limits were lifted")),
        diverges=bool(lost))


REPRODUCERS = {"tcg-dirty-tlb": tcg_dirty_tlb}


def main(argv: list[str] | None = None) -> int:
    return reproducer_main(__doc__.splitlines()[0], REPRODUCERS, argv, diverged="QEMU loses writes in the migration")


if __name__ == "__main__":
    sys.exit(main())
