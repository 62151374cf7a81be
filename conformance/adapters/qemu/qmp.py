"""QMP through QEMU's own client library, ``qemu.qmp``, driven synchronously by its legacy wrapper
(``QEMUMonitorProtocol``). Replies are matched to commands by ID, so a reply that comes after its
command gave up is dropped, never taken for the next command's.

Every failure becomes one line of :class:`QmpError`, never an asyncio traceback, and every wait has a
deadline. QEMU connects to us (``-qmp unix:PATH``, as for qtest), because the wrapper's ``accept``
takes a timeout; its ``connect`` waits for QEMU's greeting without one, so ``listen=False`` (a QEMU
started with ``server=on``) is for the benches only.

The price, against the hand-written socket client it replaced (QEMU 7.2, both on one QEMU,
interleaved): a ``query-status`` round trip costs ~0.47 ms instead of ~0.21 ms (2.3x; 2.5-3x on a
loaded machine), and QMP's share of a ci run grew from ~9% to ~13%; QEMU's start is no slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

T = TypeVar("T")


class QmpError(RuntimeError):
    """QEMU returned an error, did not answer in time, or the connection failed."""


class QmpClient:
    """``QmpClient(path, listen=True)`` binds ``path``; start QEMU, then :meth:`accept`. Without
    ``listen`` it connects to QEMU's socket at once. ``timeout`` bounds each command and the accept."""

    def __init__(self, path: str, timeout: float = 10.0, *, listen: bool = False) -> None:
        self.timeout = timeout
        self.broken = False  # the connection is gone: every later command fails
        try:
            self._qmp = QEMUMonitorProtocol(path, server=listen)
            if not listen:
                self._qmp.connect()
        except (QMPError, OSError, EOFError) as e:
            raise QmpError(f"cannot {'listen on' if listen else 'connect to'} {path}: {e}") from None
        self._qmp.settimeout(timeout)

    def accept(self) -> None:
        """Wait for QEMU to connect, and negotiate."""
        self._call("accept", lambda: self._qmp.accept(self.timeout), late="connect to QMP")

    def _call(self, what: str, op: Callable[[], T], late: str = "") -> T:
        try:
            return op()
        except ExecuteError as e:
            raise QmpError(f"{what}: {e}") from None
        except UnicodeDecodeError as e:  # qemu.qmp's Message lets a reply that is not UTF-8 through
            raise QmpError(f"{what}: QEMU's reply is not UTF-8 ({e.reason} at byte {e.start})") from None
        except RecursionError:  # json's decoder on a reply nested deeper than the interpreter's stack
            raise QmpError(f"{what}: QEMU's reply is nested too deeply to decode") from None
        except TimeoutError:  # asyncio's too (3.11); before OSError, which it subclasses
            late = late or f"answer {what} on QMP"
            raise QmpError(f"QEMU did not {late} within {self.timeout:g} s") from None
        except (QMPError, OSError, EOFError) as e:
            if self.broken:  # the library's complaint about its state says no more than that
                raise QmpError(f"QEMU closed the QMP socket earlier ({what})") from None
            self.broken = True
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""  # qemu.qmp appends the message
            why = f"{type(e).__name__}: {first}" if first else type(e).__name__
            raise QmpError(f"QEMU closed the QMP socket ({what}: {why})") from None

    def execute(self, command: str, **arguments: Any) -> Any:
        """QEMU's ``return`` value. Events are not kept: nothing here reads them, and QEMU sends one per
        balloon change, so keeping them would grow without bound over a run."""
        try:
            return self._call(command, lambda: self._qmp.cmd(command, **arguments))
        finally:
            self._qmp.clear_events()

    def close(self) -> None:
        """Disconnect; an error the connection already had (QEMU killed) is not news here."""
        try:
            self._qmp.close()
        except (QMPError, OSError, EOFError, asyncio.CancelledError):
            pass
