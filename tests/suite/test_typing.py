"""mypy checks every implementation this project ships against the Protocols of conformance.interface
and refmodel.virtio.transport, as the Protocols of its role and of each capability it declares: the
reference and the adapters in typing_assignments.py, the mutants in a module written here from the
mutant tuples. Only those modules' errors count; a mismatch fails with mypy's own message."""

import ast
import importlib.util
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from conformance.adapters.c.adapter import CDevice, CDriver
from conformance.adapters.c.isolated import IsolatedCDevice, IsolatedCDriver
from conformance.adapters.linux.adapter import LinuxDriver
from conformance.adapters.qemu.device import QemuBalloon
from conformance.adapters.rust_vmm.adapter import RustVmmQueue
from conformance.interface import (
    CAPABILITY_PROTOCOLS, ROLE_PROTOCOLS, DeviceQueueUnderTest, DeviceUnderTest, DriverQueueUnderTest,
    DriverUnderTest, declared_capabilities,
)
from conformance.mutants.device import DEVICE_MUTANTS
from conformance.mutants.driver import DRIVER_MUTANTS
from conformance.mutants import packed
from conformance.mutants.virtq import DEVICE_QUEUE_MUTANTS, DRIVER_QUEUE_MUTANTS
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.driver import BalloonDriver
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver

ROOT = Path(__file__).resolve().parents[2]
MODULE = Path(__file__).with_name("typing_assignments.py")

#: The reference and the adapters, by role (typing_assignments.py checks them).
SHIPPED = {
    DeviceUnderTest: (BalloonDevice, CDevice, IsolatedCDevice, QemuBalloon),
    DriverUnderTest: (BalloonDriver, CDriver, IsolatedCDriver),
    DeviceQueueUnderTest: (SplitQueueDevice, PackedQueueDevice, RustVmmQueue),
    DriverQueueUnderTest: (SplitQueueDriver, PackedQueueDriver),
}
#: The mutants, by role, with the arguments their factory gets (the generated module checks them).
MUTANTS = {
    DeviceUnderTest: (DEVICE_MUTANTS, "mem"),
    DriverUnderTest: (DRIVER_MUTANTS, ""),
    DeviceQueueUnderTest: ((*DEVICE_QUEUE_MUTANTS, *packed.DEVICE_QUEUE_MUTANTS), "mem, addrs, 8"),
    DriverQueueUnderTest: ((*DRIVER_QUEUE_MUTANTS, *packed.DRIVER_QUEUE_MUTANTS), "mem, addrs, 8"),
}


def _wanted(role: type, cls: type) -> list[type]:
    """The role's Protocol, then one per capability ``cls`` declares."""
    caps = sorted(declared_capabilities(cls), key=lambda c: c.value)
    return [role, *(CAPABILITY_PROTOCOLS[c] for c in caps)]


def _name(obj: type) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def mutant_module() -> str:
    """One assignment per mutant and Protocol, so mypy's message names both."""
    modules = sorted({"conformance.interface", *(c.__module__ for cs, _ in MUTANTS.values() for c in cs)})
    lines = ['"""Written by tests/suite/test_typing.py: each mutant as the Protocols it must satisfy."""', "",
             *(f"import {m}" for m in modules), "from refmodel.virtio.memory import GuestMemory",
             "from refmodel.virtio.virtq import QueueAddresses", "", "",
             "def mutants(mem: GuestMemory, addrs: QueueAddresses) -> None:"]
    n = 0
    for role, (classes, args) in MUTANTS.items():
        for cls in classes:
            for proto in _wanted(role, cls):
                lines.append(f"    m{n}: {_name(proto)} = {_name(cls)}({args})")
                n += 1
    return "\n".join(lines) + "\n"


def _load():
    spec = importlib.util.spec_from_file_location("typing_assignments", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _resolve(node: ast.expr, namespace: dict) -> object:
    if isinstance(node, ast.Name):
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(node.value, namespace), node.attr)
    return None


def _checked_as(module) -> dict[type, set[type]]:
    """Class -> the Protocols (with their bases) some function of the module returns an instance of it as."""
    ns, out = vars(module), defaultdict(set)
    for fn in ast.parse(MODULE.read_text()).body:
        if not isinstance(fn, ast.FunctionDef) or fn.returns is None or fn.name == "canary":
            continue
        ann = fn.returns.slice if isinstance(fn.returns, ast.Subscript) else fn.returns
        proto = _resolve(ann, ns) if isinstance(ann, (ast.Name, ast.Attribute)) else None
        if not isinstance(proto, type):
            continue
        for ret in (n for n in ast.walk(fn) if isinstance(n, ast.Return) and n.value is not None):
            for value in ret.value.elts if isinstance(ret.value, ast.List) else [ret.value]:
                cls = _resolve(value.func, ns) if isinstance(value, ast.Call) else None
                if isinstance(cls, type):
                    out[cls] |= set(proto.__mro__)
    return out


def test_the_module_checks_each_shipped_class_as_its_role_and_declared_capabilities():
    module = _load()
    got = _checked_as(module)
    missing = {_name(cls): [p.__name__ for p in _wanted(role, cls) if p not in got[cls]]
               for role, classes in SHIPPED.items() for cls in classes}
    # Linux's driver has a machine of its own, so no DriverUnderTest: what that machine calls instead.
    linux = _wanted(module.GuestDriverUnderTest, LinuxDriver)
    missing[_name(LinuxDriver)] = [p.__name__ for p in linux if p not in got[LinuxDriver]]
    missing = {cls: protos for cls, protos in missing.items() if protos}
    assert not missing, f"{MODULE.name} does not check: " + "; ".join(
        f"{cls} as {', '.join(protos)}" for cls, protos in missing.items())
    assert set(SHIPPED) == set(MUTANTS) == set(ROLE_PROTOCOLS.values())


def test_mypy_finds_no_protocol_mismatch(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e .[test])")
    mutants = tmp_path / "typing_mutants.py"
    mutants.write_text(mutant_module())
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    # Only these modules' errors count (--follow-imports=silent); --warn-unused-ignores makes the canary in
    # typing_assignments.py fail if mypy ever resolved the project's classes to Any.
    out = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
                          "--warn-unused-ignores", "--cache-dir", str(tmp_path / "mypy-cache"), str(MODULE),
                          str(mutants)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"mypy:\n{out.stdout}{out.stderr}"
