"""The device status lifecycle (§2.1, §2.4, §3.1) as a transition table.

Rules (after h11's ``_state.py``):

1. Every legal transition is a row of :data:`STATUS_TRANSITIONS`; a pair that is not in the table is
   illegal, and the role that caused the event broke the requirement in :data:`ILLEGAL`.
2. Events carry their role. Driver events are what a driver's status writes mean; device events are
   what the device does on its own (accept or reject FEATURES_OK, raise DEVICE_NEEDS_RESET).
3. The diagram in the docs is drawn from the table, so a transition written anywhere else is a bug.
"""

from __future__ import annotations

import enum

from refmodel.virtio.constants import DeviceStatus
from refmodel.errors import LocalSpecViolation, PeerSpecViolation, SpecViolation


class Role(enum.Enum):
    DRIVER = "driver"
    DEVICE = "device"


class StatusState(enum.Enum):
    """Where the lifecycle is. ``bits`` is the status byte a driver reads back in that state."""

    RESET = 0
    ACKNOWLEDGED = DeviceStatus.ACKNOWLEDGE
    DRIVER_LOADED = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER
    FEATURES_CHECK = 0x100  # FEATURES_OK written, device has not decided yet (not a status value)
    FEATURES_OK = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK
    FEATURES_REJECTED = 0x200  # device cleared FEATURES_OK; status reads ACKNOWLEDGE|DRIVER
    DRIVER_OK = FEATURES_OK | DeviceStatus.DRIVER_OK
    NEEDS_RESET = 0x400  # DEVICE_NEEDS_RESET set before DRIVER_OK
    DRIVER_OK_NEEDS_RESET = 0x800  # DEVICE_NEEDS_RESET set while DRIVER_OK
    FAILED = 0x1000  # driver set FAILED


class StatusEvent(enum.Enum):
    """(role, name). Driver events come from status writes; device events from the device."""

    RESET = (Role.DRIVER, "write 0")
    SET_ACKNOWLEDGE = (Role.DRIVER, "set ACKNOWLEDGE")
    SET_DRIVER = (Role.DRIVER, "set DRIVER")
    SET_FEATURES_OK = (Role.DRIVER, "set FEATURES_OK")
    SET_DRIVER_OK = (Role.DRIVER, "set DRIVER_OK")
    SET_FAILED = (Role.DRIVER, "set FAILED")
    ACCEPT_FEATURES = (Role.DEVICE, "keep FEATURES_OK")
    REJECT_FEATURES = (Role.DEVICE, "clear FEATURES_OK")
    SET_NEEDS_RESET = (Role.DEVICE, "set DEVICE_NEEDS_RESET")

    @property
    def role(self) -> Role:
        return self.value[0]


S, E = StatusState, StatusEvent
_PRE_RESET_STATES = (S.ACKNOWLEDGED, S.DRIVER_LOADED, S.FEATURES_CHECK, S.FEATURES_OK,
                     S.FEATURES_REJECTED, S.DRIVER_OK, S.NEEDS_RESET, S.DRIVER_OK_NEEDS_RESET, S.FAILED)

#: (state, event) -> next state.
STATUS_TRANSITIONS: dict[tuple[StatusState, StatusEvent], StatusState] = {
    # §3.1.1 steps 1-8
    (S.RESET, E.RESET): S.RESET,
    (S.RESET, E.SET_ACKNOWLEDGE): S.ACKNOWLEDGED,
    (S.ACKNOWLEDGED, E.SET_DRIVER): S.DRIVER_LOADED,
    (S.DRIVER_LOADED, E.SET_FEATURES_OK): S.FEATURES_CHECK,
    (S.FEATURES_CHECK, E.ACCEPT_FEATURES): S.FEATURES_OK,
    (S.FEATURES_CHECK, E.REJECT_FEATURES): S.FEATURES_REJECTED,
    (S.FEATURES_OK, E.SET_DRIVER_OK): S.DRIVER_OK,
    # §2.1.2: the device may need a reset at any point after the driver found it
    **{(s, E.SET_NEEDS_RESET): S.NEEDS_RESET
       for s in (S.ACKNOWLEDGED, S.DRIVER_LOADED, S.FEATURES_OK, S.FEATURES_REJECTED)},
    (S.DRIVER_OK, E.SET_NEEDS_RESET): S.DRIVER_OK_NEEDS_RESET,
    # §3.1.1: FAILED on an unrecoverable error, from any initialized state
    **{(s, E.SET_FAILED): S.FAILED
       for s in (S.ACKNOWLEDGED, S.DRIVER_LOADED, S.FEATURES_OK, S.FEATURES_REJECTED, S.DRIVER_OK,
                 S.NEEDS_RESET, S.DRIVER_OK_NEEDS_RESET)},
    (S.FAILED, E.SET_FAILED): S.FAILED,
    # §2.4: reset from anywhere
    **{(s, E.RESET): S.RESET for s in _PRE_RESET_STATES},
}

