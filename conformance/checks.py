"""Which requirements each conformance machine checks, and how a run records what it exercised.

:data:`DEVICE_CHECKS` and :data:`DRIVER_CHECKS` are the traceability tables: requirement ID -> where
the check lives. A check fires through :meth:`Recorder.check`, which names the requirement, so the
report can say "pass" only for requirements whose check actually ran.
"""

from __future__ import annotations

from typing import NoReturn

import attrs

from refmodel.capabilities import Capability
from refmodel.errors import PeerSpecViolation

#: Checks made by the reference driver's parsers (``refmodel``) on every used ring it reads.
RING_DEVICE_CHECKS = ("SPLIT-DEV-D1", "SPLIT-DEV-D2", "SPLIT-DEV-D3", "SPLIT-DEV-3", "SPLIT-DEV-5",
                      "SPLIT-DEV-14", "SPLIT-DEV-17", "SPLIT-DEV-19")
#: Checks made by the reference device's parsers on every available ring it reads.
RING_DRIVER_CHECKS = ("SPLIT-DRV-1", "SPLIT-DRV-2", "SPLIT-DRV-4", "SPLIT-DRV-6", "SPLIT-DRV-7", "SPLIT-DRV-8",
                      "SPLIT-DRV-9", "SPLIT-DRV-11", "SPLIT-DRV-12", "SPLIT-DRV-14", "SPLIT-DRV-D1",
                      "SPLIT-DRV-D2", "SPLIT-DRV-D3", "SPLIT-DRV-D4", "SPLIT-DRV-D5", "SPLIT-DRV-D6")
#: The same over packed rings (a balloon-level run with VIRTIO_F_RING_PACKED negotiated): the reference packed
#: driver's used-descriptor parser, and the reference packed device's list walk and placement checks.
PACKED_RING_DEVICE_CHECKS = ("PACKED-DEV-1", "PACKED-DEV-6", "PACKED-DEV-4", "PACKED-DEV-7", "PACKED-DEV-D2",
                             "PACKED-DEV-D3", "PACKED-DEV-D4", "PACKED-DEV-D8", "PACKED-DEV-D9")
PACKED_RING_DRIVER_CHECKS = ("PACKED-DRV-1", "PACKED-DRV-2", "PACKED-DRV-7", "PACKED-DRV-8", "PACKED-DRV-10",
                             "PACKED-DRV-11", "PACKED-DRV-12", "PACKED-DRV-13", "PACKED-DRV-14", "PACKED-DRV-15",
                             "PACKED-DRV-D1", "PACKED-DRV-D2", "PACKED-DRV-D4", "PACKED-DRV-D5", "PACKED-DRV-D7",
                             "PACKED-DRV-D8", "PACKED-DRV-D9", "PACKED-DRV-D13")

