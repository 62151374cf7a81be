import pytest

from refmodel.virtio.features import (BALLOON_FEATURES, Feature, check_negotiation, check_offer, mask_of,
    names_of)

from refmodel.balloon.queues import QueueNumbering, balloon_queue_indices, numberings_agree

F = Feature
V1 = F.VIRTIO_F_VERSION_1.mask
ALL = mask_of(BALLOON_FEATURES) | V1


def ids(verdict):
    return {b.req_id for b in verdict.breaches}


def test_bit_numbers_are_the_spec_ones():
    assert [F[n].value for n in ("VIRTIO_BALLOON_F_MUST_TELL_HOST", "VIRTIO_BALLOON_F_STATS_VQ",
                                 "VIRTIO_BALLOON_F_DEFLATE_ON_OOM", "VIRTIO_BALLOON_F_FREE_PAGE_HINT",
                                 "VIRTIO_BALLOON_F_PAGE_POISON", "VIRTIO_BALLOON_F_PAGE_REPORTING")] == list(range(6))
    assert (F.VIRTIO_F_INDIRECT_DESC, F.VIRTIO_F_EVENT_IDX, F.VIRTIO_F_VERSION_1, F.VIRTIO_F_ACCESS_PLATFORM,
            F.VIRTIO_F_RING_PACKED, F.VIRTIO_F_IN_ORDER, F.VIRTIO_F_RING_RESET) == (28, 29, 32, 33, 34, 35, 40)


@pytest.mark.verifies("FEAT-DRV-1")
def test_driver_accepts_only_offered():
    v = check_negotiation(V1, V1 | F.VIRTIO_BALLOON_F_FREE_PAGE_HINT.mask)
    assert not v.valid and ids(v) == {"FEAT-DRV-1"}
    assert "VIRTIO_BALLOON_F_FREE_PAGE_HINT" in v.violations[0].detail


@pytest.mark.verifies("FEAT-DRV-3", "FEAT-DEV-3")
def test_unknown_bits():
    v = check_negotiation(V1 | 1 << 7, V1 | 1 << 7)
    assert {"FEAT-DRV-3", "FEAT-DEV-3"} <= ids(v)
    assert names_of(1 << 7) == ("bit7",)
    # FEAT-DRV-4: an unknown offered bit is not a reason to fail; ignoring it is valid.
    assert check_negotiation(V1 | 1 << 7, V1).violations == tuple(
        b for b in check_negotiation(V1 | 1 << 7, V1).breaches if b.req_id == "FEAT-DEV-3")


@pytest.mark.verifies("RSV-DEV-1", "RSV-DRV-1")
def test_version_1():
    assert ids(check_offer(0)) == {"RSV-DEV-1"}
    assert "RSV-DRV-1" in ids(check_negotiation(V1, 0))


@pytest.mark.verifies("BAL-FB-DRV-1")
def test_must_tell_host_is_advice_not_failure():
    v = check_negotiation(V1 | F.VIRTIO_BALLOON_F_MUST_TELL_HOST.mask, V1)
    assert v.valid and [b.req_id for b in v.advisories] == ["BAL-FB-DRV-1"]


@pytest.mark.verifies("BAL-FB-DRV-3")
def test_reporting_without_poison_only_matters_if_driver_expects_contents():
    acc = V1 | F.VIRTIO_BALLOON_F_PAGE_REPORTING.mask
    assert check_negotiation(ALL, acc | F.VIRTIO_BALLOON_F_MUST_TELL_HOST.mask).valid
    v = check_negotiation(ALL, acc | F.VIRTIO_BALLOON_F_MUST_TELL_HOST.mask, driver_expects_contents=True)
    assert ids(v) == {"BAL-FB-DRV-3"}
    assert check_negotiation(ALL, acc | F.VIRTIO_BALLOON_F_PAGE_POISON.mask
                             | F.VIRTIO_BALLOON_F_MUST_TELL_HOST.mask, driver_expects_contents=True).valid


S, H, R = F.VIRTIO_BALLOON_F_STATS_VQ.mask, F.VIRTIO_BALLOON_F_FREE_PAGE_HINT.mask, F.VIRTIO_BALLOON_F_PAGE_REPORTING.mask


@pytest.mark.verifies("BAL-VQ-D1")
@pytest.mark.parametrize("offered, negotiated, fixed, by_offered, by_negotiated", [
    (S | H | R, S | H | R, 4, 4, 4),
    (H | R, H | R, 4, 3, 3),
    (R, R, 4, 2, 2),
    (S | H | R, R, 4, 4, 2),  # MST 2024: the driver and device disagree when features are declined
    (S | R, S | R, 4, 3, 3),
])
def test_reporting_vq_index_per_interpretation(offered, negotiated, fixed, by_offered, by_negotiated):
    got = {n: balloon_queue_indices(n, offered, negotiated)["reporting_vq"] for n in QueueNumbering}
    assert got == {QueueNumbering.FIXED: fixed, QueueNumbering.COMPACT_BY_OFFERED: by_offered,
                   QueueNumbering.COMPACT_BY_NEGOTIATED: by_negotiated}


def test_unnegotiated_queue_is_never_usable():
    for n in QueueNumbering:
        q = balloon_queue_indices(n, S | H, S)
        assert "free_page_vq" not in q and q["statsq"] == 2
    assert numberings_agree(S | H | R, S | H | R)
    assert not numberings_agree(H, H)
