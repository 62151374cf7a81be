"""The reference balloon driver against the reference balloon device, every feature, through the
transport calls; and the device's verdicts on a driver's garbage."""

import pytest

from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice
from refmodel.balloon.driver import BalloonDriver
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.features import Feature
from refmodel.balloon.queues import QueueNumbering
from refmodel.system.guest_os import GuestOS, poison_pattern

F = Feature


def system(offered=DEFAULT_OFFER, n_pages=256, **drv):
    os_ = GuestOS(n_pages)
    dev = BalloonDevice(os_.mem, offered)
    drv = BalloonDriver(**drv)
    assert drv.probe(dev, os_)
    return os_, dev, drv


def settle(dev, drv, rounds=6):
    for _ in range(rounds):
        dev.run()
        irq = dev.take_interrupts()
        drv.interrupt(irq.queues, irq.config)
        drv.run()


@pytest.mark.verifies("BAL-OP-DRV-1", "BAL-OP-DRV-6", "BAL-OP-DRV-11", "BAL-OP-D1")
@pytest.mark.parametrize("offered", [DEFAULT_OFFER, DEFAULT_OFFER & ~F.VIRTIO_BALLOON_F_MUST_TELL_HOST.mask])
def test_inflate_deflate_follow_the_target(offered):
    os_, dev, drv = system(offered)
    for _ in range(30):
        os_.workload_alloc_write()
    dev.set_target(40)
    settle(dev, drv)
    assert dev.ballooned.bit_count() == 40 == dev.config.get("actual") == len(drv.balloon)
    dev.set_target(7)
    settle(dev, drv)
    assert dev.ballooned.bit_count() == 7 == dev.config.get("actual")
    assert os_.corrupted() == []


@pytest.mark.verifies("BAL-ST-DRV-2", "BAL-ST-DRV-3", "BAL-ST-DEV-1")
def test_stats_cycle():
    os_, dev, drv = system()
    settle(dev, drv)
    assert dev.stats_updates == 1 and dev.stats_held is not None
    free_before = dev.stats[4]
    for _ in range(10):
        os_.workload_alloc_write()
    assert dev.request_stats()
    settle(dev, drv)
    assert dev.stats_updates == 2 and dev.stats[4] == free_before - 10 * BALLOON_PAGE_SIZE


@pytest.mark.verifies("BAL-FPH-DRV-2", "BAL-FPH-DRV-6", "BAL-FPH-DRV-10", "BAL-FPH-DEV-6")
def test_hinting_round_and_done():
    os_, dev, drv = system()
    for _ in range(20):
        os_.workload_alloc_write()
    cid = dev.hint_start()
    settle(dev, drv, rounds=80)
    assert cid >= 2 and dev.hinted and not dev.hinted & sum(1 << p for p in os_.workload)
    assert os_.pages.hinted  # held until DONE
    dev.hint_done()
    settle(dev, drv)
    assert os_.pages.hinted == 0


@pytest.mark.verifies("BAL-FPR-DRV-2", "BAL-FPR-DRV-3", "BAL-PP-DRV-2")
@pytest.mark.parametrize("poison", [True, False])
def test_reporting_discards_or_poisons(poison):
    offered = DEFAULT_OFFER if poison else DEFAULT_OFFER & ~F.VIRTIO_BALLOON_F_PAGE_POISON.mask
    os_, dev, drv = system(offered)
    assert drv.report() == 4
    pages = [p for p in range(os_.n_pages) if os_.pages.isolated >> p & 1]
    settle(dev, drv)
    assert dev.reported.bit_count() == 4 and os_.pages.isolated == 0
    fill = poison_pattern(drv.poison_val) if poison else bytes(BALLOON_PAGE_SIZE)
    assert all(os_.holds(p, fill) for p in pages)


@pytest.mark.verifies("PROP-VQ-1")
@pytest.mark.parametrize("numbering", list(QueueNumbering))
def test_queue_numbering_when_stats_is_declined(numbering):
    """The driver declines STATS_VQ: whether later queues shift is the interpretation (AMB-VQ-NUMBERING)."""
    os_ = GuestOS(128)
    dev = BalloonDevice(os_.mem, numbering=numbering)
    drv = BalloonDriver(features=DEFAULT_OFFER & ~F.VIRTIO_BALLOON_F_STATS_VQ.mask, numbering=numbering)
    assert drv.probe(dev, os_)
    assert "statsq" not in dev.queues and "free_page_vq" in dev.queues


def raw_pfns(dev, drv, os_, queue, data):
    vq = drv.vqs[queue]
    addr = os_.alloc_contiguous(1) * BALLOON_PAGE_SIZE
    os_.mem.write(addr, data)
    vq.add([(addr, len(data))])
    vq.publish()


@pytest.mark.parametrize("queue, data, req", [
    ("inflateq", b"\x01\x00\x00", "BAL-OP-D1"),                     # not a whole le32
    ("inflateq", (10**6).to_bytes(4, "little"), "BAL-OP-D1"),       # outside guest memory
    ("deflateq", (3).to_bytes(4, "little"), "BAL-OP-DRV-10"),       # never inflated
    ("statsq", bytes(12), "BAL-ST-DRV-1"),                          # a second stats buffer
])
def test_driver_garbage_is_a_peer_violation(queue, data, req):
    os_, dev, drv = system()
    settle(dev, drv)
    raw_pfns(dev, drv, os_, queue, data)
    with pytest.raises(PeerSpecViolation) as exc:
        dev.run()
    assert exc.value.req_id == req
    assert dev.error is exc.value  # ERROR latched


@pytest.mark.verifies("BAL-PP-DRV-2")
def test_driver_ok_without_poison_val_is_refused():
    os_ = GuestOS(64)
    dev = BalloonDevice(os_.mem)
    dev.write_status(1)
    dev.write_status(3)
    dev.write_driver_features(DEFAULT_OFFER)
    dev.write_status(11)
    with pytest.raises(PeerSpecViolation) as exc:
        dev.write_status(15)
    assert exc.value.req_id == "BAL-PP-DRV-2"
