"""The real-guest bench's destination compare (bench/bench_linux_migration.py, ``classify``): what counts
as a lost page. A page the source discarded after sending it (a reported free page: QEMU punches it out
and the dirty log does not see it) is zero at the source and a stale copy at the destination; it held no
guest data, so it is not lost. Before, every differing page not zero at the destination was counted
lost, which made the 2 GiB reporting runs 'lose' 53-57 whole 4 MiB blocks."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

PAGE = 4096


def _bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "bench_linux_migration.py"
    spec = importlib.util.spec_from_file_location("bench_linux_migration", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ram(pages: dict[int, bytes], n: int = 8) -> io.BytesIO:
    buf = bytearray(n * PAGE)
    for p, data in pages.items():
        buf[p * PAGE:p * PAGE + len(data)] = data
    return io.BytesIO(bytes(buf))


def test_each_kind_of_difference_is_told_apart():
    blob = b"\x5a" * PAGE
    src = _ram({1: blob, 2: blob, 4: b"\x01" * 8 + blob[8:], 6: blob})
    dst = _ram({1: blob, 3: blob, 4: blob, 5: blob, 6: b"\x02" + blob[1:]})
    before = _ram({5: blob})  # the destination's own boot contents: page 5 was not rewritten by the stream
    got = _bench().classify(src, dst, before)
    # page 2: never sent (zero at the destination); page 3: discarded by the source after it was sent;
    # pages 4 and 6: stale copies of pages the source changed (8 bytes and 1 byte); page 5: differs
    # from a zero source page, but holds the destination's boot contents: also 'discarded' (zero source).
    assert got["unsent_free"] == 1
    assert got["discarded_after_send"] == 2
    assert got["lost"] == 2
    assert got["differing"] == [(4, 8), (6, 1)]
    assert got["never_written_by_stream"] == 0


def test_a_reported_block_discarded_at_the_source_is_not_lost():
    """The recorded 2 GiB reporting runs: whole blocks zero at the source, random at the destination."""
    rnd = bytes((i * 37 + 11) % 251 for i in range(PAGE))
    n = 4
    src, dst, before = _ram({}, n), _ram({p: rnd for p in range(n)}, n), _ram({}, n)
    got = _bench().classify(src, dst, before)
    assert (got["lost"], got["discarded_after_send"]) == (0, n)


def test_identical_memory_has_no_difference():
    blob = b"\x11" * PAGE
    got = _bench().classify(_ram({0: blob}), _ram({0: blob}), _ram({}))
    assert got == {"lost": 0, "differing": [], "unsent_free": 0, "discarded_after_send": 0,
                   "never_written_by_stream": 0}
