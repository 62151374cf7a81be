"""Checked by mypy, never run (see test_typing.py): the reference and each adapter satisfy the Protocol
of their role and of every capability they declare.

Each function returns an implementation as the Protocol it must satisfy, so mypy names the class and
the member that does not fit. A class's role and capabilities are one combined Protocol below;
test_typing.py checks that these cover what each class declares. The mutants are checked the same way
from a module test_typing.py writes out of DEVICE_MUTANTS, DRIVER_MUTANTS and the virtqueue mutants,
so a new mutant needs no line here.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Protocol

from conformance.adapters.c import isolated
from conformance.adapters.c.isolated import IsolatedCDevice, IsolatedCDriver
from conformance.adapters.c.adapter import CDevice, CDriver, device_factory, driver_factory
from conformance.adapters.linux.adapter import LinuxDriver
from conformance.adapters.qemu.device import QemuBalloon, QemuFactory
from conformance.adapters.qemu.process import QemuProcess
from conformance.adapters.qemu.virtio_pci import VirtioCaps
from conformance.adapters.vhost_user.backend import VhostUserBackend
from conformance.adapters.rust_vmm.adapter import RustVmmQueue
from conformance.interface import (
    DeclaresNumbering, DeviceQueueUnderTest, DeviceUnderTest, DriverOom, DriverQueueUnderTest,
    DriverReporting, DriverUnderTest, GuestDriverUnderTest, HintedPages, HintStop, HostHinting, HostStats,
    NotifiesKicks, OwnsGuestMemory, PerQueueInterrupts, VmmFactory,
)
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.driver import BalloonDriver
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.device import PackedQueueDevice
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver
from refmodel.virtio.virtq import QueueAddresses


# -- what each kind of class declares ------------------------------------------------------------------------
class ReferenceDevice(DeviceUnderTest, HostHinting, HintStop, HintedPages, HostStats,
                      PerQueueInterrupts, DeclaresNumbering, Protocol):
    """BalloonDevice."""


class ReferenceDriver(DriverUnderTest, DriverReporting, DriverOom, DeclaresNumbering, Protocol):
    """BalloonDriver."""


class KickingDriverQueue(DriverQueueUnderTest, NotifiesKicks, Protocol):
    """SplitQueueDriver: it has kicked(), which the virtqueue machine calls when present."""


class CDeviceCaps(DeviceUnderTest, HostHinting, HintStop, HintedPages, PerQueueInterrupts, Protocol):
    """CDevice: request_stats() without host_stats(), so no STATS."""


class QemuDevice(DeviceUnderTest, HostHinting, HostStats, OwnsGuestMemory, Protocol):
    """QemuBalloon: HINTING always, STATS when the factory is asked for it; QEMU's RAM is the guest's."""


# -- the reference -------------------------------------------------------------------------------------------
def reference_device(mem: GuestMemory) -> ReferenceDevice:
    return BalloonDevice(mem)


def reference_driver() -> ReferenceDriver:
    return BalloonDriver()


def reference_device_queue(mem: GuestMemory, addrs: QueueAddresses) -> DeviceQueueUnderTest:
    return SplitQueueDevice(mem, addrs, 8)


def reference_driver_queue(mem: GuestMemory, addrs: QueueAddresses) -> KickingDriverQueue:
    return SplitQueueDriver(mem, addrs, 8)


def reference_packed_device_queue(mem: GuestMemory, addrs: QueueAddresses) -> DeviceQueueUnderTest:
    return PackedQueueDevice(mem, addrs, 8)


def reference_packed_driver_queue(mem: GuestMemory, addrs: QueueAddresses) -> KickingDriverQueue:
    return PackedQueueDriver(mem, addrs, 8)


# -- the adapters --------------------------------------------------------------------------------------------
def c_device(lib: ctypes.CDLL, mem: GuestMemory) -> CDeviceCaps:
    return CDevice(lib, mem)


def c_driver(lib: ctypes.CDLL) -> DriverUnderTest:
    return CDriver(lib)


def c_factories(path: str) -> tuple[Callable[[GuestMemory], DeviceUnderTest],
                                   Callable[[], DriverUnderTest]]:
    return device_factory(path), driver_factory(path)


def c_isolated_device(path: str, mem: GuestMemory) -> CDeviceCaps:
    """What the registry runs: the library in a child process, behind the same Protocols."""
    return IsolatedCDevice(isolated.DeviceFactory(path)._host, mem)


def c_isolated_driver(path: str) -> DriverUnderTest:
    return IsolatedCDriver(isolated.DriverFactory(path)._host)


def qemu_device(qemu: QemuProcess, caps: VirtioCaps) -> QemuDevice:
    return QemuBalloon(qemu, caps)


def qemu_factory() -> VmmFactory:
    return QemuFactory()


def linux_driver() -> GuestDriverUnderTest:
    return LinuxDriver()


def rust_vmm_queue(lib: ctypes.CDLL, mem: GuestMemory, addrs: QueueAddresses) -> DeviceQueueUnderTest:
    return RustVmmQueue(lib, "0.18", mem, addrs, 8)


def vhost_user_backend() -> VhostUserBackend:
    """The backend is no transport itself: it serves a device's transport calls to a real frontend."""
    return VhostUserBackend("balloon.sock", 0, BalloonDevice)


def canary(mem: GuestMemory) -> DriverUnderTest:
    """Must stay an error: mypy runs with --warn-unused-ignores, so an unused ignore here means it took the
    project's classes for Any and checked nothing."""
    return BalloonDevice(mem)  # type: ignore[return-value]
