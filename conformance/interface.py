"""What an implementation under test provides: one Protocol per role and level, one per capability.

An implementer writes a factory that returns an object satisfying the role's Protocol:

========================  ======================================  ===========================================
role, level               Protocol                                factory
========================  ======================================  ===========================================
device, balloon           :class:`DeviceUnderTest`                ``make(mem: GuestMemory) -> device``
driver, balloon           :class:`DriverUnderTest`                ``make() -> driver``
device, virtqueue         :class:`DeviceQueueUnderTest`           ``make(mem, addrs, size, *, event_idx, ...)``
driver, virtqueue         :class:`DriverQueueUnderTest`           ``make(mem, addrs, size, *, event_idx, ...)``
========================  ======================================  ===========================================

Optional abilities are declared in ``capabilities`` (a set of :class:`Capability`), and each has a small
runtime-checkable Protocol (:data:`CAPABILITY_PROTOCOLS`). At boot the suite checks that the object has
every method of its role and of every capability it declares (:func:`check_implementation`); a missing
one is a one-line :class:`InterfaceError` naming the method. Checks that need a capability the
implementation does not declare are reported ``skipped``, naming the capability.

The transport half of a device is :class:`refmodel.virtio.transport.Transport`, which lives in the model
because the reference driver talks to it.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from refmodel.balloon.queues import QueueNumbering
from refmodel.capabilities import Capability
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.transport import Interrupts, Transport
from refmodel.virtio.virtq import Chain, UsedBuffer

__all__ = [
    "CAPABILITY_PROTOCOLS", "Capability", "DeclaresNumbering", "GuestDriverUnderTest", "DeviceQueueUnderTest", "DeviceUnderTest",
    "DriverOom", "DriverQueueUnderTest", "DriverReporting", "DriverUnderTest", "HintStop", "HintedPages",
    "HostHinting", "HostStats", "InterfaceError", "Interrupts", "LagsInterrupts", "NotifiesKicks", "OwnsGuestMemory",
    "PerQueueInterrupts", "ROLE_PROTOCOLS", "RETURNS", "Transport", "VmmFactory", "check_implementation",
    "declared_capabilities",
]


class InterfaceError(ValueError):
    """An implementation that does not provide what it must or what it declares (one line)."""


# -- the roles ------------------------------------------------------------------------------------------
@runtime_checkable
class DeviceUnderTest(Transport, Protocol):
    """A balloon device: the transport (§4.1.4) and the host's side of §5.5."""

    def run(self) -> None:
        """Do the queue work that is pending: the device acts only here (a VMM: wait until it is idle)."""
        ...

    def set_target(self, num_pages: int) -> None:
        """The host writes ``num_pages`` (§5.5.4) and sends a configuration change notification."""
        ...


@runtime_checkable
class DriverUnderTest(Protocol):
    """A balloon driver, given a device to probe and the guest it runs in."""

    def probe(self, device: Transport, guest: GuestOS) -> bool:
        """Initialize ``device`` (§3.1.1) and start the balloon; False if the driver gives up."""
        ...

    def interrupt(self, queues: frozenset[int], config: bool) -> None:
        """The device signalled used buffers on ``queues`` and/or a configuration change."""
        ...

    def run(self) -> None:
        """Do the work that is pending (harvest used buffers, follow ``num_pages``, hint, report)."""
        ...


@runtime_checkable
class DeviceQueueUnderTest(Protocol):
    """The device side of one split virtqueue (§2.7), reading driver-written rings from guest memory."""

    def available(self) -> int:
        """How many heads the driver made available that the device has not popped."""
        ...

    def pop(self) -> Chain | None:
        """The next available chain, parsed from untrusted memory, or None if there is none."""
        ...

    def add_used(self, head: int, length: int) -> None:
        """Return chain ``head`` with ``length`` bytes written (§2.7.8)."""
        ...

    def notify_needed(self) -> bool:
        """Whether the driver wants a used buffer notification now (§2.7.7.2, §2.7.10)."""
        ...

    def set_avail_notifications(self, enabled: bool) -> None:
        """Ask for, or suppress, available buffer notifications (§2.7.7.1, §2.7.10)."""
        ...


