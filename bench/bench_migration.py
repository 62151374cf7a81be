"""One precopy round with hint application, at 1 TiB (2^28 pages) and a smaller guest, side by side.

The guest has a fraction of its pages in use; the rest is hinted in 4 MiB blocks (2^10 pages, the
Linux hint block). A workload dirties some in-use pages: a share ``--late`` of them after the bulk
pass has sent them, the rest before the pass starts. The migration: dirty logging on, hints applied
(bitmap AND-NOT), early writes, sync, the bulk pass, the late writes, sync, the resends, switchover. Pages
sent are printed against the honest ideal (``refmodel.system.migration.HonestIdeal``: in use at switchover plus
the late writes' resends), with the old figure (in use + every page dirtied, not a lower bound) beside
it. Targets for the 1 TiB case: <= 1 s and <= 512 MiB RSS. Ends with one key=value line.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from refmodel.system.guest import GuestPages  # noqa: E402
from refmodel.system.migration import Migration  # noqa: E402

BLOCK_ORDER = 10  # 4 MiB hint blocks


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def blocks_mask(n_pages: int, blocks) -> int:
    """The pages of the given 2^10-page blocks, built as bytes and converted once (no per-block big-int ops)."""
    ones = b"\xff" * ((1 << BLOCK_ORDER) // 8)
    buf = bytearray(n_pages // 8)
    for b in blocks:
        buf[b * len(ones):(b + 1) * len(ones)] = ones
    return int.from_bytes(buf, "little")


def one_round(n_pages: int, in_use_frac: float, dirty_frac: float, late: float,
              seed: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    n_blocks = n_pages >> BLOCK_ORDER
    in_use_blocks = set(rng.sample(range(n_blocks), int(n_blocks * in_use_frac)))
    guest = GuestPages(n_pages, track_contents=False)
    guest.allocated = blocks_mask(n_pages, in_use_blocks)
    hints = guest.free  # the driver hints every block not in use
    dirty_blocks = rng.sample(sorted(in_use_blocks), max(1, int(len(in_use_blocks) * dirty_frac)))
    n_late = int(len(dirty_blocks) * late)
    early = blocks_mask(n_pages, dirty_blocks[n_late:])  # written before the bulk pass reaches them
    after = blocks_mask(n_pages, dirty_blocks[:n_late])  # written after the bulk pass sent them

    t0 = time.perf_counter()
    m = Migration(guest)
    m.start()
    m.apply_hint(hints)                         # the driver's hints for this round
    m.log_writes(early)                         # the workload's writes, as the dirty log records them
    m.sync()                                    # the sync that starts the pass: early writes need no resend
    m.send()                                    # the bulk pass
    m.log_writes(after)
    m.sync()
    m.send()
    m.switchover()
    wall = time.perf_counter() - t0
    st = m.stats
    return {"pages": n_pages, "wall_s": wall, "rss_mib": rss_mib(), "sent": st.pages_sent, "ideal": st.ideal,
            "honest": st.honest_ideal, "resends": st.unavoidable_resends,
            "no_hint": n_pages + st.pages_dirtied}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log2-pages", type=int, default=28, help="large guest: 2^N pages (28 = 1 TiB)")
    p.add_argument("--in-use", type=float, default=0.25)
    p.add_argument("--dirty", type=float, default=0.05)
    p.add_argument("--late", type=float, default=0.5, help="share of dirtied pages written after the bulk pass")
    args = p.parse_args()
    small = one_round(1 << (args.log2_pages - 6), args.in_use, args.dirty, args.late)
    big = one_round(1 << args.log2_pages, args.in_use, args.dirty, args.late)
    print(f"one precopy migration, {args.in_use:.0%} in use, {args.dirty:.0%} of it dirtied "
          f"({args.late:.0%} of that after the bulk pass), 4 MiB hint blocks")
    print(f"{'guest':>12}{'pages':>12}{'wall s':>9}{'maxRSS MiB':>12}{'sent':>12}{'honest':>12}"
          f"{'resends':>10}{'sent/hon':>9}{'old ideal':>12}{'sent/old':>9}{'no hints':>12}")
    for r in (small, big):
        gib = r["pages"] * 4096 / 2**30
        print(f"{gib:>10.0f}Gi{r['pages']:>12}{r['wall_s']:>9.3f}{r['rss_mib']:>12.0f}{r['sent']:>12}"
              f"{r['honest']:>12}{r['resends']:>10}{r['sent'] / r['honest']:>9.3f}{r['ideal']:>12}"
              f"{r['sent'] / r['ideal']:>9.3f}{r['no_hint']:>12}")
    print(f"scaling: {big['pages'] / small['pages']:.0f}x pages took {big['wall_s'] / small['wall_s']:.1f}x time")
    print(f"pages={big['pages']} wall_s={big['wall_s']:.3f} rss_mib={big['rss_mib']:.0f} sent={big['sent']} "
          f"honest_ideal={big['honest']} sent_over_honest={big['sent'] / big['honest']:.3f} "
          f"old_ideal={big['ideal']} sent_over_old_ideal={big['sent'] / big['ideal']:.3f} "
          f"small_wall_s={small['wall_s']:.4f}")


if __name__ == "__main__":
    main()
