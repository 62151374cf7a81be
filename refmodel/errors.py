"""The exceptions the model raises on purpose. Anything else escaping the model is a bug.

Rules (after h11's ``_util.py``):

* :class:`SpecViolation` is abstract. It always carries a catalogue requirement, so the failure message
  is its own traceability record: ID, section, the role the rule binds, and our paraphrase.
* :class:`LocalSpecViolation`: *our* side (the caller of the model) tried to break a rule. A bug in the
  harness or the reference implementation.
* :class:`PeerSpecViolation`: the *peer* (the implementation under test) broke a rule. A conformance
  failure.
* :class:`LayoutError` covers memory and layout problems found while placing our own structures
  (misaligned rings, accesses outside guest memory). When the peer's data causes such an access, the
  parser converts it into a :class:`PeerSpecViolation` naming the requirement instead.
* :class:`NotNegotiated`: a feature-gated operation was attempted without the feature.
* A side that raised a violation stays broken: see :class:`Sticky`.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from spec.catalogue import Requirement, requirement


class VirtioModelError(Exception):
    """Base of everything the model raises on purpose."""


class SpecViolation(VirtioModelError):
    """Abstract: a requirement from the catalogue was broken. Use a subclass."""

    requirement: Requirement
    detail: str

    def __init__(self, req_id: str, detail: str = "") -> None:
        if type(self) is SpecViolation:
            raise TypeError("SpecViolation is abstract; raise LocalSpecViolation or PeerSpecViolation")
        self.requirement = requirement(req_id)
        self.detail = detail
        super().__init__(self._message())

    @property
    def req_id(self) -> str:
        return self.requirement.id

    @property
    def section(self) -> str:
        return self.requirement.section

    @property
    def role(self) -> str:
        """The role (driver or device) the broken requirement binds."""
        return self.requirement.role

    @property
    def paraphrase(self) -> str:
        return self.requirement.text

    def _message(self) -> str:
        r = self.requirement
        head = f"{r.id} (§{r.section}, {r.role} {r.keyword}): {r.text}"
        return f"{head} -- {self.detail}" if self.detail else head

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.req_id, self.detail))


class LocalSpecViolation(SpecViolation):
    """Our own side (the model's caller) attempted to break the requirement."""


class PeerSpecViolation(SpecViolation):
    """The peer, i.e. the implementation under test, broke the requirement."""


class LayoutError(VirtioModelError):
    """A structure would not fit, is misaligned, or an access falls outside guest memory."""


class MemoryAccessError(LayoutError):
    """An access of ``length`` bytes at ``addr`` falls outside guest memory or is misaligned."""

    def __init__(self, addr: int, length: int, reason: str) -> None:
        self.addr = addr
        self.length = length
        self.reason = reason
        super().__init__(f"guest memory access of {length} byte(s) at {addr:#x}: {reason}")


class NotNegotiated(VirtioModelError):
    """A feature-gated field, queue or operation was used without its feature."""

    def __init__(self, feature: str, what: str) -> None:
        self.feature = feature
        super().__init__(f"{what} needs {feature}, which was not negotiated")


class BrokenSide(VirtioModelError):
    """The side already broke the protocol; it stays in its error state until reset.

    ``cause`` is the violation that broke it.
    """

    def __init__(self, name: str, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"{name} is in the ERROR state after: {cause}")


F = TypeVar("F", bound=Callable[..., Any])


class Sticky:
    """Mixin for a protocol side that must stay in ERROR after a violation.

    Decorate each public entry point with :func:`guarded`. Subclasses call ``_reset_error()`` only
    where the spec defines a way back (a device reset).
    """

    _error: SpecViolation | None = None

    @property
    def error(self) -> SpecViolation | None:
        return self._error

    def _reset_error(self) -> None:
        self._error = None


def guarded(fn: F) -> F:
    """Refuse calls on a broken side; latch the first violation a call raises."""

    def wrapper(self: Sticky, *args: Any, **kwargs: Any) -> Any:
        if self._error is not None:
            raise BrokenSide(type(self).__name__, self._error)
        try:
            return fn(self, *args, **kwargs)
        except SpecViolation as e:
            self._error = e
            raise

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