@runtime_checkable
class DriverQueueUnderTest(Protocol):
    """The driver side of one split virtqueue (§2.7), reading device-written rings from guest memory."""

    def add(self, readable: Sequence[tuple[int, int]] = (), writable: Sequence[tuple[int, int]] = (), *,
            token: object = None, indirect: bool = False, table_write_flag: bool = False) -> int:
        """Place a chain of (address, length) buffers, readable then writable; return its head."""
        ...

    def publish(self) -> bool:
        """Make the added chains available (§2.7.13); True if a notification is needed."""
        ...

    def notify_needed(self) -> bool:
        """Whether the device wants an available buffer notification now (§2.7.10)."""
        ...

    def harvest(self) -> list[UsedBuffer]:
        """Take the used buffers the device returned, in used-ring order (§2.7.14)."""
        ...

    def set_used_notifications(self, enabled: bool) -> None:
        """Ask for, or suppress, used buffer notifications (§2.7.7.2, §2.7.10)."""
        ...


# -- the capabilities -------------------------------------------------------------------------------------
@runtime_checkable
class HostHinting(Protocol):
    """The host starts and finishes free page hinting rounds (§5.5.6.5)."""

    def hint_start(self) -> int:
        """Publish a new command ID in ``free_page_hint_cmd_id`` and notify; return the ID."""
        ...

    def hint_done(self) -> None:
        """Write DONE: the driver may reuse every hinted page (§5.5.6.5)."""
        ...


@runtime_checkable
class HintStop(Protocol):
    """The host ends a round early (§5.5.6.5)."""

    def hint_stop(self) -> None:
        """Write STOP to ``free_page_hint_cmd_id`` and notify."""
        ...


@runtime_checkable
class HintedPages(Protocol):
    """Which pages the host would leave out of a migration now (the effect of the hints it applied)."""

    def hinted_pages(self) -> int:
        """A bitmap (bit n = PFN n) of the pages the host treats as free."""
        ...


@runtime_checkable
class HostStats(Protocol):
    """The host asks for memory statistics and reads what the driver sent (§5.5.6.3)."""

    def request_stats(self) -> bool:
        """Return the buffer the device holds on statsq, asking for fresh statistics; False if none held."""
        ...

    def host_stats(self) -> dict[int, int]:
        """The statistics the host holds: tag -> value, known tags only (BAL-ST-DEV-1)."""
        ...


@runtime_checkable
class PerQueueInterrupts(Protocol):
    """A marker: ``take_interrupts().queues`` names exactly the signalled queues, so the suite checks
    notification suppression per queue (SPLIT-DEV-8/9/12/13). Without it, any interrupt counts for all."""


@runtime_checkable
class DriverReporting(Protocol):
    """The driver can be asked to report its free pages now (§5.5.6.7)."""

    def report(self) -> int:
        """Report free pages; return how many were sent."""
        ...


@runtime_checkable
class DriverOom(Protocol):
    """The guest is under memory pressure (§5.5.6.1 with DEFLATE_ON_OOM)."""

    def oom(self, count: int) -> int:
        """Deflate up to ``count`` pages; return how many."""
        ...


@runtime_checkable
class NotifiesKicks(Protocol):
    """A driver-side queue that says when it sent an available buffer notification (SPLIT-DRV-21)."""

    def kicked(self) -> None:
        """The driver notified the device just now."""
        ...


@runtime_checkable
class GuestAgent(Protocol):
    """A driver in a real guest whose agent allocates, writes, frees and checks memory in the guest."""

    def alloc(self, name: str, pages: int) -> bool:
        """Allocate ``pages`` pages in the guest, fill them with a known pattern, and call them ``name``."""
        ...

    def free(self, name: str) -> None:
        """Free the pages called ``name``."""
        ...

    def verify(self) -> list[str]:
        """The names whose pages no longer hold their pattern (a device changed memory it must not)."""
        ...

    def meminfo(self) -> dict[str, int]:
        """/proc/meminfo as the guest sees it, in bytes: MemTotal and MemFree at least; the counters of the
        guest's own use (Buffers, Cached, AnonPages, SReclaimable, SUnreclaim, KernelStack, PageTables) where
        the guest has them."""
        ...