DEVICE_CHECKS: dict[str, str] = {
    **{r: "reference driver: used-ring parser" for r in RING_DEVICE_CHECKS},
    "FEAT-DEV-1": "boot: check_offer", "FEAT-DEV-3": "boot: check_offer", "RSV-DEV-1": "boot: check_offer",
    "FEAT-DEV-2": "boot: FEATURES_OK kept for a valid subset",
    "FEAT-DEV-4": "reset_and_reprobe: same features accepted again",
    "RESET-DEV-1": "reset_and_reprobe: status reads 0", "RESET-DEV-2": "reset_and_reprobe: silent after reset",
    "CFG-DEV-1": "boot: offered fields readable before FEATURES_OK",
    "CFG-DEV-2": "set_target / hint_*: generation moves with the config",
    "NOTIFY-DEV-D1": "set_target / hint_*: configuration change notification",
    "STATUS-DEV-1": "boot: nothing used before DRIVER_OK",
    "SPLIT-DEV-D4": "boot: queue sizes", "BAL-VQ-D1": "boot: queue indices under the declared numbering",
    "SPLIT-DEV-9": "cycle: notification suppression", "SPLIT-DEV-10": "cycle: used buffer notification",
    "SPLIT-DEV-12": "cycle: used_event crossed", "SPLIT-DEV-13": "cycle: used_event not crossed",
    "BAL-OP-DEV-D1": "invariant: workload pages intact",
    "BAL-FPH-D1": "hint_start: command ID >= 2", "BAL-FPH-DEV-2": "hint_start: no reuse before STOP",
    "BAL-FPH-DEV-3": "cycle: applied hints carry the current ID",
    "BAL-FPH-DEV-5": "invariant: hinted pages intact after DONE",
    "BAL-FPH-DEV-1": "hint_stop: config reads STOP", "BAL-FPH-DEV-6": "hint_done: config reads DONE",
    "BAL-FPH-D5": "cycle: the field keeps the round's ID mid-round",
    "BAL-FPR-DEV-2": "cycle: reported pages hold poison_val", "BAL-FPR-DEV-D1": "invariant: reported pages intact",
    "BAL-ST-DEV-1": "request_stats: unknown tags ignored", "BAL-ST-DEV-2": "request_stats: any order",
    "SPLIT-DEV-21": "spurious_notify: the device carries on", "SPLIT-DEV-8": "cycle: used_event ignored",
    "SPLIT-DEV-1": "inflate_laid_out (PFN array over two descriptors) and the virtqueue machine: read whole",
    "SPLIT-DEV-6": "inflate_laid_out (WRITE on the indirect table's descriptor) and the virtqueue machine: "
                   "the flag ignored",
    "SPLIT-DEV-7": "inflate_laid_out (PFN array in an indirect table) and the virtqueue machine: read whole",
    # The packed ring (§2.8): conformance.machines.virtq.packed_device, fed by the reference packed driver.
    **{r: "virtqueue machine (packed): the reference driver's used-descriptor parser"
       for r in ("PACKED-DEV-D2", "PACKED-DEV-D3", "PACKED-DEV-D4", "PACKED-DEV-4", "PACKED-DEV-7",
                 "PACKED-DEV-D7", "PACKED-DEV-D8", "PACKED-DEV-D9")},
    "PACKED-DEV-1": "virtqueue machine (packed): lists popped in ring order",
    "PACKED-DEV-6": "virtqueue machine (packed): nothing popped before its first descriptor is available",
    "PACKED-DEV-8": "virtqueue machine (packed): a list of descriptors reads back whole, in order",
    "PACKED-DEV-D5": "virtqueue machine (packed): indirect lists read back whole",
    "PACKED-DEV-D6": "virtqueue machine (packed): WRITE on an indirect table's descriptor ignored",
    "PACKED-DEV-D10": "virtqueue machine (packed): used buffer notification owed",
    "PACKED-DEV-D11": "virtqueue machine (packed): no used buffer notification when not owed",
    "PACKED-DEV-D12": "virtqueue machine (packed): a pop with nothing available changes nothing",
    "PACKED-DEV-D1": "boot (--ring packed): queue sizes",
    "PACKED-DEV-D13": "report_and_return (--ring packed): used len against the canaried report pages",
    "STATUS-DEV-2": "malformed input: the device ignores it or sets DEVICE_NEEDS_RESET, and stays usable",
    "STATUS-DEV-3": "malformed input: DEVICE_NEEDS_RESET after DRIVER_OK comes with a configuration change "
                    "notification",
    "SPLIT-DEV-11": "cycle (EVENT_IDX): a stray NO_INTERRUPT bit in avail flags does not suppress an owed notification",
    "SPLIT-DEV-15": "canaries: a used len claims no byte of the device-writable buffers left unwritten",
    "BAL-FPH-D4": "invariant: a page the guest wrote after hinting it keeps what the guest wrote",
}

