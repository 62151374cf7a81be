"""What the proposal profiles save or cost, from the model's codecs (refmodel.balloon.proposals).

* bitmap-inflate-deflate: descriptors and bytes per inflated MiB, PFN arrays (256 PFNs a buffer, as Linux)
  against bitmaps (4 KiB of words a buffer), inflating a quarter of the guest either in one stretch or
  spread over all of it, at guest sizes 1 GiB to 1 TiB; round trips (Linux waits for each buffer).
  The closed forms are checked against the encoder at the smallest size.
* combined-inflate-deflate-vq: round trips to migrate balloon pages (compaction: inflate new, deflate old).
* stats-only: the pages a guest keeps when the host asks for a quarter, and what hinting still saves
  in a migration (``predict_full_pages``, half the guest in use, the free half holding old data).
* hint-wait-on-ack: round trips of one hinting round over the free half (4 MiB blocks), lock-free (a
  full queue per kick) against waiting for each ACK, as the RFC's driver does.
* device-init-on-inflate: one Linux inflate buffer (256 PFNs) through the profile's device on a split ring:
  the bitmap bytes it writes back and the pages it claims; scaled to the host taking a quarter of the guest
  and giving it back, the descriptors and bytes the profile adds and the bytes the guest need not
  initialize again on deflate (a device that discards every page, as QEMU does, claims them all).
* device-init-reported: an init_on_free guest on a device without PAGE_POISON, half the guest free: the
  pages the host can reclaim by reporting under 1.4 (the driver's negotiation drops PAGE_REPORTING) and
  under the profile, the ring bytes the profile adds, and what the guest zeroes again when the device
  returns used length 0. From the reference device and driver on a small guest (``report_free_half``),
  scaled to each size by the shares that run measured.

Ends with one key=value line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.balloon.proposals import bitmap_inflate as bmp  # noqa: E402
from refmodel.balloon.proposals import combined_vq, stats_only  # noqa: E402
from refmodel.balloon.proposals import device_init_on_inflate as dii  # noqa: E402
from refmodel.balloon.proposals import device_init_reported as dir_  # noqa: E402
from refmodel.virtio.memory import GuestMemory  # noqa: E402
from refmodel.virtio.split.device import SplitQueueDevice  # noqa: E402
from refmodel.virtio.split.driver import SplitQueueDriver  # noqa: E402
from refmodel.virtio.virtq import QueueAddresses  # noqa: E402
from refmodel.balloon.constants import BALLOON_PAGE_SIZE  # noqa: E402
from refmodel.balloon.device import DEFAULT_OFFER  # noqa: E402
from refmodel.balloon.queues import QueueNumbering  # noqa: E402
from refmodel.system.guest import range_mask  # noqa: E402
from refmodel.system.migration import predict_full_pages  # noqa: E402

PAGES_PER_MIB = 256
BLOCK_PAGES = 1 << 10  # Linux hint block (order 10, 4 MiB)


def spread_mask(n_pages: int, share: int) -> int:
    """Every ``share``-th page: a quarter of the guest, spread over all of it."""
    mask, unit = 0, 1
    for i in range(0, 64, share):
        unit |= 1 << i
    word = unit & ((1 << 64) - 1)
    for base in range(0, n_pages, 64):
        mask |= word << base
    return mask & range_mask(0, n_pages)


def check_closed_forms(n_pages: int) -> None:
    """The formulas the table uses, against the encoder, at one small size."""
    for mask, span in ((range_mask(0, n_pages // 4), n_pages // 4), (spread_mask(n_pages, 4), n_pages)):
        bufs = bmp.buffers_for(mask, n_pages)
        c = bmp.cost(span)
        if (len(bufs), sum(map(len, bufs))) != (c.descriptors, c.bytes):
            raise SystemExit(f"closed form {c} disagrees with the encoder ({len(bufs)} buffers, "
                             f"{sum(map(len, bufs))} bytes) at {n_pages} pages")
        if sum(bmp.decode(b, n_pages).bit_count() for b in bufs) != mask.bit_count():
            raise SystemExit("the encoder lost pages")


def device_init_reported(sizes: list[int], model_pages: int = 1024) -> dict[int, tuple[int, ...]]:
    """Per guest size (GiB): pages reclaimable by reporting under 1.4 and under the profile, ring bytes the
    profile adds, bytes re-initialized when the device returns used length 0, and the pages the host keeps
    then (reported and not written again by the guest's eager re-initialization). The reference device and
    driver run on a ``model_pages`` guest (their own negotiation decides whether the guest reports); each
    size takes the shares that run measured of its free half."""
    def run(**kw: bool) -> dir_.ReportingRun:
        return dir_.report_free_half(n_pages=model_pages, **kw)

    v14, prof = run(profile=False, init_on_free=True), run(profile=True, init_on_free=True)
    used0 = run(profile=True, init_on_free=True, device_initializes=False)
    plain = run(profile=False, init_on_free=False)  # 1.4, a guest without init_on_free: reporting on
    if v14.reporting or not (prof.reporting and used0.reporting and plain.reporting):
        raise SystemExit(f"negotiation: 1.4 reports {v14.reporting}, the profile {prof.reporting}")
    if not (prof.zeroed_free and used0.zeroed_free):
        raise SystemExit("an init_on_free guest found a free page that is not zeros under the profile")
    if v14.reported:
        raise SystemExit(f"1.4 reported {v14.reported} pages with PAGE_REPORTING off")
    out: dict[int, tuple[int, ...]] = {}
    for gib in sizes:
        free = gib * 1024 * PAGES_PER_MIB // 2
        out[gib] = (free * v14.reported // v14.free_pages, free * prof.reported // prof.free_pages,
                    (prof.wire_bytes - plain.wire_bytes) * free // prof.free_pages,
                    free * used0.reinitialized // used0.free_pages * BALLOON_PAGE_SIZE,
                    free * (used0.reported - used0.reinitialized) // used0.free_pages)
    print(f"  model ({model_pages} pages, {prof.free_pages} free): 1.4 reports "
          f"{'on' if v14.reporting else 'off'}, {v14.reported} pages; the profile reports {prof.reported}, "
          f"{prof.wire_bytes} ring bytes against 1.4's {plain.wire_bytes} (a guest without init_on_free); "
          f"used length 0: {used0.reinitialized} pages zeroed again")
    return out


def init_on_inflate_chain(n_pfns: int = 256) -> tuple[int, int, int]:
    """One inflate chain of ``n_pfns`` PFNs through the profile's device, every page dropped: (readable
    bytes, the used length the device returns, pages it claims initialized)."""
    pages = n_pfns + 8
    mem = GuestMemory(pages * 4096)
    addrs = QueueAddresses.packed_at((pages - 2) * 4096, 8)
    drv, dev = SplitQueueDriver(mem, addrs, 8), SplitQueueDevice(mem, addrs, 8)
    pfns = list(range(n_pfns))
    mem.write(0, b"".join(p.to_bytes(4, "little") for p in pfns))
    drv.add([(0, 4 * n_pfns)], writable=[(4 * n_pfns, dii.bitmap_len(n_pfns))])
    drv.publish()
    chain = dev.pop()
    assert chain is not None
    got, used = dii.InitOnInflateDevice(mem, pages, initialize=lambda p: True).handle_inflate(chain)
    claimed = dii.initialized_pfns(got, mem.read(4 * n_pfns, dii.bitmap_len(n_pfns)), used)
    return chain.readable_len, used, len(claimed)


def device_init_on_inflate(sizes: list[int], chain: tuple[int, int, int] | None = None
                           ) -> dict[int, tuple[int, int, int]]:
    """Per guest size, the host inflating and deflating a quarter: (descriptors added, bytes added, bytes the
    guest need not initialize again), from one chain through the model's device (``chain``: its figures,
    :func:`init_on_inflate_chain` of Linux's 256 PFNs, if already run)."""
    pfn_bytes, used, claimed = chain or init_on_inflate_chain(PAGES_PER_MIB)
    out = {}
    for gib in sizes:
        chains = gib * 1024 // 4  # one 256-PFN (1 MiB) chain per inflated MiB
        out[gib] = (chains, chains * used, chains * claimed * 4096)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-gib", type=int, default=1024, help="largest guest (GiB), a power of two")
    ap.add_argument("--queue-size", type=int, default=128, help="free_page_vq size for the lock-free round")
    args = ap.parse_args()
    sizes = [1 << k for k in range(0, args.max_gib.bit_length()) if 1 << k <= args.max_gib]
    check_closed_forms(sizes[0] * 1024 * PAGES_PER_MIB)
    print("closed forms checked against the encoder at", sizes[0], "GiB")

    print("\nbitmap-inflate-deflate: inflating a quarter of the guest")
    print(f"{'guest':>8}{'MiB infl':>10}{'PFN desc/MiB':>14}{'PFN B/MiB':>11}{'PFN trips':>11}"
          f"{'bmp desc/MiB':>14}{'bmp B/MiB':>11}{'bmp trips':>11}{'spread B/MiB':>14}{'spread trips':>14}")
    figures = {}
    for gib in sizes:
        n = gib * 1024 * PAGES_PER_MIB
        infl = n // 4
        mib = infl / PAGES_PER_MIB
        pfn, dense, spread = bmp.pfn_cost(infl), bmp.cost(infl), bmp.cost(n)
        figures[gib] = (pfn, dense, spread, mib)
        print(f"{gib:>6}Gi{mib:>10.0f}{pfn.descriptors / mib:>14.2f}{pfn.bytes / mib:>11.0f}"
              f"{pfn.round_trips:>11}"
              f"{dense.descriptors / mib:>14.4f}{dense.bytes / mib:>11.1f}{dense.round_trips:>11}"
              f"{spread.bytes / mib:>14.1f}{spread.round_trips:>14}")

    print("\ncombined-inflate-deflate-vq: migrating balloon pages (descriptors, bytes, round trips)")
    for pages in (1, 256, 65536):
        two, one = (combined_vq.migration_round_trips(pages, combined=c) for c in (False, True))
        print(f"{pages:>8} pages: {two:>7} round trips with two queues, {one:>7} with one")
    for per in (1, 256):
        two, one = (combined_vq.migration_cost(65536, combined=c, per_buffer=per) for c in (False, True))
        print(f"   65536 pages, {per:>3} a buffer: two queues {two}, combined {one}")
    print("  the combined queue's index (AMB-PROP-CMB-INDEX), by numbering and offer:")
    # Feature bits 1, 3 and 5 bring statsq, free_page_vq and reporting_vq.
    offers = {"all 1.4 queues": 0, "no statsq": 1 << 1,
              "inflate/deflate only": (1 << 1) | (1 << 3) | (1 << 5)}
    for numbering in QueueNumbering:
        row = ", ".join(f"{k} {combined_vq.combined_index(numbering, DEFAULT_OFFER & ~d, DEFAULT_OFFER & ~d)}"
                        for k, d in offers.items())
        print(f"    {numbering.value:>22}: {row}")

    print("\nstats-only: the host asks for a quarter; half the guest is in use, the rest hinted")
    for gib in (sizes[0], sizes[-1]):
        n = gib * 1024 * PAGES_PER_MIB
        kept_so = stats_only.pages_kept(n, n // 4, stats_only=True)
        kept = stats_only.pages_kept(n, n // 4, stats_only=False)
        print(f"{gib:>6}Gi keeps {stats_only.mib(kept_so):>9.0f} MiB stats-only, "
              f"{stats_only.mib(kept):>9.0f} MiB ballooning")
    n_small = sizes[0] * 1024 * PAGES_PER_MIB
    in_use, everything = range_mask(0, n_small // 2), range_mask(0, n_small)
    # Free pages of a long-running guest hold old data: without hints they travel in full.
    sent_hinted = predict_full_pages(n_small, everything, everything & ~in_use)
    sent_plain = predict_full_pages(n_small, everything, 0)
    print(f"  migration of the {sizes[0]} GiB guest, its free half holding old data: {sent_hinted} full "
          f"pages sent with hints, {sent_plain} without; a stats-only guest keeps hinting, and this saving")

    print("\nhint-wait-on-ack: one hinting round over the free half")
    trips = {}
    for gib in (sizes[0], sizes[-1]):
        blocks = gib * 1024 * PAGES_PER_MIB // 2 // BLOCK_PAGES
        lock_free = -(-blocks // (args.queue_size - 1))  # one slot kept for STOP
        trips[gib] = (blocks, lock_free)
        print(f"{gib:>6}Gi {blocks:>7} blocks: {lock_free:>6} round trips lock-free, {blocks:>7} waiting for "
              "each ACK")

    print("\ndevice-init-reported: an init_on_free guest, device without PAGE_POISON, half the guest free")
    init = device_init_reported(sizes)
    print(f"{'guest':>8}{'reclaim 1.4':>13}{'reclaim prof':>14}{'wire +B':>9}{'used 0: re-init MiB':>21}"
          f"{'kept pages':>12}")
    for gib in sizes:
        r14, rp, wire, reinit, kept = init[gib]
        print(f"{gib:>6}Gi{r14:>13}{rp:>14}{wire:>9}{reinit / 2**20:>21.0f}{kept:>12}")

    print("\ndevice-init-on-inflate: the host inflates a quarter of the guest, then deflates it")
    chain = init_on_inflate_chain(PAGES_PER_MIB)
    pfn_bytes, used, claimed = chain
    print(f"  one Linux inflate chain: {pfn_bytes} PFN bytes, the device writes {used} bitmap bytes back "
          f"(+1 descriptor, +{100 * used / pfn_bytes:.1f} %) and claims {claimed} of {PAGES_PER_MIB} pages")
    dii_rows = device_init_on_inflate(sizes, chain)
    print(f"{'guest':>8}{'+desc':>10}{'+bytes':>12}{'not re-initialized MiB':>24}")
    for gib in sizes:
        desc, added, skipped = dii_rows[gib]
        print(f"{gib:>6}Gi{desc:>10}{added:>12}{skipped / 2**20:>24.0f}")

    big = sizes[-1]
    pfn, dense, spread, mib = figures[big]
    print(f"guest_gib={big} pfn_bytes_per_mib={pfn.bytes / mib:.0f} "
          f"pfn_desc_per_mib={pfn.descriptors / mib:.2f} bitmap_bytes_per_mib={dense.bytes / mib:.1f} "
          f"bitmap_spread_bytes_per_mib={spread.bytes / mib:.1f} "
          f"pfn_round_trips={pfn.round_trips} bitmap_round_trips={dense.round_trips} "
          f"stats_only_kept_mib={stats_only.mib(big * 1024 * PAGES_PER_MIB):.0f} "
          f"woa_round_trips={trips[big][0]} lock_free_round_trips={trips[big][1]} "
          f"small_sent_hinted={sent_hinted} small_sent_plain={sent_plain} "
          f"cmb_round_trips={combined_vq.migration_round_trips(65536, combined=True)} "
          f"two_queue_round_trips={combined_vq.migration_round_trips(65536, combined=False)} "
          f"dir_reclaim_pages_1_4={init[big][0]} dir_reclaim_pages_profile={init[big][1]} "
          f"dir_wire_bytes_added={init[big][2]} dir_reinit_bytes_used0={init[big][3]} "
          f"dir_kept_pages_used0={init[big][4]} dii_bitmap_bytes_per_chain={used} "
          f"dii_bytes_added={dii_rows[big][1]} dii_not_reinitialized_bytes={dii_rows[big][2]}")


if __name__ == "__main__":
    main()