@runtime_checkable
class GuestDriverUnderTest(GuestAgent, Protocol):
    """A driver that runs in a real guest (Linux under UML): the suite cannot hand it a transport; it boots
    the guest against a device the suite serves (vhost-user) and commands the guest's agent."""

    def start(self, offered: int, device_factory: Callable[[GuestMemory], DeviceUnderTest], *,
              init_on_free: bool = False, protocol_features: int = ...) -> str:
        """Boot the guest against a device offering ``offered``, built by ``device_factory``; the kernel release."""
        ...

    def probe(self) -> bool:
        """Load the driver in the guest; False if it did not bind to the device."""
        ...

    def interrupt(self, queues: frozenset[int] = ..., config: bool = ...) -> None:
        """Deliver the device's notifications to the guest."""
        ...

    def run(self) -> None:
        """Serve the guest until the driver has been quiet for a moment (§5.5.6 work done)."""
        ...

    def serve(self, seconds: float) -> None:
        """Serve the guest for ``seconds`` whatever it does."""
        ...

    def close(self) -> None:
        """Stop the guest; no process or file of it is left."""
        ...


CAPABILITY_PROTOCOLS: dict[Capability, type] = {
    Capability.HINTING: HostHinting,
    Capability.HINT_STOP: HintStop,
    Capability.HINTED_PAGES: HintedPages,
    Capability.STATS: HostStats,
    Capability.PER_QUEUE_INTERRUPTS: PerQueueInterrupts,
    Capability.REPORT: DriverReporting,
    Capability.OOM: DriverOom,
    Capability.KICKED: NotifiesKicks,
    Capability.GUEST_AGENT: GuestAgent,
}

#: The capabilities each role may declare.
ROLE_CAPABILITIES: dict[type, frozenset[Capability]] = {
    DeviceUnderTest: frozenset({Capability.HINTING, Capability.HINT_STOP, Capability.HINTED_PAGES,
                                Capability.STATS, Capability.PER_QUEUE_INTERRUPTS}),
    DriverUnderTest: frozenset({Capability.REPORT, Capability.OOM, Capability.GUEST_AGENT}),
    DeviceQueueUnderTest: frozenset(),
    DriverQueueUnderTest: frozenset({Capability.KICKED}),
}
ROLE_PROTOCOLS: dict[tuple[str, str], type] = {
    ("device", "balloon"): DeviceUnderTest, ("driver", "balloon"): DriverUnderTest,
    ("device", "virtqueue"): DeviceQueueUnderTest, ("driver", "virtqueue"): DriverQueueUnderTest,
}


# -- optional attributes ------------------------------------------------------------------------------------
@runtime_checkable
class DeclaresNumbering(Protocol):
    """A device that says how it numbers the balloon queues (ambiguity AMB-VQ-NUMBERING)."""

    numbering: QueueNumbering


@runtime_checkable
class LagsInterrupts(Protocol):
    """A device whose notifications may come after its used idx moved (QEMU: another thread uses the
    ring and then signals): an owed notification may arrive with a later interrupt collection."""

    interrupts_lag: bool


@runtime_checkable
class OwnsGuestMemory(Protocol):
    """A device whose VMM owns the guest's RAM (QEMU): the suite runs its guest in ``mem``."""

    mem: GuestMemory
    #: Pages at the bottom of ``mem`` the suite must leave alone (rings, firmware).
    reserved_pages: int


@runtime_checkable
class VmmFactory(Protocol):
    """A device factory that takes no memory: it returns an :class:`OwnsGuestMemory` device."""

    provides_memory: bool

    def __call__(self) -> DeviceUnderTest:
        ...


