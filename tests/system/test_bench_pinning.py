"""The real-guest bench's host set-up (bench/bench_linux_migration.py): ``--pin`` puts QEMU's vCPU threads
on one core and its other threads on another, and ``--sink file`` is refused, with one line, by a QEMU too
old for ``file:`` migration."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_linux_migration.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_linux_migration", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two cores")
def test_pin_puts_vcpu_threads_on_the_guest_core_and_the_rest_on_the_host_core():
    bench = _bench()
    # A process with one thread named as QEMU names a TCG vCPU, and its main thread.
    code = ("import ctypes, threading, time\n"
            "def vcpu():\n"
            "    ctypes.CDLL(None).prctl(15, b'CPU 0/TCG', 0, 0, 0)\n"  # PR_SET_NAME
            "    time.sleep(30)\n"
            "threading.Thread(target=vcpu, daemon=True).start()\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        tasks = Path(f"/proc/{proc.pid}/task")
        deadline = time.monotonic() + 10
        while not any((t / "comm").read_text().startswith("CPU ") for t in tasks.iterdir()):
            assert time.monotonic() < deadline, "the child never named its thread"
            time.sleep(0.02)
        bench.PIN = bench.pin_cores()
        bench.pin(proc.pid)
        got = {(t / "comm").read_text().strip(): os.sched_getaffinity(int(t.name)) for t in tasks.iterdir()}
        assert got.pop("CPU 0/TCG") == bench.PIN[0]
        assert got and all(cores == bench.PIN[1] for cores in got.values()), got
    finally:
        proc.kill()
        proc.wait()


def test_pin_on_one_core_says_so(monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench.os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(SystemExit, match="--pin needs two cores"):
        bench.pin_cores()


def test_the_file_sink_is_refused_by_a_qemu_before_8_2(tmp_path):
    old = tmp_path / "qemu-system-x86_64"
    old.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)'\n")
    old.chmod(0o755)
    out = subprocess.run([sys.executable, str(BENCH), "--qemu", str(old), "--sink", "file"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(
        "--sink file needs QEMU 8.2 or later (file: migration); "
        f"{old} says 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)'")
    assert "Traceback" not in out.stderr
    assert _bench().qemu_version("QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1)") == (11, 1)
