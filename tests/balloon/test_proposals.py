"""The proposal profiles' model rules (refmodel.balloon.proposals): each codec round-trips, each malformed
input is a one-line peer violation naming the profile's requirement, and a broken peer of each profile
(the profile's mutant) is caught."""

import re

import pytest

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.proposals import PROFILES, bitmap_inflate as bmp, combined_vq as cmb
from refmodel.balloon.proposals import device_init_on_inflate as dii, device_init_reported as dir_
from refmodel.balloon.proposals import stats_only as so
from refmodel.balloon.proposals.bits import (BITS, RECOMMENDED_BITS, Harm, Proposal, collision, collisions,
                                             offer)
from refmodel.balloon.proposals.hint_wait_on_ack import HINT_WAIT_ON_ACK, WaitOnAckDriver, check_accepted
from refmodel.errors import LocalSpecViolation, PeerSpecViolation
from refmodel.system.guest import GuestPages
from refmodel.virtio.features import Feature
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.split.device import SplitQueueDevice
from refmodel.virtio.split.driver import SplitQueueDriver
from refmodel.virtio.virtq import QueueAddresses
from spec.catalogue import catalogue


def _violation(exc, req_id):
    assert exc.value.req_id == req_id
    assert "\n" not in str(exc.value)


def _queue(pages=8):
    mem = GuestMemory(pages * BALLOON_PAGE_SIZE)
    addrs = QueueAddresses.packed_at((pages - 2) * BALLOON_PAGE_SIZE, 8)
    return mem, SplitQueueDriver(mem, addrs, 8), SplitQueueDevice(mem, addrs, 8)


# -- catalogue and bits --------------------------------------------------------------------------------------
def test_every_profile_has_catalogue_entries_on_both_sides_where_it_binds_both():
    by_profile = {p: [r for r in catalogue().values() if r.profile == p] for p in PROFILES}
    assert all(by_profile.values()), [p for p, rs in by_profile.items() if not rs]
    for p in PROFILES[:-1]:  # proposal-bits binds the device only
        assert {r.role for r in by_profile[p]} == {"driver", "device"}, p


def test_bit6_is_claimed_three_times_and_a_device_cannot_offer_two_meanings():
    six = [b.proposal for b in BITS.values() if b.bit == 6]
    assert len(six) == 3 and not any(BITS[p].placeholder for p in six)
    assert all(BITS[p].placeholder
               for p in (Proposal.STATS_ONLY, Proposal.BITMAP_INFLATE_DEFLATE, Proposal.COMBINED_VQ))
    with pytest.raises(LocalSpecViolation) as exc:
        offer([Proposal.HINT_WAIT_ON_ACK, Proposal.DEVICE_INIT_REPORTED])
    _violation(exc, "PROP-BIT-DEV-1")
    assert offer([Proposal.HINT_WAIT_ON_ACK]) == 1 << 6
    assert len(set(RECOMMENDED_BITS.values())) == 3


def test_collisions_worst_is_a_discarding_host_with_a_driver_that_does_not_wait():
    table = collisions()
    assert len(table) == 6 and table[0].harm is Harm.DATA_LOSS
    assert {c.device_means for c in table if c.harm is Harm.DATA_LOSS} == {Proposal.HINT_WAIT_ON_ACK}
    assert collision(Proposal.HINT_WAIT_ON_ACK, Proposal.HINT_WAIT_ON_ACK).harm is Harm.NONE
    with pytest.raises(ValueError, match="only the bit-6 proposals"):
        collision(Proposal.STATS_ONLY, Proposal.HINT_WAIT_ON_ACK)


# -- hint-wait-on-ack ----------------------------------------------------------------------------------------
def test_wait_on_ack_needs_free_page_hint():
    check_accepted(HINT_WAIT_ON_ACK | Feature.VIRTIO_BALLOON_F_FREE_PAGE_HINT.mask)
    with pytest.raises(PeerSpecViolation) as exc:
        check_accepted(HINT_WAIT_ON_ACK)
    _violation(exc, "PROP-HWA-DRV-2")


def _woa_driver(cid=2):
    mem, drv, dev = _queue(16)
    guest = GuestPages(8)
    d = WaitOnAckDriver(lambda: cid, drv, guest, id_area=12 * BALLOON_PAGE_SIZE,
                        stop_buf=12 * BALLOON_PAGE_SIZE + 64)
    d.on_config_change()
    assert d.hint_one()
    return d, dev, guest


