"""How long a guest could not get on: the seconds its host threads, or the suite's own (the vhost-user backend
the guest waits on), spent runnable but waiting for a core (``/proc/PID/task/TID/schedstat``, second field,
run_delay in ns).

A timing window judged on a loaded host ("no change for 1 s") is judged on the time the guest had: wall time
less these waits. On a kernel without schedstat the waits read 0 and the window is wall time."""

from __future__ import annotations

import contextlib
import os
import time


def _task_delays(proc: str, out: dict[int, int]) -> None:
    """Add run_delay (ns) of every thread of ``/proc/<proc>`` to ``out``, by thread ID."""
    for task in os.scandir(f"/proc/{proc}/task"):
        with open(f"/proc/{proc}/task/{task.name}/schedstat") as f:
            out[int(task.name)] = int(f.read().split()[1])


def _own_delays() -> dict[int, int]:
    out: dict[int, int] = {}
    with contextlib.suppress(OSError, IndexError, ValueError):
        _task_delays("self", out)
    return out


def _group_delays(pgid: int) -> dict[int, int]:
    """run_delay (ns) of every thread of every process in process group ``pgid``, by thread ID."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after comm, which may hold spaces
            if int(fields[2]) == pgid:  # state, ppid, pgrp
                _task_delays(entry.name, out)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or no schedstat
    return out


class _Delays:
    """Waits (ns) of a changing set of threads since the first look (threads born since count whole)."""

    def __init__(self, sample: dict[int, int]) -> None:
        self._seen = sample

    def more(self, now: dict[int, int]) -> int:
        grew = sum(max(ns - self._seen.get(tid, 0), 0) for tid, ns in now.items())
        self._seen.update(now)
        return grew


class CoreWaits:
    """Seconds since this was made in which process group ``pgid`` or this process waited for a core. Per look,
    the larger of the two, and never more than the time between looks (threads waiting at once overlap)."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self._guest, self._own = _Delays(_group_delays(pgid)), _Delays(_own_delays())
        self._last = time.monotonic()
        self._waited = 0.0

    def seconds(self) -> float:
        now = time.monotonic()
        grew = max(self._guest.more(_group_delays(self.pgid)), self._own.more(_own_delays())) / 1e9
        self._waited += min(grew, now - self._last)
        self._last = now
        return self._waited