DRIVER_CHECKS: dict[str, str] = {
    **{r: "reference device: available-ring parser" for r in RING_DRIVER_CHECKS},
    "SPLIT-DRV-19": "virtqueue machine: avail_event ignored without EVENT_IDX",
    "SPLIT-DRV-20": "virtqueue machine: no notification under NO_NOTIFY",
    "SPLIT-DRV-23": "virtqueue machine: avail_event crossed", "SPLIT-DRV-24": "virtqueue machine: avail_event not crossed",
    "STATUS-DRV-1": "reference device: status table", "STATUS-DRV-2": "reference device: status table",
    "STATUS-DRV-3": "reference device: status table", "INIT-DRV-1": "reference device: status table",
    "INIT-DRV-3": "reference device: feature writes", "INIT-DRV-2": "reference device: config rules",
    "INIT-DRV-5": "reference device: notify before DRIVER_OK", "CFG-DRV-3": "reference device: config rules",
    "BAL-CFG-D1": "reference device: config rules", "BAL-CFG-D2": "reference device: config rules",
    "FEAT-DRV-1": "probe: negotiation rules", "FEAT-DRV-2": "probe: negotiation rules",
    "FEAT-DRV-3": "probe: negotiation rules", "RSV-DRV-1": "probe: negotiation rules",
    "BAL-FB-DRV-1": "probe: negotiation rules", "INIT-DRV-4": "probe: refused features end in FAILED",
    "BAL-OP-D1": "reference device: PFN arrays", "BAL-OP-DRV-10": "reference device: deflate of unknown page",
    "BAL-OP-DRV-4": "reference device: deflate below target", "BAL-OP-DRV-9": "invariant: workload pages intact",
    "BAL-OP-DRV-7": "invariant: workload pages intact", "BAL-OP-DRV-11": "settle: actual matches the balloon",
    "BAL-OP-DRV-1": "settle: balloon reaches the target",
    "BAL-OP-DRV-6": "reference device: inflate of a page already in the balloon",
    "BAL-ST-DRV-1": "reference device: one stats buffer", "BAL-ST-DRV-5": "reference device: stats size",
    "BAL-ST-DRV-8": "reference device: same tags", "BAL-ST-DRV-2": "settle: stats buffer held",
    "BAL-ST-DRV-3": "request_stats: buffer returned", "BAL-ST-DRV-4": "request_stats: entries present",
    "BAL-FPH-DRV-1": "reference device: 4-byte out-buffers", "BAL-FPH-DRV-2": "reference device: ID first",
    "BAL-FPH-DRV-3": "reference device: one echo per ID", "BAL-FPH-D2": "reference device: echo matches",
    "BAL-FPH-DRV-6": "settle: round ends with STOP", "BAL-FPH-DRV-10": "hint_done: hinted pages released",
    "BAL-PP-DRV-2": "reference device: poison_val before DRIVER_OK",
    "BAL-PP-DRV-3": "reference device: poison_val frozen", "BAL-PP-DRV-1": "settle: deflated pages poisoned",
    "BAL-FPR-DRV-2": "reference device: reported pages poisoned", "BAL-FPR-DRV-3": "invariant: workload pages intact",
    "BAL-FPR-DRV-5": "reference device: whole pages reported",
    "BAL-FPH-D3": "reference device: hints are writable buffers (one outside memory is SPLIT-DRV-D1)",
    "SPLIT-DRV-16": "spurious_interrupt: the driver carries on",
    "SPLIT-DRV-21": "cycle: a notification follows every publication (no EVENT_IDX)",
    "FEAT-DRV-4": "boot: an undefined offered bit does not stop the driver",
    # The packed ring (§2.8): conformance.machines.virtq.packed_driver, against the reference packed device.
    **{r: "virtqueue machine (packed): the reference device's list walk"
       for r in ("PACKED-DRV-7", "PACKED-DRV-10", "PACKED-DRV-11", "PACKED-DRV-D2", "PACKED-DRV-12",
                 "PACKED-DRV-8", "PACKED-DRV-D4", "PACKED-DRV-D13", "PACKED-DRV-D5", "PACKED-DRV-D9",
                 "PACKED-DRV-13", "PACKED-DRV-14", "PACKED-DRV-15", "PACKED-DRV-D7")},
    "PACKED-DRV-2": "virtqueue machine (packed): the reference device compares what it passes over",
    "PACKED-DRV-3": "virtqueue machine (packed): available descriptors unchanged until popped",
    "PACKED-DRV-D3": "virtqueue machine (packed): len without WRITE ignored",
    "PACKED-DRV-D6": "virtqueue machine (packed): NEXT in used descriptors ignored",
    "PACKED-DRV-D8": "virtqueue machine (packed): Driver Event Suppression flags",
    "PACKED-DRV-D10": "virtqueue machine (packed): available buffer notification owed",
    "PACKED-DRV-D11": "virtqueue machine (packed): no available buffer notification when not owed",
    "PACKED-DRV-D12": "virtqueue machine (packed): a fresh descriptor ring is zeroed",
    "PACKED-DRV-1": "reference device (--ring packed): queue placement",
    "PACKED-DRV-D1": "reference device (--ring packed): queue placement",
    "RSV-DRV-4": "boot (--ring packed): the device offers VIRTIO_F_RING_PACKED",
    "RESET-DRV-1": "reference device: no transport call after writing 0 before status reads 0",
    "SPLIT-DRV-3": "reference device: no zero-length descriptor beside others, no buffer split inside a page",
    "SPLIT-DRV-18": "reference device: the used ring's flags are 0 when the driver enables the queue",
    "INIT-DRV-6": "boot (device refuses FEATURES_OK): the driver sets FAILED and makes no further set-up call",
    "BAL-FB-DRV-3": "boot: with init_on_free in the guest, PAGE_REPORTING is accepted only with "
                    "PAGE_POISON",
    "BAL-FPH-DRV-4": "hint rounds / settle: a driver with free blocks hints them before it ends a round",
    "BAL-FPH-DRV-5": "hint rounds: no hint made available after the driver read STOP or DONE",
    "BAL-FPH-DRV-9": "pages: a hinted page released before DONE is initialized before its reuse",
}

