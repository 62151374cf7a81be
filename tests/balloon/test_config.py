import pytest

from refmodel.balloon.config import BalloonConfigSpace
from refmodel.errors import LocalSpecViolation, PeerSpecViolation
from refmodel.virtio.features import Feature, mask_of
from refmodel.virtio.status import Role

HINT_POISON = mask_of([Feature.VIRTIO_F_VERSION_1, Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT,
                       Feature.VIRTIO_BALLOON_F_PAGE_POISON])


def space(offered=HINT_POISON, negotiated=None, local=Role.DEVICE):
    c = BalloonConfigSpace(offered, local)
    if negotiated is not None:
        c.features_ok(negotiated)
    return c


@pytest.mark.verifies("CFG-DEV-1")
def test_offered_fields_readable_before_features_ok():
    c = space()
    c.device_set("free_page_hint_cmd_id", 5)
    assert c.driver_read(8, 4) == 5
    assert c.driver_read(12, 4) == 0


@pytest.mark.verifies("CFG-DRV-3")
def test_unnegotiated_field_unreadable_after_features_ok():
    c = space(negotiated=Feature.VIRTIO_F_VERSION_1.mask)
    with pytest.raises(PeerSpecViolation, match="CFG-DRV-3"):
        c.driver_read(8, 4)
    assert c.driver_read(0, 4) == 0


@pytest.mark.verifies("INIT-DRV-2")
def test_no_config_writes_while_negotiating():
    with pytest.raises(PeerSpecViolation, match="INIT-DRV-2"):
        space().driver_write(4, 4, 1)


@pytest.mark.verifies("BAL-CFG-D1", "BAL-CFG-D2")
@pytest.mark.parametrize("offset, req", [(8, "BAL-CFG-D1"), (0, "BAL-CFG-D2")])
def test_driver_cannot_write_device_fields(offset, req):
    with pytest.raises(PeerSpecViolation, match=req):
        space(negotiated=HINT_POISON).driver_write(offset, 4, 9)


@pytest.mark.verifies("BAL-PP-DRV-3")
def test_poison_val_frozen_while_driver_ok():
    c = space(negotiated=HINT_POISON, local=Role.DRIVER)
    c.driver_write(12, 4, 0xAAAAAAAA)
    c.driver_ok()
    assert c.driver_read(12, 4) == 0xAAAAAAAA
    with pytest.raises(LocalSpecViolation, match="BAL-PP-DRV-3"):
        c.driver_write(12, 4, 0)
    c.driver_write(4, 4, 3)  # actual stays writable
    assert c.get("actual") == 3


@pytest.mark.verifies("CFG-DEV-2")
def test_generation_moves_on_device_change_and_read_loop_retries():
    c = space()
    g = c.generation
    assert c.device_set("num_pages", 10) and c.generation == g + 1
    assert not c.device_set("num_pages", 10) and c.generation == g + 1
    calls = []

    def torn_read():
        calls.append(1)
        if len(calls) == 1:
            c.device_set("num_pages", 11)  # changes between the two halves of the read
        return c.driver_read(0, 4)

    assert c.read_consistent(torn_read) == 11 and len(calls) == 2


def test_misaligned_access_rejected():
    with pytest.raises(PeerSpecViolation, match="CFG-DRV-3"):
        space().driver_read(2, 4)