# -- checking an implementation -------------------------------------------------------------------------------
def _methods(proto: type) -> list[str]:
    """The methods a Protocol requires, its bases' included (``_is_protocol`` bookkeeping excluded)."""
    out: list[str] = []
    for klass in reversed(proto.__mro__):
        if klass in (object, Protocol, typing.Generic) or not getattr(klass, "_is_protocol", False):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and inspect.isfunction(value) and name not in out:
                out.append(name)
    return out


def _section(proto: type, method: str) -> str:
    doc = inspect.getdoc(getattr(proto, method)) or ""
    first = doc.split("\n", 1)[0]
    return f": {first}" if first else ""


def declared_capabilities(obj: object, role: str = "implementation") -> frozenset[Capability]:
    """The ``capabilities`` an implementation declares, as :class:`Capability` members.

    Strings naming a capability are accepted (the form before the enum existed); anything else is an
    :class:`InterfaceError`.
    """
    raw = getattr(obj, "capabilities", ())
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise InterfaceError(f"{role} {type(obj).__name__}: capabilities must be a set of Capability, "
                             f"got {raw!r}")
    out = set()
    for item in raw:
        if isinstance(item, Capability):
            out.add(item)
            continue
        try:
            out.add(Capability(item))
        except ValueError:
            known = ", ".join(repr(c.value) for c in Capability)
            raise InterfaceError(f"{role} {type(obj).__name__}: capabilities: {item!r} is not a capability "
                                 f"(one of {known})") from None
    return frozenset(out)


def check_implementation(obj: object, role_protocol: type, role: str | None = None) -> frozenset[Capability]:
    """Check that ``obj`` has every method of ``role_protocol`` and of each capability it declares.

    Returns the declared capabilities. Raises :class:`InterfaceError` naming the first missing method.
    """
    role = role or role_protocol.__name__
    name = type(obj).__name__
    for method in _methods(role_protocol):
        if not callable(getattr(obj, method, None)):
            raise InterfaceError(f"{role} {name} has no method {method}() "
                                 f"({role_protocol.__name__}{_section(role_protocol, method)})")
    caps = declared_capabilities(obj, role)
    allowed = ROLE_CAPABILITIES.get(role_protocol)
    for cap in sorted(caps, key=lambda c: c.value):
        if allowed is not None and cap not in allowed:
            raise InterfaceError(f"{role} {name} declares capability {cap.name}, which a "
                                 f"{role_protocol.__name__} cannot have")
        proto = CAPABILITY_PROTOCOLS[cap]
        for method in _methods(proto):
            if not callable(getattr(obj, method, None)):
                raise InterfaceError(f"{role} {name} declares capability {cap.name} but has no method "
                                     f"{method}() ({proto.__name__}{_section(proto, method)})")
    return caps


def _runtime_type(hint: Any) -> type | tuple[type, ...] | None:
    """The isinstance() check for a return annotation, or None where there is nothing to check."""
    if hint is None or hint is type(None) or hint is Any:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_runtime_type(a) if a is not type(None) else type(None) for a in typing.get_args(hint)]
        flat: list[type] = []
        for p in parts:
            if p is None:
                return None
            flat.extend(p if isinstance(p, tuple) else (p,))
        return tuple(flat)
    if origin is not None:
        return origin if isinstance(origin, type) else None
    return hint if isinstance(hint, type) else None


def _returns() -> dict[str, type | tuple[type, ...]]:
    """Method name -> the type its result must have, from the Protocols' annotations."""
    out: dict[str, type | tuple[type, ...]] = {}
    protos = [*ROLE_PROTOCOLS.values(), *CAPABILITY_PROTOCOLS.values(), Transport]
    for proto in protos:
        for method in _methods(proto):
            hint = typing.get_type_hints(getattr(proto, method)).get("return")
            want = _runtime_type(hint)
            if want is None:
                continue
            if method in out and out[method] != want:
                raise TypeError(f"{method}: the Protocols disagree on its return type")
            out[method] = want
    return out


#: Expected result types of the calls that return something (garbage becomes an error).
RETURNS: dict[str, type | tuple[type, ...]] = _returns()
