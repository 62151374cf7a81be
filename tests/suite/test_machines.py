"""The conformance machines' own parts: the step decorator, the notification judgement, how boot reads an
implementation's capabilities, and how driver calls and queue-full refusals are recognised."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from conformance.checks import Recorder
from conformance.harness import Guarded, ImplementationError
from conformance.interface import Capability, InterfaceError
from conformance.machines.base import ConformanceMachine, step
from conformance.machines.device import DeviceConformance
from conformance.machines.device.boot import make_device, queue_numbering
from conformance.machines.driver import DriverConformance
from conformance.machines.notify import Kind, Suppression
from conformance.machines.virtq import DeviceQueueConformance, DriverQueueConformance
from conformance.machines.virtq.driver import queue_capabilities, queue_full
from refmodel.balloon.device import BalloonDevice
from refmodel.balloon.queues import QueueNumbering
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.split.driver import IndirectArena, SplitQueueDriver
from refmodel.virtio.split.layout import AVAIL_FLAGS, USED_FLAGS, avail_event_offset, used_event_offset
from refmodel.virtio.virtq import QueueAddresses

MACHINES = (DeviceConformance, DriverConformance, DeviceQueueConformance, DriverQueueConformance)


class _Machine(ConformanceMachine):
    ran: list[str]

    @step(when=lambda self: self.ready)
    def act(self, req: str | None = None) -> None:
        self.ran.append("act")
        if req:
            raise PeerSpecViolation(req, "broken")


def _machine(tolerated: frozenset[str] = frozenset()) -> _Machine:
    m = _Machine()
    m.ran, m.ready = [], True
    type(m).recorder = Recorder(tolerated=tolerated)
    return m


def test_a_step_needs_the_boot_and_its_condition():
    m = _machine()
    rule = next(r for r in _Machine.setup_state().rules if r.function.__name__ == "act")
    assert not all(p(m) for p in rule.preconditions)  # not booted yet
    m.booted = True
    assert all(p(m) for p in rule.preconditions)
    m.ready = False
    assert not all(p(m) for p in rule.preconditions)


def test_a_step_skips_its_body_once_the_example_ended():
    m = _machine()
    m.booted, m.ended = True, True
    m.act()
    assert m.ran == []


def test_a_step_ends_the_example_quietly_on_a_known_deviation_only():
    m = _machine(frozenset({"SPLIT-DEV-9"}))
    m.booted = True
    m.act("SPLIT-DEV-9")
    assert m.ended and "SPLIT-DEV-9" in m.R.tolerated_seen
    m = _machine()
    m.booted = True
    with pytest.raises(PeerSpecViolation):
        m.act("SPLIT-DEV-9")
    assert not m.ended


def test_machines_are_zero_argument_and_no_class_is_long():
    for cls in MACHINES:
        cls()
        for klass in cls.__mro__:
            if klass.__module__.startswith("conformance."):
                assert len(inspect.getsourcelines(klass)[0]) <= 250, klass.__qualname__


def _ring() -> tuple[GuestMemory, QueueAddresses]:
    return GuestMemory(0x10000), QueueAddresses.packed_at(0x1000, 8)


def test_used_buffer_notification_due():
    mem, addrs = _ring()
    mem.write_u16(addrs.avail + AVAIL_FLAGS, 1)
    wish = Suppression.read(Kind.USED_BUFFER, mem, addrs, 8, False)
    assert not wish.due(5, 3) and wish.req(False) == "SPLIT-DEV-9" and wish.ignored_req == "SPLIT-DEV-8"
    mem.write_u16(addrs.avail + AVAIL_FLAGS, 0)
    assert Suppression.read(Kind.USED_BUFFER, mem, addrs, 8, False).req(True) == "SPLIT-DEV-10"
    mem.write_u16(addrs.avail + used_event_offset(8), 4)
    wish = Suppression.read(Kind.USED_BUFFER, mem, addrs, 8, True)
    assert wish.due(5, 3) and not wish.due(4, 3) and wish.ignored_req is None
    assert (wish.req(True), wish.req(False)) == ("SPLIT-DEV-12", "SPLIT-DEV-13")
    assert str(wish) == "used_event 4"


def test_available_buffer_notification_due_and_the_two_windows():
    mem, addrs = _ring()
    mem.write_u16(addrs.used + USED_FLAGS, 1)
    wish = Suppression.read(Kind.AVAILABLE_BUFFER, mem, addrs, 8, False)
    assert not wish.due(2, 1) and wish.req(False) == "SPLIT-DRV-20" and wish.ignored_req == "SPLIT-DRV-19"
    mem.write_u16(addrs.used + avail_event_offset(8), 1)
    wish = Suppression.read(Kind.AVAILABLE_BUFFER, mem, addrs, 8, True)
    # Event 1 lies in the batch since the last notification (0..3), not in the one since the last decision.
    assert wish.allowed(True, 3, 2, 0) == (False, True)
    assert wish.allowed(False, 3, 2, 0) == (False, True)
    assert wish.allowed(False, 3, 1, 0) == (True, False) and wish.req(True) == "SPLIT-DRV-23"


def test_queue_full_is_recognised_by_type_through_the_guarded_proxy():
    mem, addrs = GuestMemory(0x80000), QueueAddresses.packed_at(0x1000, 1)
    q = Guarded(SplitQueueDriver(mem, addrs, 1, indirect_arena=IndirectArena(0x60000, 0x10000)),
                "driver queue")
    q.add([(0x20000, 8)])
    with pytest.raises(ImplementationError) as full:
        q.add([(0x20000, 8)])
    assert queue_full(full.value)
    assert not queue_full(ImplementationError("driver queue.add", "raised QueueFull: a different class"))


def test_a_driver_queue_with_a_callable_kicked_counts_as_declaring_kicked():
    mem, addrs = GuestMemory(0x80000), QueueAddresses.packed_at(0x1000, 4)
    assert Capability.KICKED in queue_capabilities(SplitQueueDriver(mem, addrs, 4))

    class Silent(SplitQueueDriver):
        kicked = None  # type: ignore[assignment]

    assert Capability.KICKED not in queue_capabilities(Silent(mem, addrs, 4))


def test_boot_raises_a_one_line_interface_error_for_a_missing_method():
    class NoTarget:
        def __init__(self, mem: GuestMemory) -> None:
            self.inner = BalloonDevice(mem)

        def __getattr__(self, name: str):
            if name == "set_target":
                raise AttributeError(name)
            return getattr(self.inner, name)

    machine = type("NoTargetConformance", (DeviceConformance,), {"factory": staticmethod(NoTarget)})()
    with pytest.raises(InterfaceError) as e:
        machine.boot(drop=frozenset(), queue_size=4)
    assert "set_target()" in str(e.value) and "\n" not in str(e.value)


def test_a_vmm_factory_must_give_a_device_that_owns_its_memory():
    class Vmm:
        provides_memory = True

        def __call__(self) -> object:
            return SimpleNamespace(mem=GuestMemory(0x10000))  # no reserved_pages

    with pytest.raises(InterfaceError, match="OwnsGuestMemory"):
        make_device(Vmm())
    raw, guest = make_device(lambda mem: BalloonDevice(mem))
    assert raw.mem is guest.mem


def test_queue_numbering_is_declared_as_the_enum():
    assert queue_numbering(SimpleNamespace()) is QueueNumbering.COMPACT_BY_OFFERED
    assert queue_numbering(SimpleNamespace(numbering=QueueNumbering.FIXED)) is QueueNumbering.FIXED
    with pytest.raises(InterfaceError, match="QueueNumbering"):
        queue_numbering(SimpleNamespace(numbering="fixed"))


def test_a_latched_violation_is_the_drivers_and_keeps_what_the_driver_raised():
    m = DriverConformance()
    m.ref = SimpleNamespace(error=None)
    assert m._step(lambda x: x + 1, 1) == 2
    m.ref = SimpleNamespace(error=PeerSpecViolation("BAL-OP-D1", "pfn 9"))
    with pytest.raises(PeerSpecViolation) as e:
        m._step(lambda: None)
    assert e.value.req_id == "BAL-OP-D1" and e.value.__cause__ is None

    def crash() -> None:
        raise ImplementationError("driver.run", "raised KeyError: 3")

    with pytest.raises(PeerSpecViolation) as e:
        m._step(crash)
    assert e.value.req_id == "BAL-OP-D1" and isinstance(e.value.__cause__, ImplementationError)
