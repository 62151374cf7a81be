"""The driver machine's state, shared by its mixins, and how it calls the driver under test."""

from __future__ import annotations

from typing import Any

from refmodel.errors import PeerSpecViolation
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.features import Feature, has
from refmodel.virtio.split.layout import AVAIL_IDX

from conformance.interface import Capability
from conformance.machines.base import GuestMachine


class DriverMachine(GuestMachine):
    """The driver under test (``drv``, behind the Guarded proxy), the reference device (``ref``) and the
    guest (``os``), with what each requirement area remembers between steps."""

    #: Unchanged cycles in a row that count as quiet (a driver on its own clock needs more than one).
    settle_stable = 1

    os: GuestOS
    ref: Any = None  # the BalloonDevice; None until made (a real guest sends its memory table first)
    drv: Any
    caps: frozenset[Capability]
    features: int  # negotiated
    left_balloon: int  # pages deflated since the driver was last quiet (bitmap)
    done_pending: bool  # the host sent DONE; the driver must release its hinted pages
    avail_seen: dict[str, int]  # queue -> avail idx at the last kick check

    def _fresh(self) -> None:
        """The bookkeeping of a new example."""
        self.left_balloon = 0
        self.done_pending = False
        self.avail_seen = {}

    def has(self, feature: Feature) -> bool:
        return has(self.features, feature)

    def _avail_idx(self, q: Any) -> int:
        """The avail idx the driver published on the reference device's queue ``q``."""
        return self.ref.mem.read_u16(q.addrs.avail + AVAIL_IDX)

    def _step(self, fn: Any, *args: Any) -> Any:
        """Call the driver; a violation the reference device latched is the driver's, even if the driver
        swallowed it or failed another way because of it."""
        try:
            result = fn(*args)
        except Exception as e:
            self._raise_latched(e)
            raise
        self._raise_latched(None)
        return result

    def _raise_latched(self, during: Exception | None) -> None:
        err = self.ref.error if self.ref is not None else None
        if err is not None:
            raise PeerSpecViolation(err.req_id, err.detail) from during