#: Checks only the virtqueue-level machines make (a balloon-level run skips them; see runner.merge).
VIRTQUEUE_ONLY = frozenset(r for r, where in {**DEVICE_CHECKS, **DRIVER_CHECKS}.items()
                           if where.startswith("virtqueue machine"))

#: Checkable requirements the suite does not check yet, and why. A test keeps this honest: every
#: checkable requirement is in a CHECKS table or here.
NOT_YET: dict[str, str] = {
    "VQ-DEV-1": "VIRTIO_F_IN_ORDER is not modelled yet",
    "RSV-DEV-3": "VIRTIO_F_IN_ORDER is not modelled yet",
    "SPLIT-DRV-5": "VIRTIO_F_IN_ORDER is not modelled yet",
    "SPLIT-DRV-10": "VIRTIO_F_IN_ORDER is not modelled yet",
    "SPLIT-DRV-22": "needs the reference device to set the lower used flag with EVENT_IDX",
    # The proposal's statements (profile "proposal") that no check or test covers yet.
    "PROP-FPH-7": "a SHOULD with no time bound, so observed rather than judged: the report's observation "
                  "round_ended_by_device says whether the driver closed every round the device ended with a STOP",
    "PROP-FPH-8": "observed rather than judged (a 1.4 run does not fail a proposal statement): the report's "
                  "observation hint_buffers says whether every hint buffer was whole 4 KiB pages",
    "PROP-FPR-1": "needs a reference device option that returns the byte count as used length (as Cloud "
                  "Hypervisor does)",
    # The packed virtqueue (§2.8): what its virtqueue-level machines do not check yet.
    "PACKED-DRV-6": "the reference device sets no limit below the Queue Size (PACKED-DEV-9), so here it is "
                    "PACKED-DRV-7; needs a reference device option that limits lists",
    "PACKED-DRV-4": "VIRTIO_F_NOTIFICATION_DATA is not in the virtqueue-level interface "
                    "(DriverQueueUnderTest has no notification_data); the model and its tests in "
                    "tests/virtio check the rule",
    "PACKED-DRV-D14": "as PACKED-DRV-4",
}

