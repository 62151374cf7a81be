"""An implementation that lacks a method of its role, or of a capability it declares, or declares a
capability that does not exist, is one line naming the method or capability: from
check_implementation, from the runner before any example, and from the CLI (exit status 2)."""

import subprocess
import sys
import textwrap

import pytest

from conformance.interface import ROLE_PROTOCOLS, Capability, InterfaceError, check_implementation
from conformance.registry import resolve
from conformance.runner import run
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.driver import BalloonDriver
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.virtq import QueueAddresses

#: A vendor's module: each factory builds an implementation with one defect of its interface.
THIRD_PARTY = '''
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.driver import BalloonDriver


class NoRun(BalloonDevice):
    run = None


class StopsWithoutHintStop(BalloonDevice):
    capabilities = frozenset({"hinting", "hint_stop"})
    hint_stop = None


class Teleports(BalloonDevice):
    capabilities = frozenset({"hinting", "teleport"})


class NoInterrupt(BalloonDriver):
    interrupt = None


def no_run(mem):
    return NoRun(mem)


def stop_without_method(mem):
    return StopsWithoutHintStop(mem)


def teleports(mem):
    return Teleports(mem)


def no_interrupt():
    return NoInterrupt()
'''


def _mem():
    return GuestMemory(160 * 4096)


def _queue(cls):
    return cls(GuestMemory(0x80000), QueueAddresses.packed_at(0x1000, 8), 8)


class NoRun(BalloonDevice):
    run = None


class NoSetTarget(BalloonDevice):
    set_target = "not a method"


class StopsWithoutHintStop(BalloonDevice):
    capabilities = frozenset({Capability.HINTING, Capability.HINT_STOP})
    hint_stop = None


class StringCapsWithoutStats(BalloonDevice):
    capabilities = frozenset({"hinting", "stats"})  # strings: the form before the enum
    host_stats = None


class Teleports(BalloonDevice):
    capabilities = frozenset({"hinting", "teleport"})


class CapabilitiesAString(BalloonDevice):
    capabilities = "hinting"


class DeviceReports(BalloonDevice):
    capabilities = frozenset({Capability.REPORT})


class NoInterrupt(BalloonDriver):
    interrupt = None


class OomWithoutMethod(BalloonDriver):
    capabilities = frozenset({Capability.OOM})
    oom = None


class NoPop(SplitQueueDevice):
    pop = None


def check(obj, role, level="balloon"):
    return check_implementation(obj, ROLE_PROTOCOLS[role, level], role)


def one_line(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def test_the_reference_implementations_pass_and_declare_their_capabilities():
    caps = check(BalloonDevice(_mem()), "device")
    assert {Capability.HINTING, Capability.HINT_STOP, Capability.STATS} <= caps
    check(BalloonDriver(), "driver")
    check(_queue(SplitQueueDevice), "device", "virtqueue")


@pytest.mark.parametrize("obj, role, level, expect", [
    (lambda: NoRun(_mem()), "device", "balloon", "device NoRun has no method run() (DeviceUnderTest"),
    (lambda: NoSetTarget(_mem()), "device", "balloon", "has no method set_target()"),
    (lambda: NoInterrupt(), "driver", "balloon",
     "driver NoInterrupt has no method interrupt() (DriverUnderTest"),
    (lambda: _queue(NoPop), "device", "virtqueue", "has no method pop() (DeviceQueueUnderTest"),
])
def test_a_missing_role_method_is_named(obj, role, level, expect):
    with pytest.raises(InterfaceError) as e:
        check(obj(), role, level)
    assert expect in one_line(e)


@pytest.mark.parametrize("obj, role, expect", [
    (lambda: StopsWithoutHintStop(_mem()), "device",
     "declares capability HINT_STOP but has no method hint_stop() (HintStop"),
    (lambda: StringCapsWithoutStats(_mem()), "device",
     "declares capability STATS but has no method host_stats()"),
    (lambda: OomWithoutMethod(), "driver", "declares capability OOM but has no method oom() (DriverOom"),
])
def test_a_declared_capability_without_its_method_is_named(obj, role, expect):
    with pytest.raises(InterfaceError) as e:
        check(obj(), role)
    assert expect in one_line(e)


@pytest.mark.parametrize("obj, expect", [
    (lambda: Teleports(_mem()), "capabilities: 'teleport' is not a capability (one of 'hinting'"),
    (lambda: CapabilitiesAString(_mem()), "capabilities must be a set of Capability, got 'hinting'"),
    (lambda: DeviceReports(_mem()), "declares capability REPORT, which a DeviceUnderTest cannot have"),
])
def test_a_malformed_capability_declaration_is_named(obj, expect):
    with pytest.raises(InterfaceError) as e:
        check(obj(), "device")
    assert expect in one_line(e)


@pytest.fixture
def vendor(tmp_path, monkeypatch):
    """A third-party module in a directory of its own, imported from there (the cwd)."""
    (tmp_path / "vendor_dut.py").write_text(textwrap.dedent(THIRD_PARTY))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "vendor_dut", raising=False)
    return tmp_path


def test_the_runner_raises_before_any_example(vendor):
    seen = []
    with pytest.raises(InterfaceError) as e:
        run(resolve("vendor_dut:no_run", "device"), "dev", progress=seen.append)
    assert one_line(e).startswith("--dut vendor_dut:no_run: device NoRun has no method run()")
    assert not any("search" in s for s in seen), seen


@pytest.mark.parametrize("factory, role, expect", [
    ("no_run", "device", "device NoRun has no method run()"),
    ("stop_without_method", "device", "declares capability HINT_STOP but has no method hint_stop()"),
    ("teleports", "device", "'teleport' is not a capability"),
    ("no_interrupt", "driver", "driver NoInterrupt has no method interrupt()"),
])
def test_the_cli_gives_one_line_and_exit_status_2(vendor, factory, role, expect):
    cmd = [sys.executable, "-m", "conformance", "run", "--dut", f"vendor_dut:{factory}", "--role", role,
           "--profile", "dev"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=vendor)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert len(lines) == 1 and expect in lines[0], out.stderr
    assert lines[0].startswith(f"virtio-conformance: error: --dut vendor_dut:{factory}: ")
    assert out.stdout == ""