#: The requirement an illegal event breaks, by event (the state only sharpens the message).
ILLEGAL: dict[StatusEvent, str] = {
    E.RESET: "STATUS-DRV-1",
    E.SET_ACKNOWLEDGE: "INIT-DRV-1",
    E.SET_DRIVER: "INIT-DRV-1",
    E.SET_FEATURES_OK: "INIT-DRV-1",
    E.SET_DRIVER_OK: "INIT-DRV-1",
    E.SET_FAILED: "INIT-DRV-1",
    E.ACCEPT_FEATURES: "FEAT-DEV-2",
    E.REJECT_FEATURES: "FEAT-DEV-2",
    E.SET_NEEDS_RESET: "STATUS-DEV-2",
}

#: Sharper requirements for some (state, event) pairs.
ILLEGAL_IN_STATE: dict[tuple[StatusState, StatusEvent], str] = {
    **{(S.FAILED, ev): "STATUS-DRV-3" for ev in StatusEvent if ev.role is Role.DRIVER},
}

_STATUS_BITS: dict[StatusState, int] = {
    S.RESET: 0,
    S.ACKNOWLEDGED: DeviceStatus.ACKNOWLEDGE,
    S.DRIVER_LOADED: DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER,
    S.FEATURES_CHECK: DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK,
    S.FEATURES_OK: DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK,
    S.FEATURES_REJECTED: DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER,
    S.DRIVER_OK: DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK
    | DeviceStatus.DRIVER_OK,
}
# Order in which the bits of one status write are applied (§3.1.1 order).
_SET_ORDER = (
    (DeviceStatus.ACKNOWLEDGE, E.SET_ACKNOWLEDGE),
    (DeviceStatus.DRIVER, E.SET_DRIVER),
    (DeviceStatus.FEATURES_OK, E.SET_FEATURES_OK),
    (DeviceStatus.DRIVER_OK, E.SET_DRIVER_OK),
    (DeviceStatus.FAILED, E.SET_FAILED),
)


class DeviceStatusMachine:
    """The status lifecycle of one device instance, shared by both roles.

    ``local_role`` is the side the model plays; a violation by that role raises
    :class:`LocalSpecViolation`, one by the other role :class:`PeerSpecViolation`.
    """

    def __init__(self, local_role: Role) -> None:
        self.local_role = local_role
        self.state = StatusState.RESET
        self.history: list[tuple[StatusState, StatusEvent, StatusState]] = []
        self._bits_before_failure = 0
        self._needs_reset_base = 0

    @property
    def status(self) -> int:
        """The status byte the driver reads now."""
        s = self.state
        if s in _STATUS_BITS:
            return _STATUS_BITS[s]
        if s in (S.NEEDS_RESET, S.DRIVER_OK_NEEDS_RESET):
            return self._needs_reset_base | DeviceStatus.DEVICE_NEEDS_RESET
        if s is S.FAILED:
            return self._bits_before_failure | DeviceStatus.FAILED
        raise AssertionError(s)

    @property
    def driver_ok(self) -> bool:
        return self.state in (S.DRIVER_OK, S.DRIVER_OK_NEEDS_RESET)

    def _violation(self, role: Role, req_id: str, detail: str) -> SpecViolation:
        cls = LocalSpecViolation if role is self.local_role else PeerSpecViolation
        return cls(req_id, detail)

    def process(self, event: StatusEvent) -> StatusState:
        """Apply one event; an illegal one raises the violation of the role that caused it.

        The state is unchanged when the event is illegal.
        """
        old = self.state
        new = STATUS_TRANSITIONS.get((old, event))
        if new is None:
            req_id = ILLEGAL_IN_STATE.get((old, event), ILLEGAL[event])
            raise self._violation(event.role, req_id,
                                  f"{event.role.value} cannot {event.value[1]} in state {old.name}")
        if new is S.FAILED and old is not S.FAILED:
            self._bits_before_failure = self.status & ~DeviceStatus.FAILED
        if new in (S.NEEDS_RESET, S.DRIVER_OK_NEEDS_RESET):
            self._needs_reset_base = self.status
        self.state = new
        self.history.append((old, event, new))
        return new

    def driver_write(self, value: int) -> list[StatusEvent]:
        """Interpret a driver's write of the status byte as events, and apply them in order.

        Writing 0 is a reset. Otherwise the written value must keep every bit the driver set before
        (``STATUS-DRV-2``); new bits are applied in initialization order.
        """
        if not 0 <= value <= 0xFF:
            raise self._violation(Role.DRIVER, "STATUS-DRV-1", f"status value {value!r} is not a byte")
        if value == 0:
            self.process(E.RESET)
            return [E.RESET]
        current = self.status & ~DeviceStatus.DEVICE_NEEDS_RESET
        if cleared := current & ~value:
            raise self._violation(Role.DRIVER, "STATUS-DRV-2",
                                  f"write {value:#04x} clears {DeviceStatus(cleared)!r} in {self.state.name}")
        if value & DeviceStatus.DEVICE_NEEDS_RESET & ~self.status:
            raise self._violation(Role.DRIVER, "STATUS-DRV-1", "the driver cannot set DEVICE_NEEDS_RESET")
        added = value & ~self.status
        events = [ev for bit, ev in _SET_ORDER if added & bit]
        for ev in events:
            self.process(ev)
        return events

    def reset(self) -> None:
        """A reset completed by the device (§2.4): back to RESET, history kept."""
        self.process(E.RESET)