def test_a_hinted_page_is_held_until_its_buffer_is_used():
    d, dev, guest = _woa_driver()
    with pytest.raises(LocalSpecViolation) as exc:
        d.reclaim(0)
    _violation(exc, "PROP-HWA-DRV-1")
    d2, dev2, guest2 = _woa_driver()
    assert d2.shrink(1) == 0  # the shrinker finds nothing it may take
    while (chain := dev2.pop()) is not None:
        dev2.add_used(chain.head, 0)
    assert d2.reap() == 1 and d2.shrink(1) == 1 and not guest2.hinted


def test_done_releases_acked_pages_now_and_the_rest_when_their_buffers_come_back():
    cid = [2]
    mem, drv, dev = _queue(16)
    guest = GuestPages(8)
    d = WaitOnAckDriver(lambda: cid[0], drv, guest, id_area=12 * BALLOON_PAGE_SIZE,
                        stop_buf=12 * BALLOON_PAGE_SIZE + 64)
    d.on_config_change()
    d.hint_one()
    cid[0] = 1  # DONE while the hint is still queued
    d.on_config_change()
    assert guest.hinted == 1 and d.release_on_ack == 1
    while (chain := dev.pop()) is not None:
        dev.add_used(chain.head, 0)
    d.reap()
    assert guest.hinted == 0 and d.release_on_ack == 0


# -- device-init-on-inflate / device-init-reported -----------------------------------------------------------
def _inflate_chain(pfns, bitmap_len):
    mem, drv, dev = _queue(16)
    data = b"".join(p.to_bytes(4, "little") for p in pfns)
    mem.write(0, data)
    drv.add([(0, len(data))], writable=[(64, bitmap_len)] if bitmap_len else ())
    drv.publish()
    return mem, dev, dev.pop()


def test_init_on_inflate_marks_exactly_the_initialized_pages():
    mem, dev, chain = _inflate_chain([3, 4, 5], 1)
    device = dii.InitOnInflateDevice(mem, 8, initialize=lambda p: p != 4)
    pfns, used = device.handle_inflate(chain)
    bitmap = mem.read(64, 1)
    assert pfns == [3, 4, 5] and used == 1 and dii.initialized_pfns(pfns, bitmap, used) == [3, 5]
    assert dii.initialized_pfns(pfns, bitmap, 0) == []  # nothing outside the used length counts


@pytest.mark.parametrize("pfns, blen, req", [([1] * 9, 1, "PROP-DII-DRV-1"), ([1], 0, "PROP-DII-DRV-1"),
                                             ([99], 1, "BAL-OP-D1")])
def test_init_on_inflate_malformed_chain(pfns, blen, req):
    mem, dev, chain = _inflate_chain(pfns, blen)
    with pytest.raises(PeerSpecViolation) as exc:
        dii.InitOnInflateDevice(mem, 8, initialize=lambda p: True).handle_inflate(chain)
    _violation(exc, req)


def test_mutant_device_claiming_every_page_is_caught():
    mem, dev, chain = _inflate_chain([3, 4], 1)
    pfns, used = dii.InitOnInflateDevice(mem, 8, initialize=lambda p: True).handle_inflate(chain)
    with pytest.raises(PeerSpecViolation) as exc:  # page 4 was never dropped: it holds guest data
        dii.check_inflate_claims(pfns, mem.read(64, 1), used, reads_initialized=lambda p: p != 4)
    _violation(exc, "PROP-DII-DEV-1")


def test_init_reported_used_length_is_all_or_nothing():
    assert dir_.reported_initialized(4096, dir_.report_used_len(4096, True))
    assert not dir_.reported_initialized(4096, dir_.report_used_len(4096, False))
    for bad, reads in ((100, None), (4096, lambda: False)):  # a partial length; a false claim (the mutant)
        with pytest.raises(PeerSpecViolation) as exc:
            dir_.reported_initialized(4096, bad, reads)
        _violation(exc, "PROP-DIR-DEV-1")


