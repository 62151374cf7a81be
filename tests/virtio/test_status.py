"""The status table: every (state, event) pair is either a row or a violation of the causing role."""

import itertools

import pytest

from refmodel.virtio.constants import DeviceStatus as DS
from refmodel.errors import LocalSpecViolation, PeerSpecViolation
from refmodel.virtio.status import (ILLEGAL, STATUS_TRANSITIONS, DeviceStatusMachine, Role, StatusEvent,
                             StatusState)


def machine_in(state, local=Role.DEVICE):
    m = DeviceStatusMachine(local)
    m.state = state
    return m


@pytest.mark.parametrize("state, event", list(itertools.product(StatusState, StatusEvent)))
@pytest.mark.parametrize("local", list(Role))
def test_every_pair(state, event, local):
    m = machine_in(state, local)
    if (state, event) in STATUS_TRANSITIONS:
        assert m.process(event) is STATUS_TRANSITIONS[state, event]
    else:
        expected = LocalSpecViolation if event.role is local else PeerSpecViolation
        with pytest.raises(expected) as exc:
            m.process(event)
        assert exc.value.role == event.role.value
        assert exc.value.req_id in (ILLEGAL[event], "STATUS-DRV-3")
        assert m.state is state  # an illegal event changes nothing


@pytest.mark.verifies("INIT-DRV-1")
def test_init_sequence_by_status_writes():
    m = DeviceStatusMachine(Role.DEVICE)
    m.driver_write(DS.ACKNOWLEDGE)
    m.driver_write(DS.ACKNOWLEDGE | DS.DRIVER)
    m.driver_write(DS.ACKNOWLEDGE | DS.DRIVER | DS.FEATURES_OK)
    assert m.state is StatusState.FEATURES_CHECK
    m.process(StatusEvent.ACCEPT_FEATURES)
    m.driver_write(0x0F)
    assert m.state is StatusState.DRIVER_OK and m.status == 0x0F and m.driver_ok


@pytest.mark.verifies("STATUS-DRV-2")
def test_clearing_a_bit_is_a_driver_violation():
    m = machine_in(StatusState.DRIVER_OK)
    with pytest.raises(PeerSpecViolation) as exc:
        m.driver_write(DS.ACKNOWLEDGE | DS.DRIVER)
    assert exc.value.req_id == "STATUS-DRV-2"


@pytest.mark.verifies("INIT-DRV-1")
def test_skipping_a_step_is_a_driver_violation():
    m = DeviceStatusMachine(Role.DRIVER)
    with pytest.raises(LocalSpecViolation, match="INIT-DRV-1"):
        m.driver_write(DS.ACKNOWLEDGE | DS.DRIVER_OK)


def test_several_bits_in_one_write_apply_in_order():
    m = DeviceStatusMachine(Role.DEVICE)
    assert m.driver_write(DS.ACKNOWLEDGE | DS.DRIVER) == [StatusEvent.SET_ACKNOWLEDGE, StatusEvent.SET_DRIVER]


@pytest.mark.verifies("STATUS-DRV-3")
def test_failed_needs_reset_first():
    m = DeviceStatusMachine(Role.DEVICE)
    m.driver_write(DS.ACKNOWLEDGE)
    m.driver_write(DS.ACKNOWLEDGE | DS.FAILED)
    assert m.status == DS.ACKNOWLEDGE | DS.FAILED
    with pytest.raises(PeerSpecViolation, match="STATUS-DRV-3"):
        m.driver_write(DS.ACKNOWLEDGE | DS.FAILED | DS.DRIVER)
    m.driver_write(0)
    assert m.state is StatusState.RESET and m.status == 0


def test_rejected_features_read_back_cleared():
    m = DeviceStatusMachine(Role.DEVICE)
    m.driver_write(3)
    m.driver_write(11)
    m.process(StatusEvent.REJECT_FEATURES)
    assert m.status == DS.ACKNOWLEDGE | DS.DRIVER  # INIT-DRV-4: the driver must see this on re-read
    m.driver_write(DS.ACKNOWLEDGE | DS.DRIVER | DS.FAILED)
    assert m.state is StatusState.FAILED


@pytest.mark.verifies("STATUS-DEV-3")
def test_needs_reset_while_driver_ok_is_distinguished():
    m = machine_in(StatusState.DRIVER_OK)
    m.process(StatusEvent.SET_NEEDS_RESET)
    assert m.state is StatusState.DRIVER_OK_NEEDS_RESET
    assert m.status == 0x0F | DS.DEVICE_NEEDS_RESET
