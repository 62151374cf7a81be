"""Stopping a run when asked: SIGINT (Ctrl-C) or SIGTERM ends it within a moment, keeping what it judged.

The first signal raises :class:`KeyboardInterrupt` in the main thread wherever it is (a blocked read of an
adapter's socket returns with EINTR for it); the runner then ends the search and keeps its verdicts, and
the report says ``interrupted``. A second signal ends the process at once, after killing the children
registered here (the C library's process, QEMU, a guest), which are reaped either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from types import FrameType

#: Exit status of a run that was stopped: 128 + SIGINT, as a shell reports it.
EXIT_INTERRUPTED = 130

_children: dict[int, bool] = {}  # pid: whether it leads a process group of its own (killed whole)
_signalled = 0


def register_child(pid: int, *, group: bool = False) -> None:
    """A process of the run that a second signal must not leave behind (``group``: its whole group)."""
    _children[pid] = group


def forget_child(pid: int) -> None:
    _children.pop(pid, None)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _signalled
    _signalled += 1
    if _signalled == 1:
        raise KeyboardInterrupt(signal.Signals(signum).name)
    for pid, group in list(_children.items()):  # asked twice: no report, no cleanup beyond this
        with contextlib.suppress(OSError):
            (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    sys.stderr.write("virtio-conformance: stopped at once\n")
    os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM stop the run as above, even where the shell started it with
    SIGINT ignored (a background job)."""
    global _signalled
    _signalled = 0
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def interrupted() -> bool:
    """Whether a stop signal arrived in the current :func:`stop_on_signals` block."""
    return _signalled > 0


class GroupWatcher:
    """A shell that kills a process group once its pipe from us reads EOF: when we close it, or when this
    process dies however it dies (a CI timeout's SIGKILL runs none of our cleanup; QEMU's own session keeps
    a terminal's signals from it; PR_SET_PDEATHSIG does not survive exec on every host)."""

    def __init__(self, pgid: int) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.proc = subprocess.Popen(["/bin/sh", "-c", f"read -r _; kill -9 -{pgid} 2>/dev/null", "watch"],
                                         stdin=read_end, start_new_session=True)
        finally:
            os.close(read_end)

    def close(self) -> None:
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