def test_init_reported_driver_keeps_reporting_with_init_on_free_only_with_the_bit():
    """#244 extends the PAGE_POISON guarantee: an init_on_free guest on a device without PAGE_POISON keeps
    PAGE_REPORTING when the bit is negotiated, and only then (BAL-FB-DRV-3 otherwise)."""
    from refmodel.balloon.device import DEFAULT_OFFER
    from refmodel.balloon.driver import BalloonDriver
    from refmodel.balloon.proposals.reference import driver_class

    reporting, poison = Feature.VIRTIO_BALLOON_F_PAGE_REPORTING.mask, Feature.VIRTIO_BALLOON_F_PAGE_POISON.mask
    bit = BITS[Proposal.DEVICE_INIT_REPORTED].mask
    no_poison = DEFAULT_OFFER & ~poison
    profile = driver_class([Proposal.DEVICE_INIT_REPORTED])
    assert profile(init_on_free=True).choose_features(no_poison | bit) & (reporting | bit) == reporting | bit
    assert not profile(init_on_free=True).choose_features(no_poison) & reporting  # no bit: the 1.4 rule
    assert not BalloonDriver(init_on_free=True).choose_features(no_poison | bit) & reporting
    assert not profile(init_on_free=True, features=DEFAULT_OFFER & ~reporting).choose_features(
        no_poison | bit) & (reporting | bit)  # a driver that does not report does not start to
    with_poison = profile(init_on_free=True).choose_features(DEFAULT_OFFER | bit)
    assert with_poison & (reporting | poison) == reporting | poison  # 1.4 already allows it


@pytest.mark.parametrize("init_on_free", [True, False])
def test_init_reported_used_length_zero_makes_the_driver_zero_the_pages_again(init_on_free):
    """A device that returns used length 0 (and leaves other data, as 1.4 allows without PAGE_POISON):
    an init_on_free guest zeroes every reported page again before it is free; a guest that does not rely on
    free pages' value leaves them."""
    run = dir_.report_free_half(profile=True, init_on_free=init_on_free, device_initializes=False, n_pages=256)
    assert run.reporting and run.reported == run.free_pages == 128
    assert run.reinitialized == (run.reported if init_on_free else 0)
    assert run.zeroed_free is init_on_free


def test_init_reported_driver_that_trusts_used_length_zero_leaves_stale_free_pages(monkeypatch):
    monkeypatch.setattr(dir_.InitReportedBalloonDriver, "reinitialize", lambda self, mask: None)
    run = dir_.report_free_half(profile=True, init_on_free=True, device_initializes=False, n_pages=256)
    assert run.reported and not run.zeroed_free


