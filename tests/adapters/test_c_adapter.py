"""The C ABI: an example C device and an example C driver, built here with the system cc, pass the
suite; their broken variants fail naming the requirement they break; a bad library is a one-line error."""

import gc
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance.registry import DutError, resolve
from conformance.runner import run

SRC = Path(__file__).resolve().parents[2] / "conformance" / "adapters" / "c" / "example_device.c"


def build(tmp_path, *defines, src=SRC):
    cc = shutil.which("cc")
    assert cc, "tools/test installs a C compiler"
    out = tmp_path / f"lib{src.stem}{''.join('_' + d.lower() for d in defines)}.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", *(f"-D{d}" for d in defines),
                    "-o", str(out), str(src)], check=True, capture_output=True, timeout=120)
    return out


def verdicts(lib, role="device"):
    res = run(resolve(f"c:{lib}", role), "ci", max_failures=2)
    assert not res.errors, res.errors
    return res, {v.requirement.id for v in res.verdicts if v.verdict == "fail"}


def test_example_c_device_passes(tmp_path):
    res, fails = verdicts(build(tmp_path))
    assert fails == set()
    passed = {v.requirement.id for v in res.verdicts if v.verdict == "pass"}
    assert {"BAL-FPH-DEV-2", "BAL-FPH-DEV-3", "SPLIT-DEV-D2", "SPLIT-DEV-10", "BAL-OP-DEV-D1"} <= passed


@pytest.mark.parametrize("define, req", [("BROKEN_REUSE_CMD_ID", "BAL-FPH-DEV-2"),
                                         ("BROKEN_USED_LEN", "SPLIT-DEV-D2")])
def test_broken_c_device_fails_with_the_right_requirement(tmp_path, define, req):
    _, fails = verdicts(build(tmp_path, define))
    assert fails == {req}


def test_library_without_the_abi_is_a_one_line_error(tmp_path):
    with pytest.raises(DutError, match="cannot load the library"):
        resolve(f"c:{tmp_path}/missing.so", "device")
    src = tmp_path / "empty.c"
    src.write_text("int nothing(void) { return 0; }\n")
    lib = tmp_path / "libempty.so"
    subprocess.run([shutil.which("cc"), "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    with pytest.raises(DutError, match="does not export vc_abi_version") as exc:
        resolve(f"c:{lib}", "device")
    assert "\n" not in str(exc.value)


DRIVER_SRC = SRC.with_name("example_driver.c")


def test_example_c_driver_passes(tmp_path):
    res, fails = verdicts(build(tmp_path, src=DRIVER_SRC), "driver")
    assert fails == set()
    passed = {v.requirement.id for v in res.verdicts if v.verdict == "pass"}
    assert {"BAL-OP-DRV-11", "BAL-OP-DRV-7", "BAL-OP-D1", "INIT-DRV-1", "SPLIT-DRV-D6"} <= passed


@pytest.mark.parametrize("define, req", [("BROKEN_STALE_ACTUAL", "BAL-OP-DRV-11"),
                                         ("BROKEN_EARLY_REUSE", "BAL-OP-DRV-7")])
def test_broken_c_driver_fails_with_the_right_requirement(tmp_path, define, req):
    _, fails = verdicts(build(tmp_path, define, src=DRIVER_SRC), "driver")
    assert fails == {req}


def _children() -> set[int]:
    """This process's live children (the C library's process, if one is left)."""
    me = Path(f"/proc/{os.getpid()}/task")
    return {int(c) for t in me.iterdir() for c in (t / "children").read_text().split()}


@pytest.mark.parametrize("define, call, what", [("BROKEN_CRASH", "device.set_target", "(SIGSEGV)"),
                                                ("BROKEN_HANG", "device.hint_stop", "did not return within")])
def test_a_crash_or_a_hang_in_the_library_is_a_reported_error(tmp_path, define, call, what):
    """The library runs in a child process: its segfault or its endless loop is an error of the step
    that called it, with a reproducer, and the suite goes on; no process of it is left behind."""
    before = _children()
    res = run(resolve(f"c:{build(tmp_path, define)}", "device"), "dev", max_failures=1, timeout=0.5)
    errors = [e for e in res.errors if e.kind == "implementation"]
    assert errors, res.errors
    assert call in errors[0].detail and what in errors[0].detail, errors[0].detail
    assert any(call.split(".")[1] in line for line in errors[0].counterexample), errors[0]
    gc.collect()
    assert _children() <= before
