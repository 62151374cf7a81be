"""The QEMU-guest route without a guest: QEMU's trace lines as events, and the order in which the backend gives
the guest's statuses, config writes and early notifications to the reference device."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance.adapters.linux.qemu_backend import NUM_VQS, QemuVhostBackend
from conformance.adapters.linux.qemu_trace import Notify, Status, TraceReader, parse_line
from conformance.adapters.vhost_user import protocol as P
from conformance.machines.driver.device import WatchedDevice
from refmodel.balloon.config import CFG_POISON
from refmodel.virtio.constants import DeviceStatus
from refmodel.virtio.features import Feature
from refmodel.virtio.memory import GuestMemory

F = Feature
OFFER = F.VIRTIO_F_VERSION_1.mask | F.VIRTIO_BALLOON_F_STATS_VQ.mask | F.VIRTIO_BALLOON_F_PAGE_POISON.mask


@pytest.mark.parametrize("line, event", [
    ("virtio_set_status vdev 0x55d0c4a1b2c0 val 11", Status(11)),
    ("1234@1701234567.123456:virtio_set_status vdev 0x55d0c4a1b2c0 val 0", Status(0)),
    ("virtio_set_status vdev (nil) val 15", Status(15)),
    ("virtio_queue_notify vdev 0x55d0c4a1b2c0 n 2 vq 0x7f00deadbeef", Notify(2)),
    ("virtio_set_status vdev 0x1 val 256", None),  # not a status byte
    ("virtio_set_status vdev 0x1 val", None),
    ("qemu-system-x86_64: -device foo: warning", None),
    ("", None),
])
def test_trace_lines_are_events(line: str, event: object) -> None:
    assert parse_line(line) == event


def test_the_reader_joins_lines_split_across_reads_and_keeps_the_rest() -> None:
    r = TraceReader()
    assert r.feed(b"virtio_set_status vdev 0x1 va") == []
    assert r.feed(b"l 3\nqemu: something else\nvirtio_queue_notify vdev 0x1 n 4 vq 0x2\n") == [Status(3), Notify(4)]
    assert r.other == ["qemu: something else"]


class _Pipe:
    def __init__(self, backend: QemuVhostBackend) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        backend.trace_fd = self.r
        self.backend = backend

    def status(self, *values: int) -> None:
        for v in values:
            os.write(self.w, f"virtio_set_status vdev 0x1 val {v}\n".encode())
        self.backend.drain_trace()

    def notify(self, index: int) -> None:
        os.write(self.w, f"virtio_queue_notify vdev 0x1 n {index} vq 0x2\n".encode())
        self.backend.drain_trace()


@pytest.fixture
def route(tmp_path: Path):
    mem = GuestMemory(1 << 20)
    b = QemuVhostBackend(str(tmp_path / "s.sock"), OFFER, lambda m: WatchedDevice(m, OFFER), mem)
    yield b, _Pipe(b)
    b.close()


def _features(b: QemuVhostBackend, value: int) -> None:
    b._on_set_features(P.U64.pack(value | P.F_PROTOCOL_FEATURES), [])


def _rings_set(b: QemuVhostBackend) -> None:
    for i in range(NUM_VQS):  # QEMU enables all num_vqs; none has an address here
        b._on_set_vring_enable(P.VRING_STATE.pack(i, 1), [])


def _config_write(b: QemuVhostBackend, offset: int, value: int) -> None:
    data = bytearray(b._raw_config())
    data[offset:offset + 4] = value.to_bytes(4, "little")
    b._on_set_config(P.CONFIG_HEADER.pack(0, 16, 0) + bytes(data), [])


def test_the_guests_sequence_reaches_the_device_in_order(route) -> None:
    b, trace = route
    trace.status(0, 0, 1, 3, 11)
    assert b.device.read_status() == 3  # FEATURES_OK waits for the features, which come at DRIVER_OK
    _config_write(b, CFG_POISON, 0xAAAAAAAA)  # probe writes poison_val before DRIVER_OK
    trace.notify(2)  # Linux kicks statsq before DRIVER_OK
    trace.status(15)
    _features(b, F.VIRTIO_F_VERSION_1.mask | F.VIRTIO_BALLOON_F_PAGE_POISON.mask)
    assert b.device.read_status() == 11 and not b.ready  # DRIVER_OK waits for the rings
    _rings_set(b)
    assert b.ready and b.device.read_status() == 15
    assert b.device.error is None
    assert b.device.config.get("poison_val") == 0xAAAAAAAA
    assert b.statuses == [0, 0, 1, 3, 11, 15]
    assert b.early_notifies == [(2, 11)]


def test_a_write_of_an_unchanged_value_before_driver_ok_is_poison_val(route) -> None:
    b, trace = route
    trace.status(0, 1, 3, 11)
    _config_write(b, CFG_POISON, 0)  # init_on_free: 0 over 0
    trace.status(15)
    _features(b, F.VIRTIO_F_VERSION_1.mask | F.VIRTIO_BALLOON_F_PAGE_POISON.mask)
    _rings_set(b)
    assert b.device.error is None  # BAL-PP-DRV-2 holds: poison_val was written before DRIVER_OK


def test_a_config_write_before_features_ok_is_init_drv_2(route) -> None:
    b, trace = route
    trace.status(0, 1, 3)
    _config_write(b, CFG_POISON, 0xAAAAAAAA)
    assert b.device.error is not None and b.device.error.req_id == "INIT-DRV-2"


def test_driver_ok_without_poison_val_is_bal_pp_drv_2(route) -> None:
    b, trace = route
    trace.status(0, 1, 3, 11, 15)
    _features(b, F.VIRTIO_F_VERSION_1.mask | F.VIRTIO_BALLOON_F_PAGE_POISON.mask)
    _rings_set(b)
    assert b.device.error is not None and b.device.error.req_id == "BAL-PP-DRV-2"


def test_a_cleared_status_bit_is_status_drv_2(route) -> None:
    b, trace = route
    trace.status(0, 1, 3, 1)
    assert b.device.error is not None and b.device.error.req_id == "STATUS-DRV-2"


def test_no_early_notification_when_the_guest_waits_for_driver_ok(route) -> None:
    b, trace = route
    trace.status(0, 1, 3, 11, 15)
    _features(b, F.VIRTIO_F_VERSION_1.mask)
    _rings_set(b)
    assert b.ready and b.early_notifies == [] and b.device.error is None
    assert b.device.read_status() == DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK \
        | DeviceStatus.DRIVER_OK