def _bench_proposals():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_proposals.py"
    spec = importlib.util.spec_from_file_location("bench_proposals", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_init_reported_bench_figures_reclaim_nothing_under_1_4_and_the_free_half_under_the_profile():
    bench = _bench_proposals()
    figures = bench.device_init_reported([1, 4], model_pages=256)
    for gib, (v14, prof, wire, reinit, kept) in figures.items():
        half = gib << 17  # 4 KiB pages in half of the guest
        assert (v14, prof, wire) == (0, half, 0)
        assert (reinit, kept) == (half * BALLOON_PAGE_SIZE, 0)  # eager zeroing takes every page back


def test_init_on_inflate_bench_figures_come_from_the_model_device():
    bench = _bench_proposals()
    assert bench.init_on_inflate_chain(256) == (1024, 32, 256)  # PFN bytes, bitmap bytes back, pages claimed
    assert bench.init_on_inflate_chain(9) == (36, 2, 9)  # ceil(9 / 8) bitmap bytes
    desc, added, skipped = bench.device_init_on_inflate([4])[4]
    assert (desc, added, skipped) == (1024, 1024 * 32, 1024 * 256 * BALLOON_PAGE_SIZE)  # a quarter: 1 GiB


# -- stats-only ----------------------------------------------------------------------------------------------
def test_stats_only_mode_is_fixed_and_keeps_the_guest_memory():
    dev = so.StatsOnlyDevice()
    dev.features_ok(so.STATS_ONLY | Feature.VIRTIO_BALLOON_F_STATS_VQ.mask)
    dev.driver_ok()
    dev.buffer_on("statsq")
    assert dev.set_num_pages(0, 0) == 0
    for call, req, err in ((lambda: dev.buffer_on("inflateq"), "PROP-SO-DRV-1", PeerSpecViolation),
                           (lambda: dev.features_ok(0), "PROP-SO-DRV-2", PeerSpecViolation),
                           (lambda: dev.set_num_pages(256, 0), "PROP-SO-DEV-1", LocalSpecViolation)):
        with pytest.raises(err) as exc:
            call()
        _violation(exc, req)
    assert so.pages_kept(1000, 300, stats_only=True) == 1000
    assert so.pages_kept(1000, 300, stats_only=False) == 700


# -- bitmap-inflate-deflate ----------------------------------------------------------------------------------
def test_bitmap_round_trip_and_the_device_treats_bits_as_pfns():
    dev = bmp.BitmapBalloonDevice(256)
    assert dev.inflate(bmp.encode(64, 70, 0b1011)) == 3 and dev.balloon == 0b1011 << 64
    assert dev.deflate(bmp.encode(64, 2, 0b11)) == 2 and dev.balloon == 0b1000 << 64
    mask = (1 << 3) | (1 << 40000)
    assert sum(bmp.decode(b, 65536).bit_count() for b in bmp.buffers_for(mask, 65536)) == 2


@pytest.mark.parametrize("data, req", [
    (bmp.encode(64, 64, 1)[:8], "PROP-BMP-DRV-1"),                     # shorter than the header
    (bmp.encode(3, 8, 1), "PROP-BMP-DRV-2"),                           # an unaligned base
    (bmp.encode(192, 128, 1), "PROP-BMP-DRV-3"),                       # a length past memory
    (bmp.HEADER.pack(0, 200) + bytes(8), "PROP-BMP-DRV-1"),           # a bitmap longer than its buffer
    (bmp.encode(0, 8, 1) + bytes(8), "PROP-BMP-DRV-1"),               # bytes after the bitmap
])
def test_bitmap_malformed(data, req):
    with pytest.raises(PeerSpecViolation) as exc:
        bmp.BitmapBalloonDevice(256).inflate(data)
    _violation(exc, req)


def test_mutant_driver_deflating_what_it_never_inflated_is_caught():
    with pytest.raises(PeerSpecViolation) as exc:
        bmp.BitmapBalloonDevice(256).deflate(bmp.encode(0, 1, 1))
    _violation(exc, "BAL-OP-DRV-10")


def test_bitmap_costs_less_than_pfn_arrays_when_dense():
    pages = 1 << 18  # 1 GiB inflated, contiguous
    pfn, bitmap = bmp.pfn_cost(pages), bmp.cost(pages)
    assert pfn.bytes == 4 * pages and pfn.descriptors == 1024
    assert bitmap.bytes * 30 < pfn.bytes and bitmap.round_trips == 8
    encoded = bmp.buffers_for((1 << pages) - 1, pages)
    assert len(encoded) == bitmap.descriptors and sum(map(len, encoded)) == bitmap.bytes


# -- combined-inflate-deflate-vq -----------------------------------------------------------------------------
def test_combined_buffer_moves_pages_in_one_step():
    dev = cmb.CombinedBalloonDevice(64)
    assert dev.process(cmb.encode([1, 2, 3], [])) == (3, 0)
    assert dev.process(cmb.encode([9], [2])) == (1, 1) and dev.balloon == 0b1000001010 and dev.actual == 3
    assert cmb.migration_round_trips(10, combined=True) * 2 == cmb.migration_round_trips(10, combined=False)


@pytest.mark.parametrize("data, req", [
    (b"\x01\x00", "PROP-CMB-DRV-1"),
    (cmb.encode([1], [])[:-1], "PROP-CMB-DRV-1"),
    (cmb.encode([1, 1], []), "PROP-CMB-DRV-2"),
    (cmb.encode([], [5]), "PROP-CMB-DRV-2"),
    (cmb.encode([99], []), "BAL-OP-D1"),
])
def test_combined_malformed_changes_nothing(data, req):
    dev = cmb.CombinedBalloonDevice(64)
    with pytest.raises(PeerSpecViolation) as exc:
        dev.process(data)
    _violation(exc, req)
    assert dev.balloon == 0 and dev.actual == 0


def test_combined_mutant_driver_using_the_old_queues_is_caught():
    with pytest.raises(PeerSpecViolation) as exc:
        cmb.CombinedBalloonDevice(64).buffer_on("deflateq")
    _violation(exc, "PROP-CMB-DRV-3")
    assert re.search("combined", str(exc.value))


@pytest.mark.parametrize("numbering, drop, want", [
    ("fixed", (), 5), ("fixed", ("VIRTIO_BALLOON_F_STATS_VQ",), 5),
    ("compact-by-offered", (), 5), ("compact-by-offered", ("VIRTIO_BALLOON_F_STATS_VQ",), 4),
    ("compact-by-negotiated", ("VIRTIO_BALLOON_F_FREE_PAGE_HINT", "VIRTIO_BALLOON_F_PAGE_REPORTING"), 3),
])
def test_combined_queue_comes_after_the_1_4_queues_under_each_numbering(numbering, drop, want):
    """AMB-PROP-CMB-INDEX: no 1.4 queue moves; under a compact numbering the index counts the queues that
    exist, so the device and a driver of the same numbering agree, and a device and driver that set it up
    move pages over it."""
    from refmodel.balloon.device import DEFAULT_OFFER
    from refmodel.balloon.proposals.reference import device_class, driver_class
    from refmodel.balloon.queues import QueueNumbering
    from refmodel.system.guest_os import GuestOS

    n = QueueNumbering(numbering)
    offered = DEFAULT_OFFER & ~sum(Feature[f].mask for f in drop)
    assert cmb.combined_index(n, offered, offered) == want
    os_ = GuestOS(96)
    dev = device_class([Proposal.COMBINED_VQ])(os_.mem, offered, numbering=n)
    drv = driver_class([Proposal.COMBINED_VQ])(numbering=n)
    assert drv.probe(dev, os_)
    assert drv.index_of[cmb.QUEUE] == dev.index_of[cmb.QUEUE] == want

    def turn():
        dev.run()
        irq = dev.take_interrupts()
        drv.interrupt(irq.queues, irq.config)
        drv.run()

    dev.set_target(12)
    for _ in range(4):
        turn()
    assert len(drv.balloon) == dev.ballooned.bit_count() == dev.config.get("actual") == 12
    before = set(drv.balloon)
    assert drv.exchange(4) == 4 and dev.config.get("actual") == 12  # an exchange leaves actual as it was
    for _ in range(2):
        turn()
    assert drv.exchanges_used == 1 and len(set(drv.balloon) - before) == 4
    assert {p for p in range(96) if dev.ballooned >> p & 1} == set(drv.balloon) and dev.error is None


def test_combined_reference_device_refuses_the_old_queues_and_applies_nothing_malformed():
    from refmodel.balloon.proposals.reference import device_class, driver_class
    from refmodel.system.guest_os import GuestOS

    os_ = GuestOS(96)
    dev = device_class([Proposal.COMBINED_VQ])(os_.mem)
    drv = driver_class([Proposal.COMBINED_VQ])()
    assert drv.probe(dev, os_)
    drv.send_pfns("inflateq", [40])
    with pytest.raises(PeerSpecViolation) as exc:
        dev.run()
    _violation(exc, "PROP-CMB-DRV-3")
    assert dev.ballooned == 0


# -- the RFC series (spec/proposal-rfc) ----------------------------------------------------------------------
def test_rfc_series_applies_to_1_4_and_marks_only_profile_ids(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    from spec.proposal.build import DEFAULT_UPSTREAM, FILES

    if not DEFAULT_UPSTREAM.exists():
        pytest.skip("../shared/reference/virtio-spec-1.4 is not next to this checkout")
    series = sorted((Path(__file__).resolve().parents[2] / "spec" / "proposal-rfc").glob("0*.patch"))[1:]
    for f in FILES:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEFAULT_UPSTREAM / f, tmp_path / f)
    marked = set()
    for patch in series:
        subprocess.run(["git", "apply", str(patch)], cwd=tmp_path, check=True, capture_output=True)
        marked |= set(re.findall(r"^\+% (PROP-HWA-[A-Z]+-\d+)$", patch.read_text(), re.M))
    assert marked == {r.id for r in catalogue().values() if r.profile == "hint-wait-on-ack"}
    assert "VIRTIO_BALLOON_F_HINT_WAIT_ON_ACK(6)" in (tmp_path / FILES[0]).read_text()
