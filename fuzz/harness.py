"""What a fuzz target may end in, and the per-input time bound.

A parser of untrusted bytes may return a result or raise its project error type carrying a requirement
ID or a field name (``PeerSpecViolation`` and friends, or the adapter's one-line error). Anything else is
a :class:`Finding`. So is an input that takes more CPU time than :func:`time_bound` of its size (CPU, not
wall-clock, time: a fuzzer at nice 19 on busy shared cores waits for a core longer than any bound): a fixed
allowance for scheduling and GC noise on shared cores, plus a cost per byte above any parser's linear
cost, so only super-linear growth (a re-read per entry, a loop per byte pair) trips it. An input's size
is its length plus the guest memory its buffers claim (:func:`charge`): a 100 KiB stats buffer is a big
input even if it took 20 bytes to describe. Memory is bounded by libFuzzer's ``-rss_limit_mb``
(:mod:`fuzz.run`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from refmodel.errors import SpecViolation

#: Seconds any input may take, whatever its length (GC pauses, a busy neighbour on 2 shared cores).
TIME_FIXED = 0.5
#: Seconds more per input byte: twice the slowest linear cost measured (TOML, ~1 us per byte).
TIME_PER_BYTE = 2e-6

_charged = [0]

class Finding(Exception):
    """A parser ended in something other than a result or its own named error."""


def time_bound(n_bytes: int) -> float:
    return TIME_FIXED + TIME_PER_BYTE * n_bytes


def charge(n_bytes: int) -> None:
    """Count ``n_bytes`` of guest memory the current input points the parser at into its size."""
    _charged[0] += n_bytes


def check_error(e: BaseException, allowed: tuple[type[BaseException], ...]) -> None:
    """Raise :class:`Finding` unless ``e`` is an allowed project error that names what it is about."""
    if isinstance(e, SpecViolation):
        if not e.req_id:
            raise Finding(f"{type(e).__name__} without a requirement ID: {e}") from e
        return
    if isinstance(e, allowed):
        msg = str(e).strip()
        if not msg or "\n" in msg:
            raise Finding(f"{type(e).__name__} is not one line naming its field: {msg!r}") from e
        return
    raise Finding(f"{type(e).__name__}: {e}") from e


def guarded_target(parse: Callable[[bytes], object],
                   allowed: tuple[type[BaseException], ...] = ()) -> Callable[[bytes], None]:
    """``parse`` as a fuzz target: an allowed outcome returns, anything else raises :class:`Finding`."""
    def target(data: bytes) -> None:
        _charged[0] = 0
        start = time.process_time()
        try:
            parse(data)
        except Finding:
            raise
        except Exception as e:  # noqa: BLE001 - judging every exception is the point
            check_error(e, allowed)
        took, size = time.process_time() - start, len(data) + _charged[0]
        if took > time_bound(size):
            raise Finding(f"{size}-byte input took {took:.3f} s (bound {time_bound(size):.3f} s)")
    target.__wrapped__ = parse  # type: ignore[attr-defined]
    target.__name__ = getattr(parse, "__name__", "target")
    target.__doc__ = parse.__doc__
    return target
