"""Calling an implementation under test safely: a deadline on every call, and one error type for
everything that is not a spec violation (a crash, a hang, garbage of the wrong type).

The suite must never hang or crash because the implementation did. A :class:`Guarded` proxy wraps
the adapter; the state machines only ever talk to the proxy.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from conformance.interface import RETURNS
from refmodel.errors import SpecViolation, VirtioModelError

DEFAULT_TIMEOUT = 10.0


class ImplementationError(VirtioModelError):
    """The implementation under test raised, hung or returned something of the wrong type.

    Not a requirement breach by itself; the report lists it as an error of the rule that ran.
    """

    def __init__(self, call: str, what: str) -> None:
        self.call, self.what = call, what
        super().__init__(f"{call}: {what}")


class ImplementationGone(ImplementationError):
    """The call hung (its deadline passed) or the implementation's process died in it: an error of the rule
    that ran, never a verdict on what the call was for."""


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so the implementation cannot swallow it by accident."""


_armed = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _armed:
        raise _Timeout()


@contextlib.contextmanager
def deadline(seconds: float, call: str) -> Iterator[None]:
    """Abort the block after ``seconds`` (SIGALRM; main thread only, elsewhere no limit).

    The handler is installed once; each call only arms the interval timer, which keeps the cost
    per guarded call to two system calls.
    """
    global _armed
    if seconds <= 0 or _armed or threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGALRM) is not _on_alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Timeout:
        raise ImplementationGone(call, f"did not return within {seconds:g} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _armed = False


class Guarded:
    """A proxy for an adapter: deadlines, result types, and foreign exceptions made uniform.

    Spec violations pass through untouched: inside a driver under test they come from our reference
    device and name the requirement the driver broke.
    """

    def __init__(self, target: Any, name: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._target, self._name, self._timeout = target, name, timeout

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value):
            return value
        call = f"{self._name}.{attr}"
        want = RETURNS.get(attr)

        def guarded_call(*args: Any, **kwargs: Any) -> Any:
            try:
                with deadline(self._timeout, call):
                    result = value(*args, **kwargs)
            except (SpecViolation, ImplementationError):
                raise
            except VirtioModelError as e:  # BrokenSide, NotNegotiated, ... from a reference peer
                raise ImplementationError(call, f"{type(e).__name__}: {e}") from None
            except Exception as e:  # noqa: BLE001 - anything the implementation raised
                raise ImplementationError(call, f"raised {type(e).__name__}: {e}") from None
            if want is not None and not isinstance(result, want) or isinstance(result, bool) and want is int:
                raise ImplementationError(call, f"returned {result!r}, expected {want}")
            return result

        return guarded_call
