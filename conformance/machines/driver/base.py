"""The driver machine's state, shared by its mixins, and how it calls the driver under test and the device.

Every call into the driver goes through :meth:`DriverMachine._driver` and every device turn through
:meth:`DriverMachine._device_run`; each snapshots what it may change and hands the before and after to the
``_after_driver`` / ``_after_device`` hooks, where the requirement areas judge and record what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from refmodel.errors import PeerSpecViolation
from refmodel.system.guest_os import GuestOS
from refmodel.system.provenance import PageHistory
from refmodel.virtio.features import Feature, has

from conformance.interface import Capability
from conformance.machines.base import GuestMachine


@attrs.frozen
class Pages:
    """The model guest's page sets at one moment (bitmaps), and the device's balloon."""

    free: int
    hinted: int
    isolated: int
    ballooned: int
    resets: int  # device resets so far


class DriverMachine(GuestMachine):
    """The driver under test (``drv``, behind the Guarded proxy), the reference device (``ref``) and the
    guest (``os``), with what each requirement area remembers between steps."""

    #: Unchanged cycles in a row that count as quiet (a driver on its own clock needs more than one).
    settle_stable = 1
    #: The guest is the model's :class:`GuestOS`, whose pages the checks read (a real guest's are not).
    model_guest = True
    #: The driver is being unbound: the pages it lets go of are not deflated or hinted pages given back.
    unbinding = False

    os: GuestOS
    ref: Any = None  # the WatchedDevice; None until made (a real guest sends its memory table first)
    drv: Any
    caps: frozenset[Capability]
    features: int  # negotiated
    history: PageHistory  # each page's recent events, for labels and for what protects it now
    done_pending: bool  # the host sent DONE; the driver must release its hinted pages
    balloon_moved: bool  # the device has taken or given back balloon pages in this example
    avail_seen: dict[str, int]  # queue -> avail idx at the last kick check

    def _fresh(self) -> None:
        """The bookkeeping of a new example."""
        self.history = PageHistory()
        self.features = 0
        self.balloon_moved = False
        self._device_forgot()

    def _device_forgot(self) -> None:
        """The device was reset (or is new): what the machine kept about its queues and rounds is gone.
        Mixins extend this with their own bookkeeping."""
        self.done_pending = False
        self.avail_seen = {}

    def has(self, feature: Feature) -> bool:
        return has(self.features, feature)

    def _avail_idx(self, q: Any) -> int:
        """How far the driver made buffers available on the reference device's queue ``q``: the avail idx
        it published (split) or the position after its available lists (packed)."""
        return q.avail_mark()

    @property
    def packed(self) -> bool:
        """The queues of this probe are packed (VIRTIO_F_RING_PACKED negotiated)."""
        return self.has(Feature.VIRTIO_F_RING_PACKED)

    # -- calls -------------------------------------------------------------------------------------------
    def _pages(self) -> Pages | None:
        """The model guest's pages now (None for a real guest)."""
        if not self.model_guest:
            return None
        p = self.os.pages
        return Pages(p.free, p.hinted, p.isolated, self.ref.ballooned, self.ref.resets)

    def _driver(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call the driver under test, then judge what it did to the guest's pages."""
        before = self._pages()
        result = self._step(fn, *args)
        self.history.tick()
        self._after_driver(before, self._pages())
        return result

    def _device_run(self) -> None:
        """One turn of the reference device, then judge what it did."""
        before, ballooned = self._pages(), self.ref.ballooned
        touched, log = len(self.ref.touched), len(self.ref.hint_log)
        self._step(self.ref.run)  # a breach latched while the device served a real driver's kick shows here
        self.history.tick()
        self.balloon_moved |= self.ref.ballooned != ballooned
        self._after_device(before, self._pages(), self.ref.touched[touched:], self.ref.hint_log[log:])

    def _after_driver(self, before: Pages | None, after: Pages | None) -> None:
        """Hook: a driver call returned."""

    def _after_device(self, before: Pages | None, after: Pages | None, touched: list[Any],
                      hints: list[Any]) -> None:
        """Hook: the device took a turn; ``touched`` are the pages it changed, ``hints`` the free_page_vq
        chains it took."""

    def _guest_quiet_checks(self) -> None:
        """Hook: at settle, the checks that read the guest's pages (a real guest overrides or drops them)."""

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
