"""mypy checks every implementation this project ships against the Protocols of conformance.interface
and refmodel.virtio.transport: typing_assignments.py returns each one as the Protocols of its role and
declared capabilities. Only that module's errors count; a mismatch fails with mypy's own message."""

import ast
import importlib.util
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from conformance.adapters.c.adapter import CDevice, CDriver
from conformance.adapters.linux.adapter import LinuxDriver
from conformance.adapters.qemu.device import QemuBalloon
from conformance.adapters.rust_vmm.adapter import RustVmmQueue
from conformance.interface import (
    CAPABILITY_PROTOCOLS, ROLE_PROTOCOLS, DeviceQueueUnderTest, DeviceUnderTest, DriverQueueUnderTest,
    DriverUnderTest, declared_capabilities,
)
from conformance.mutants.device import DEVICE_MUTANTS
from conformance.mutants.driver import DRIVER_MUTANTS
from conformance.mutants.virtq import DEVICE_QUEUE_MUTANTS, DRIVER_QUEUE_MUTANTS
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.driver import BalloonDriver
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver

ROOT = Path(__file__).resolve().parents[2]
MODULE = Path(__file__).with_name("typing_assignments.py")

#: Every class the suite runs, by role.
ROLES = {
    DeviceUnderTest: (BalloonDevice, CDevice, QemuBalloon, *DEVICE_MUTANTS),
    DriverUnderTest: (BalloonDriver, CDriver, *DRIVER_MUTANTS),
    DeviceQueueUnderTest: (SplitQueueDevice, RustVmmQueue, *DEVICE_QUEUE_MUTANTS),
    DriverQueueUnderTest: (SplitQueueDriver, *DRIVER_QUEUE_MUTANTS),
}


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


def test_the_module_checks_every_class_as_its_role_and_declared_capabilities():
    module = _load()
    got = _checked_as(module)
    missing = []
    for role, classes in ROLES.items():
        for cls in classes:
            want = {role} | {CAPABILITY_PROTOCOLS[c] for c in declared_capabilities(cls)}
            missing += sorted(f"{cls.__module__}.{cls.__qualname__} as {p.__name__}" for p in want - got[cls])
    # Linux's driver has a machine of its own, so no DriverUnderTest: what that machine calls instead.
    caps = declared_capabilities(LinuxDriver)
    linux = {module.GuestDriverUnderTest, *(CAPABILITY_PROTOCOLS[c] for c in caps)}
    missing += sorted(f"LinuxDriver as {p.__name__}" for p in linux - got[LinuxDriver])
    assert not missing, f"{MODULE.name} does not check: " + "; ".join(missing)
    assert set(ROLES) == set(ROLE_PROTOCOLS.values())


def test_mypy_finds_no_protocol_mismatch(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e .[test])")
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    # Only the module's own errors count (--follow-imports=silent); --warn-unused-ignores makes its canary
    # fail if mypy ever resolved the project's classes to Any.
    out = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
                          "--warn-unused-ignores", "--cache-dir", str(tmp_path / "mypy-cache"), str(MODULE)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"mypy {MODULE.name}:\n{out.stdout}{out.stderr}"
