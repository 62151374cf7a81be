"""Driver boot and negotiation (§2.4, §3.1.1, §2.2, §6): what the driver accepts from the reference device's
offer, and what it does when the device refuses FEATURES_OK (it gives up with FAILED, and resets before it
tries again)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize

from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.balloon.device import DEFAULT_OFFER
from refmodel.balloon.queues import BALLOON_QUEUES
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.features import Feature, check_negotiation, has, names_of
from refmodel.virtio.status import StatusState

from conformance.harness import Guarded
from conformance.interface import DriverUnderTest, check_implementation
from conformance.machines.base import OPTIONAL, note
from conformance.machines.driver.base import DriverMachine
from conformance.machines.driver.device import STALE, WatchedDevice

F = Feature
N_PAGES = 128
UNDEFINED_BIT = 1 << 23  # a balloon-range bit the spec does not define (FEAT-DRV-4)
#: Negotiation rules that bind the driver (FEAT-DRV-*, RSV-DRV-1, BAL-FB-DRV-1).
DRIVER_NEGOTIATION = ("FEAT-DRV-1", "FEAT-DRV-2", "FEAT-DRV-3", "RSV-DRV-1", "BAL-FB-DRV-1")
#: Requirements the reference device judges on every status and setup call (see the device module).
STATUS_CHECKS = ("RESET-DRV-1", "INIT-DRV-4")
#: What the guest expects of its free pages, and whether the device offers PAGE_POISON to a guest that
#: relies on them: the offer where PAGE_REPORTING becomes a trap (BAL-FB-DRV-3).
FREE_PAGES = ("anything", "kept", "kept, device without PAGE_POISON")


class DriverBoot(DriverMachine):
    #: The reference device the driver runs on (a proposal profile's machine puts its own here).
    device_class: Any = WatchedDevice
    #: Whether the driver relies on free pages keeping their value (BAL-FB-DRV-3); None if it does not say.
    init_on_free: bool | None = None

    @initialize(drop=st.frozensets(st.sampled_from(OPTIONAL), max_size=3), queue_max=st.sampled_from([4, 8, 16, 64]),
                undefined_bit=st.booleans(), event_idx=st.booleans(), refuse=st.booleans(),
                free_pages=st.sampled_from(FREE_PAGES))
    def boot(self, drop: frozenset[Feature], queue_max: int, undefined_bit: bool, event_idx: bool, refuse: bool,
             free_pages: str) -> None:
        """``event_idx``: whether the device may offer it at all (without it every publication is owed a
        kick, SPLIT-DRV-21); ``refuse``: the device refuses the first FEATURES_OK; ``free_pages``: see
        :data:`FREE_PAGES`."""
        self.os = GuestOS(N_PAGES)
        self.os.mem.fill(0, N_PAGES * BALLOON_PAGE_SIZE, STALE)  # RAM holds what it held: nothing is zeroed
        drop |= set() if event_idx else {F.VIRTIO_F_EVENT_IDX}
        drop |= {F.VIRTIO_BALLOON_F_PAGE_POISON} if free_pages == FREE_PAGES[2] else set()
        init_on_free = free_pages != FREE_PAGES[0]
        offered = DEFAULT_OFFER & ~sum(f.mask for f in drop) | (UNDEFINED_BIT if undefined_bit else 0)
        if self.ring == "packed":  # --ring packed: the device offers packed rings (RSV-DRV-4)
            offered |= F.VIRTIO_F_RING_PACKED.mask
        self.ref = self.device_class(self.os.mem, offered, queue_max={q.name: queue_max for q in BALLOON_QUEUES},
                                 guest_in_use=self.os.workload.__contains__,
                                 still_hinted=lambda: self.os.pages.hinted)
        self.ref.refuse_features_ok = refuse
        raw = type(self).factory()
        self.caps = check_implementation(raw, DriverUnderTest, "driver")
        self.init_on_free = self._tell_free_page_expectation(raw, init_on_free)
        self.shrinks = callable(getattr(raw, "shrink", None))  # the guest can reclaim memory from it
        self.removable = callable(getattr(raw, "remove", None))  # the guest can unbind it
        self.drv = Guarded(raw, "driver", self.timeout)
        note(f"driver {type(raw).__name__}; device offers {names_of(offered)}; queues of {queue_max}"
             f"{'; the device refuses the first FEATURES_OK' if refuse else ''}"
             f"{'; the guest relies on free pages keeping their value' if self.init_on_free else ''}")
        self._fresh()
        with self.tolerate():
            ok = self._driver(self.drv.probe, self.ref, self.os)
            if self.ref.refused:
                ok = self._after_refusal(ok)
            self._check_negotiation(offered, ok)
            self.booted = ok
            self.R.saw("INIT-DRV-1")
            for req in STATUS_CHECKS:
                self.R.saw(req)

    @staticmethod
    def _tell_free_page_expectation(raw: Any, expects: bool) -> bool | None:
        """A driver with an ``init_on_free`` attribute is told whether its guest relies on free pages keeping
        their value (Linux's init_on_free=1 or page poisoning); one without says nothing of it."""
        if not isinstance(getattr(raw, "init_on_free", None), bool):
            return None
        raw.init_on_free = expects
        return expects

    def _reports_keep_free_pages(self, accepted: int) -> bool:
        """Whether the features ``accepted`` (1.4 bits) let a guest that relies on free pages keeping their
        value report them (BAL-FB-DRV-3): PAGE_POISON. Override point: a profile that extends the guarantee
        (device-init-reported)."""
        return has(accepted, F.VIRTIO_BALLOON_F_PAGE_POISON)

    def _after_refusal(self, ok: bool) -> bool:
        """The device cleared FEATURES_OK. A driver that gave up set FAILED (INIT-DRV-6); the guest then
        probes it again, and it resets the device before anything else (STATUS-DRV-3)."""
        if ok:
            return ok  # it reset and negotiated again by itself, and the device accepted
        state = self.ref.status.state
        self.R.check("INIT-DRV-6", state is StatusState.FAILED, "the driver gave up after the device cleared "
                     f"FEATURES_OK, leaving device status {self.ref.status.status:#04x} without FAILED")
        note("the driver gave up; the guest probes it again")
        ok = self._driver(self.drv.probe, self.ref, self.os)
        if self.ref.reset_after_failed:
            self.R.saw("STATUS-DRV-3")
        return ok

    def _check_negotiation(self, offered: int, ok: bool) -> None:
        accepted = self.ref.driver_features
        verdict = check_negotiation(offered, accepted)
        breaches = {b.req_id: b.detail for b in verdict.breaches}
        for req in DRIVER_NEGOTIATION:
            self.R.check(req, req not in breaches, breaches.get(req, ""))
        if has(offered, F.VIRTIO_F_RING_PACKED):
            self.R.check("RSV-DRV-4", "RSV-DRV-4" not in breaches, breaches.get("RSV-DRV-4", ""))
        if offered & UNDEFINED_BIT:
            self.R.check("FEAT-DRV-4", ok or not verdict.driver_valid, "the driver gave up on a device offering an "
                         "undefined feature bit")
        if not ok:
            self.R.check("INIT-DRV-4", self.ref.status.state is not StatusState.FEATURES_OK
                         or not verdict.driver_valid, "the driver gave up although the device kept FEATURES_OK")
        if self.init_on_free is not None:
            reporting = has(accepted, F.VIRTIO_BALLOON_F_PAGE_REPORTING)
            self.R.check("BAL-FB-DRV-3", not (self.init_on_free and reporting
                                              and not self._reports_keep_free_pages(accepted)),
                         "the guest relies on free pages keeping their value, and the driver accepted "
                         "PAGE_REPORTING without PAGE_POISON")
        self.features = self.ref.negotiated or 0
        self.R.features |= self.features
        note(f"negotiated {names_of(self.features)}")