#: Proposal statements that tighten a 1.4 requirement whose check already tests the tighter reading.
PROPOSAL_CHECKED_AS: dict[str, str] = {
    "PROP-ST-1": "BAL-ST-DRV-5",  # the reference device checks multiples of 10
    "PROP-FPH-1": "BAL-FPH-DEV-3",  # the check after every device turn applies the tagging rule
    "PROP-FPH-2": "BAL-FPH-D5",
    "PROP-FPH-5": "NOTIFY-DEV-D1",
    "PROP-VQ-1": "BAL-VQ-D1",
}


#: Capability -> the requirements whose checks never run unless the implementation declares it: what
#: ``docs/_ext/capneeds.py`` reads from the machines' source (a test keeps the two equal). A skipped
#: verdict names the capability it lacked.
CAPABILITY_CHECKS: dict[Capability, tuple[str, ...]] = {
    Capability.HINTING: ("BAL-FPH-DEV-1", "BAL-FPH-DEV-2", "BAL-FPH-DEV-3", "BAL-FPH-DEV-6", "BAL-FPH-D1",
                         "BAL-FPH-D5"),
    Capability.HINT_STOP: ("BAL-FPH-DEV-1",),
    Capability.HINTED_PAGES: ("BAL-FPH-DEV-3",),
    Capability.STATS: ("BAL-ST-DEV-1", "BAL-ST-DEV-2"),
}


def capabilities_needed(req_id: str) -> tuple[Capability, ...]:
    """The capabilities without which ``req_id``'s check never runs."""
    return tuple(cap for cap, ids in CAPABILITY_CHECKS.items() if req_id in ids)


@attrs.define
class Recorder:
    """Collects, over one run of a machine, the requirements checked and the deviations seen.

    ``tolerated`` lists requirements whose failures end the example quietly (known deviations, or
    ones already reported), so the search can go on to find further, different failures.
    """

    tolerated: frozenset[str] = frozenset()
    exercised: set[str] = attrs.Factory(set)
    tolerated_seen: dict[str, str] = attrs.Factory(dict)
    features: int = 0  # feature bits in play in some example (offered by a device, accepted by a driver)
    #: What the implementation chose where the spec leaves a choice (e.g. queue numbering), by topic.
    observations: dict[str, set[str]] = attrs.Factory(dict)
    interrupted: bool = False  # the search was stopped by a signal before it ended

    def check(self, req_id: str, ok: bool, detail: str = "") -> None:
        """Record that ``req_id`` was checked; raise its peer violation if ``ok`` is false.

        A tolerated requirement is only recorded: nothing broke on our side, so the example goes on
        (ending it would make the search depend on the timing of an asynchronous implementation).
        """
        self.exercised.add(req_id)
        if not ok:
            if req_id in self.tolerated:
                self.tolerated_seen.setdefault(req_id, str(PeerSpecViolation(req_id, detail)))
                return
            fail(req_id, detail)

    def saw(self, req_id: str) -> None:
        self.exercised.add(req_id)

    def narrow(self, topic: str, candidates: set[str]) -> None:
        """The implementation's choice on ``topic`` is one of ``candidates`` (kept: what every example fits)."""
        if topic in self.observations:
            self.observations[topic] &= candidates
        else:
            self.observations[topic] = set(candidates)


def fail(req_id: str, detail: str) -> NoReturn:
    raise PeerSpecViolation(req_id, detail)
