"""SIGINT (Ctrl-C) and SIGTERM stop a run within 2 s, however deep the call they land in, with a report
of the verdicts reached marked interrupted; nothing of the run is left behind. A second signal stops at
once."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "conformance" / "adapters" / "c" / "example_device.c"


def _start(tmp_path, *args):
    """The CLI in a session of its own (its process group is the run's), and its stderr as it comes."""
    err = open(tmp_path / "stderr.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "conformance", "run", *args, "--report",
                             str(tmp_path / "r.json")], stdout=subprocess.DEVNULL, stderr=err,
                            start_new_session=True)
    return proc, tmp_path / "stderr.log"


def _wait_for(log: Path, text: str, proc, limit: float = 60) -> None:
    end = time.monotonic() + limit
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < end, f"never printed {text!r}: {log.read_text(errors='replace')}"
        time.sleep(0.05)


def _stops_in(proc, seconds: float) -> float:
    start = time.monotonic()
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running {seconds} s after the signal")
    return time.monotonic() - start


def _group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_search_and_keeps_its_verdicts(tmp_path, sig):
    proc, log = _start(tmp_path, "--dut", "reference", "--role", "device", "--profile", "nightly")
    _wait_for(log, "search 1", proc)
    time.sleep(1.0)  # into the search
    proc.send_signal(sig)
    assert _stops_in(proc, 2.0) < 2.0
    assert proc.returncode == 130, log.read_text()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True
    assert report["summary"]["pass"] > 0  # what it judged before the signal
    assert not list(tmp_path.glob(".r.json.*"))  # written whole, no temporary left


def test_a_signal_inside_a_hung_c_call_stops_the_run_and_leaves_no_process(tmp_path):
    lib = tmp_path / "libhang.so"
    subprocess.run([shutil.which("cc"), "-shared", "-fPIC", "-O2", "-DBROKEN_HANG", "-o", str(lib), str(SRC)],
                   check=True, timeout=120)
    proc, log = _start(tmp_path, "--dut", f"c:{lib}", "--role", "device", "--profile", "dev", "--timeout", "120")
    deadline = time.monotonic() + 60
    while True:  # until the library's process spins in vc_hint_stop
        children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
        busy = [c for c in children if int(c) != proc.pid and _cpu_ticks(int(c)) > 50]
        if busy:
            break
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    assert _stops_in(proc, 2.0) < 2.0
    assert proc.returncode == 130, log.read_text()
    assert json.loads((tmp_path / "r.json").read_text())["interrupted"] is True
    time.sleep(0.2)
    assert _group_is_gone(proc.pid)


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_a_second_signal_stops_at_once(tmp_path):
    """A first signal whose cleanup would take long: the second ends the process without it."""
    code = ("import time\nfrom conformance.interrupt import stop_on_signals\n"
            "with stop_on_signals():\n    try:\n        print('ready', flush=True); time.sleep(60)\n"
            "    except KeyboardInterrupt:\n        time.sleep(60)  # a slow cleanup\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None  # the first one is being handled
    proc.send_signal(signal.SIGINT)
    assert _stops_in(proc, 2.0) < 2.0
    assert proc.returncode == 130
    assert b"stopped at once" in proc.stderr.read()
