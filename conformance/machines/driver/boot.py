"""Driver boot and negotiation (§3.1.1, §2.2, §6): what the driver accepts from the reference device's
offer, and what it does when it gives up."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import initialize

from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice
from refmodel.balloon.queues import BALLOON_QUEUES
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.features import Feature, check_negotiation, names_of
from refmodel.virtio.status import StatusState

from conformance.harness import Guarded
from conformance.interface import DriverUnderTest, check_implementation
from conformance.machines.base import OPTIONAL, note
from conformance.machines.driver.base import DriverMachine

N_PAGES = 128
UNDEFINED_BIT = 1 << 23  # a balloon-range bit the spec does not define (FEAT-DRV-4)
#: Negotiation rules that bind the driver (FEAT-DRV-*, RSV-DRV-1, BAL-FB-DRV-1).
DRIVER_NEGOTIATION = ("FEAT-DRV-1", "FEAT-DRV-2", "FEAT-DRV-3", "RSV-DRV-1", "BAL-FB-DRV-1")


class DriverBoot(DriverMachine):
    @initialize(drop=st.frozensets(st.sampled_from(OPTIONAL), max_size=3), queue_max=st.sampled_from([4, 8, 16, 64]),
                undefined_bit=st.booleans())
    def boot(self, drop: frozenset[Feature], queue_max: int, undefined_bit: bool) -> None:
        self.os = GuestOS(N_PAGES)
        offered = DEFAULT_OFFER & ~sum(f.mask for f in drop) | (UNDEFINED_BIT if undefined_bit else 0)
        self.ref = BalloonDevice(self.os.mem, offered, queue_max={q.name: queue_max for q in BALLOON_QUEUES},
                                 guest_in_use=self.os.workload.__contains__)
        raw = type(self).factory()
        self.caps = check_implementation(raw, DriverUnderTest, "driver")
        self.drv = Guarded(raw, "driver", self.timeout)
        note(f"driver {type(raw).__name__}; device offers {names_of(offered)}; queues of {queue_max}")
        self._fresh()
        with self.tolerate():
            ok = self._step(self.drv.probe, self.ref, self.os)
            self._check_negotiation(offered, ok)
            self.booted = ok
            self.R.saw("INIT-DRV-1")

    def _check_negotiation(self, offered: int, ok: bool) -> None:
        accepted = self.ref.driver_features
        verdict = check_negotiation(offered, accepted)
        breaches = {b.req_id: b.detail for b in verdict.breaches}
        for req in DRIVER_NEGOTIATION:
            self.R.check(req, req not in breaches, breaches.get(req, ""))
        if offered & UNDEFINED_BIT:
            self.R.check("FEAT-DRV-4", ok or not verdict.driver_valid, "the driver gave up on a device offering an "
                         "undefined feature bit")
        if not ok:
            self.R.check("INIT-DRV-4", self.ref.status.state is not StatusState.FEATURES_OK
                         or not verdict.driver_valid, "the driver gave up although the device kept FEATURES_OK")
        self.features = self.ref.negotiated or 0
        self.R.features |= self.features
        note(f"negotiated {names_of(self.features)}")
