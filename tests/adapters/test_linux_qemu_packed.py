"""The QEMU-guest route over packed rings, without a guest: QEMU hands the backend the rings at DRIVER_OK, so
PACKED-DRV-D12 (a zeroed ring) is judged on the descriptors after the lists the driver made available by then.
The route's runs over packed rings are in the matrix (tools/matrix -k packed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conformance.adapters.linux.qemu_machine import LateRingDevice
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.packed.driver import PackedQueueDriver
from refmodel.virtio.packed.layout import DESC_FLAGS, PVIRTQ_DESC_SIZE, place

QS = 8


def _ring_with_one_list() -> tuple[GuestMemory, object]:
    mem = GuestMemory(size=1 << 16)
    addrs = place(0x1000, QS)
    drv = PackedQueueDriver(mem, addrs, QS)
    drv.add(readable=[(0x8000, 4)], writable=[(0x9000, 16)])  # two descriptors, as Linux's statsq buffer is one
    drv.publish()
    return mem, addrs


def test_lists_available_before_the_handover_are_not_stale_descriptors() -> None:
    mem, addrs = _ring_with_one_list()
    LateRingDevice._check_zeroed(SimpleNamespace(mem=mem), 2, QS, addrs)


def test_a_stale_descriptor_after_them_is_still_judged() -> None:
    mem, addrs = _ring_with_one_list()
    mem.write_u16(addrs.desc + PVIRTQ_DESC_SIZE * 5 + DESC_FLAGS, 0x0080)  # AVAIL left in RAM at offset 5
    with pytest.raises(PeerSpecViolation) as e:
        LateRingDevice._check_zeroed(SimpleNamespace(mem=mem), 2, QS, addrs)
    assert e.value.req_id == "PACKED-DRV-D12" and "descriptor 5" in e.value.detail and "2 made available" in e.value.detail
