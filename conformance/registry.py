"""The implementations the suite knows by name, and the zero-argument machine class for each.

Built-ins: the reference device and driver, and every mutant. Third parties are named
``module:factory``: for ``--role device`` the factory takes the guest memory and returns a device;
for ``--role driver`` it takes nothing and returns a driver. The module is imported with the current
directory first on ``sys.path``, as ``python -m`` does, so ``--dut mydev:make`` finds ``./mydev.py``.

Each implementation gets its own machine class, registered in this module under a stable name, so
the reproducer Hypothesis prints (``state = ReferenceDeviceConformance()``) runs as is.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.driver import BalloonDriver

from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver

from conformance.mutants import balloon as mutants, packed as packed_mutants, virtq as virtq_mutants
from conformance.mutants import proposals as proposal_mutants
from conformance.machines.device import DeviceConformance
from conformance.machines.driver import DriverConformance
from conformance.machines.base import ConformanceMachine
from conformance.machines.virtq import (QUEUE_MACHINES, DeviceQueueConformance, DriverQueueConformance,
                                       PackedDeviceQueueConformance, PackedDriverQueueConformance)

ROLES = ("device", "driver")


class DutError(ValueError):
    """A --dut name or factory that cannot be used (one line, names the problem)."""


@attrs.frozen
class Implementation:
    name: str
    role: str
    factory: Callable[..., Any]
    description: str
    breaks: tuple[str, ...] = ()  # for mutants: the requirement(s) it is built to break
    machine: type | None = None  # a machine of its own (a real guest); else the role's machine
    ring: str = "split"  # balloon level: the virtqueue layout the run negotiates (--ring packed: VIRTIO_F_RING_PACKED)
    proposals: tuple[str, ...] = ()  # balloon level: the proposal profiles the run selects (--proposal)


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _ids(breaks: str | tuple[str, ...]) -> tuple[str, ...]:
    return (breaks,) if isinstance(breaks, str) else tuple(breaks)


def _builtins() -> dict[tuple[str, str], Implementation]:
    out = {
        ("reference", "device"): Implementation("reference", "device", lambda mem: BalloonDevice(mem),
                                                "the reference device (refmodel.balloon.device)"),
        ("reference", "driver"): Implementation("reference", "driver", lambda: BalloonDriver(),
                                                "the reference driver (refmodel.balloon.driver)"),
    }
    # Virtqueue level: one split virtqueue implementation, checked on SPLIT-* only.
    out["virtq-reference", "device"] = Implementation(
        "virtq-reference", "device", SplitQueueDevice, "the reference device-side split virtqueue "
        "(refmodel.virtio.split.device)", machine=DeviceQueueConformance)
    out["virtq-reference", "driver"] = Implementation(
        "virtq-reference", "driver", SplitQueueDriver, "the reference driver-side split virtqueue "
        "(refmodel.virtio.split.driver)", machine=DriverQueueConformance)
    for role, group, machine in (("device", virtq_mutants.DEVICE_QUEUE_MUTANTS, DeviceQueueConformance),
                                 ("driver", virtq_mutants.DRIVER_QUEUE_MUTANTS, DriverQueueConformance)):
        for qcls in group:
            name = f"virtq-mutant-{_kebab(qcls.__name__)}"
            out[name, role] = Implementation(name, role, qcls, (qcls.__doc__ or "").strip(),
                                             _ids(qcls.breaks), machine=machine)
    # Virtqueue level, packed ring (--ring packed): checked on PACKED-* only.
    out["virtq-packed-reference", "device"] = Implementation(
        "virtq-packed-reference", "device", PackedQueueDevice, "the reference device-side packed virtqueue "
        "(refmodel.virtio.packed.device)", machine=PackedDeviceQueueConformance)
    out["virtq-packed-reference", "driver"] = Implementation(
        "virtq-packed-reference", "driver", PackedQueueDriver, "the reference driver-side packed virtqueue "
        "(refmodel.virtio.packed.driver)", machine=PackedDriverQueueConformance)
    packed: tuple[tuple[str, tuple[type, ...], type], ...] = (
        ("device", packed_mutants.DEVICE_QUEUE_MUTANTS, PackedDeviceQueueConformance),
        ("driver", packed_mutants.DRIVER_QUEUE_MUTANTS, PackedDriverQueueConformance))
    for prole, pgroup, pmachine in packed:
        for pcls in pgroup:
            name = f"virtq-packed-mutant-{_kebab(pcls.__name__)}"
            out[name, prole] = Implementation(name, prole, pcls, (pcls.__doc__ or "").strip(),
                                              _ids(getattr(pcls, "breaks")), machine=pmachine)
    for dcls in mutants.DEVICE_MUTANTS:  # over split rings, or the ring a mutant names (over_ring: packed)
        name = f"mutant-{_kebab(dcls.__name__)}"
        out[name, "device"] = Implementation(name, "device", dcls, (dcls.__doc__ or "").strip(),
                                             _ids(dcls.breaks), ring=getattr(dcls, "over_ring", "split"))
    for role, pgroup in (("device", proposal_mutants.DEVICE_MUTANTS), ("driver", proposal_mutants.DRIVER_MUTANTS)):
        for mcls in pgroup:  # proposal profiles' mutants: each runs under its profile (--proposal)
            name = f"mutant-{_kebab(mcls.__name__)}"
            out[name, role] = Implementation(name, role, mcls,
                                             (mcls.__doc__ or "").strip(), _ids(mcls.breaks),
                                             proposals=(mcls.profile,))
    for drcls in mutants.DRIVER_MUTANTS:
        name = f"mutant-{_kebab(drcls.__name__)}"
        out[name, "driver"] = Implementation(name, "driver", drcls, (drcls.__doc__ or "").strip(),
                                             _ids(drcls.breaks))
    return out


BUILTIN = _builtins()


def _cwd_on_path() -> None:
    """Import ``module:factory`` from the current directory, as ``python -m`` and ``pytest`` do: an
    installed console script has only its own bin directory first on sys.path."""
    cwd = os.getcwd()
    if not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path):
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a module written since the last import (a test's tmp_path) is found


def _load_factory(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise DutError(f"--dut {spec!r}: expected a built-in name or module:factory")
    _cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise DutError(f"--dut {spec!r}: cannot import {module_name!r}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DutError(f"--dut {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DutError(f"--dut {spec!r}: {attr!r} is not callable")
    return obj


LEVELS = ("balloon", "virtqueue")
#: Virtqueue layouts (``--ring``): a virtqueue-level run checks that layout's queue; a balloon-level run
#: negotiates it (packed: VIRTIO_F_RING_PACKED).
RINGS = tuple(QUEUE_MACHINES)
#: rust-vmm's virtio-queue as Debian packages it, built on first use (conformance.adapters.rust_vmm).
RUST_VMM = {"rust-vmm-virtio-queue-0.14": "make_014", "rust-vmm-virtio-queue-0.18": "make_018"}


def ring_of(impl: Implementation) -> str | None:
    """The virtqueue layout a virtqueue-level implementation is checked as (None: a balloon-level one)."""
    return next((ring for ring, machines in QUEUE_MACHINES.items() if impl.machine in machines), None)


def resolve(dut: str, role: str, *, qemu_binary: str | None = None, uml_binary: str | None = None,
            level: str = "balloon", ring: str | None = None, kernel: str | None = None) -> Implementation:
    """``ring`` (virtqueue level only): split or packed; None takes a built-in's own, else split.
    ``kernel``: the cloud kernel of ``--dut linux-qemu`` (a Debian release or a build's path)."""
    if role not in ROLES:
        raise DutError(f"--role {role!r}: expected one of {', '.join(ROLES)}")
    if level not in LEVELS:
        raise DutError(f"--level {level!r}: expected one of {', '.join(LEVELS)}")
    if ring is not None and ring not in RINGS:
        raise DutError(f"--ring {ring!r}: expected one of {', '.join(RINGS)}")
    if ring == "packed" and level == "balloon":
        return _over_packed(resolve(dut, role, qemu_binary=qemu_binary, uml_binary=uml_binary, kernel=kernel))
    if level == "virtqueue":
        if dut == "reference":
            dut = "virtq-packed-reference" if ring == "packed" else "virtq-reference"
        if (dut, role) in BUILTIN:
            impl = BUILTIN[dut, role]
            own = ring_of(impl)
            if own is None:
                raise DutError(f"--dut {dut!r} is a balloon {role}, not a virtqueue")
            if ring is not None and own != ring:
                raise DutError(f"--dut {dut!r} is a {own} virtqueue; use --ring {own}")
            return impl
        if dut in RUST_VMM and ring == "packed":
            raise DutError(f"--dut {dut}: the adapter drives its split queue only; use --ring split")
        if dut in RUST_VMM:
            if role != "device":
                raise DutError(f"--dut {dut} is a device-side queue; use --role device")
            return Implementation(dut, role, _load_factory(f"conformance.adapters.rust_vmm.adapter:{RUST_VMM[dut]}"),
                                  f"rust-vmm virtio-queue {dut.rsplit('-', 1)[1]} (Debian's packaged crate)",
                                  machine=DeviceQueueConformance)
        if ":" not in dut or dut.startswith("c:"):
            raise DutError(f"--dut {dut!r}: a virtqueue under test is a built-in virtq-* name or module:factory")
        machine = QUEUE_MACHINES[ring or "split"][ROLES.index(role)]
        kind = "packed virtqueue" if ring == "packed" else "virtqueue"
        return Implementation(dut, role, _load_factory(dut), f"third-party {role}-side {kind} from {dut}",
                              machine=machine)
    if (dut, role) in BUILTIN:
        impl = BUILTIN[dut, role]
        if ring is not None and ring != impl.ring:
            raise DutError(f"--dut {dut!r} runs over {impl.ring} rings; use --ring {impl.ring}")
        return impl
    if dut == "qemu":
        from conformance.adapters.qemu.device import QemuFactory
        from conformance.adapters.qemu.process import QemuError

        if role != "device":
            raise DutError("--dut qemu is a device; use --role device")
        try:
            qemu = QemuFactory(qemu_binary)
        except QemuError as e:
            raise DutError(f"--dut qemu: {e}") from None
        return Implementation("qemu", "device", qemu,
                              f"QEMU virtio-balloon-pci ({qemu_binary or 'from PATH'})")
    if dut == "linux":
        from conformance.adapters.linux.adapter import LinuxFactory
        from conformance.adapters.linux.guest import GuestError
        from conformance.adapters.linux.machine import LinuxDriverConformance

        if role != "driver":
            raise DutError("--dut linux is a driver; use --role driver")
        try:
            linux = LinuxFactory(uml_binary)
        except GuestError as e:
            raise DutError(f"--dut linux: {e}") from None
        return Implementation("linux", "driver", linux, linux.version, machine=LinuxDriverConformance)
    if dut == "linux-qemu":
        from conformance.adapters.linux.guest import GuestError
        from conformance.adapters.linux.qemu_machine import LinuxQemuDriverConformance
        from conformance.adapters.linux.qemu_route import QemuLinuxFactory

        if role != "driver":
            raise DutError("--dut linux-qemu is a driver; use --role driver")
        try:
            lq = QemuLinuxFactory(kernel, qemu_binary)
        except GuestError as e:
            raise DutError(f"--dut linux-qemu: {e}") from None
        return Implementation("linux-qemu", "driver", lq, lq.version, machine=LinuxQemuDriverConformance)
    if dut.startswith("c:"):
        from conformance.adapters.c.adapter import CAbiError
        from conformance.adapters.c.isolated import device_factory, driver_factory

        make = device_factory if role == "device" else driver_factory
        try:
            return Implementation(dut, role, make(dut[2:]), f"C {role} from {dut[2:]} (in a child process)")
        except CAbiError as e:
            raise DutError(str(e)) from None
    if ":" not in dut:
        roles = [r for (n, r) in BUILTIN if n == dut]
        if roles:
            raise DutError(f"--dut {dut!r} is a {roles[0]}; use --role {roles[0]}")
        raise DutError(f"--dut {dut!r}: no such implementation (see 'virtio-conformance list')")
    return Implementation(dut, role, _load_factory(dut), f"third-party {role} from {dut}")


#: Balloon-level implementations resolved for packed rings, by (name, role, QEMU binary): one object each,
#: so every resolve of it gives the same machine class.
_PACKED: dict[tuple[str, str, str | None], Implementation] = {}


def _over_packed(impl: Implementation) -> Implementation:
    """``impl`` run over packed rings (--ring packed at the balloon level): the machine's reference side
    offers or accepts VIRTIO_F_RING_PACKED, and a built-in device (the reference, a mutant) or QEMU
    (``packed=on``) offers it too; on the QEMU-guest route (linux-qemu) the reference device behind its
    vhost-user backend offers it."""
    if impl.name == "linux":
        from conformance.adapters.linux.machine import NO_PACKED_RING

        raise DutError(f"--dut linux: --ring packed is not available on the UML route: {NO_PACKED_RING}")
    if impl.ring == "packed":
        return impl  # a mutant that runs over packed rings already (over_ring)
    if impl.machine is not None and impl.name != "linux-qemu":
        raise DutError(f"--dut {impl.name}: --ring packed is not available on this route yet (its transport "
                       "serves split rings only)")
    key = (impl.name, impl.role, getattr(impl.factory, "binary", None) or getattr(impl.factory, "kernel", None))
    if key in _PACKED:
        return _PACKED[key]
    factory = impl.factory
    if impl.name == "qemu":
        factory = impl.factory.with_packed()
    elif (impl.name, impl.role) in BUILTIN and impl.role == "device":
        from refmodel.balloon.device import DEFAULT_OFFER
        from refmodel.virtio.features import Feature

        cls = BalloonDevice if impl.name == "reference" else impl.factory
        factory = functools.partial(cls, offered=DEFAULT_OFFER | Feature.VIRTIO_F_RING_PACKED.mask)
    _PACKED[key] = attrs.evolve(impl, factory=factory, ring="packed",
                                description=f"{impl.description}, over packed rings")
    return _PACKED[key]


#: Balloon-level implementations resolved for proposal profiles, by (name, role, profiles): one object
#: each, so every resolve of it gives the same machine class.
_PROPOSED: dict[tuple[str, str, tuple[str, ...]], Implementation] = {}


def with_proposals(impl: Implementation, names: Iterable[str]) -> Implementation:
    """``impl`` run under the proposal profiles ``names`` (and any its own mutant belongs to): the
    machine's reference side offers or accepts their bits and checks their requirements, and the
    reference device or driver itself runs in that mode. Unknown names, profiles that cannot run, or two
    on one feature bit are a :class:`DutError`."""
    from refmodel.balloon.proposals.reference import ProfileNotRunnable, device_class, driver_class, proposals_of

    try:
        ps = tuple(p.value for p in proposals_of((*impl.proposals, *names)))
    except ProfileNotRunnable as e:
        raise DutError(f"--proposal {e}") from None
    if not ps or ps == impl.proposals:
        return impl
    if impl.machine is not None or ring_of(impl) is not None:
        raise DutError(f"--dut {impl.name}: --proposal needs a balloon-level device or driver")
    key = (impl.name, impl.role, ps)
    if key not in _PROPOSED:
        factory = impl.factory
        if impl.name == "reference":
            cls = device_class(ps) if impl.role == "device" else driver_class(ps)
            factory = cls if impl.role == "device" else (lambda: cls())
        _PROPOSED[key] = attrs.evolve(impl, factory=factory, proposals=ps,
                                      description=f"{impl.description}, under {', '.join(ps)}")
    return _PROPOSED[key]


def _class_name(impl: Implementation) -> str:
    base = "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", impl.name) if p)
    base += "".join(p.title().replace("-", "") for p in impl.proposals)
    return f"{base}{'Packed' if impl.ring == 'packed' else ''}{impl.role.capitalize()}Conformance"


def machine_for(impl: Implementation) -> type[ConformanceMachine]:
    """The zero-argument machine class for ``impl``, importable from this module."""
    name = _class_name(impl)
    existing = globals().get(name)
    if isinstance(existing, type) and getattr(existing, "implementation", None) == impl:
        return existing
    base = impl.machine or (DeviceConformance if impl.role == "device" else DriverConformance)
    bases: tuple[type, ...] = (base,)
    extra: dict[str, Any] = {}
    if impl.proposals:
        from conformance.machines.proposals import machine as proposal_machine

        bases, extra = proposal_machine(base, impl.role, impl.proposals)
    attrs_ = {"factory": staticmethod(impl.factory), "implementation": impl, "__module__": __name__,
              "__doc__": f"{base.__doc__}\n\nUnder test: {impl.description}"}
    if impl.ring != "split":
        attrs_["ring"] = impl.ring
    cls = type(name, bases, {**attrs_, **extra})
    globals()[name] = cls
    return cls


for _impl in BUILTIN.values():
    machine_for(_impl)
