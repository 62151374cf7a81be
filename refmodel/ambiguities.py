"""Every place the spec leaves open, with the explicit choice the model makes.

The proposal (``spec/proposal/``) cites these IDs; each choice is a named constant or parameter in
the model, so a reader can find where it is applied by searching for the ID.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Ambiguity:
    id: str
    section: str
    question: str
    choice: str
    alternatives: tuple[str, ...] = ()


AMBIGUITIES: tuple[Ambiguity, ...] = (
    Ambiguity(
        "AMB-VQ-NUMBERING", "5.5.2",
        "Does an absent optional queue keep its index (fixed 0-4) or do later queues shift down, and is "
        "'is set' judged on offered or negotiated features?",
        "Parameter QueueNumbering; default compact-by-offered (QEMU, Firecracker, crosvm). The suite "
        "reports a mismatch as a numbering interpretation, not as a conformance failure, unless the "
        "implementation declares its interpretation.",
        ("fixed (spec text as written)", "compact-by-negotiated (Linux)"),
    ),
    Ambiguity(
        "AMB-CFG-AVAILABILITY", "5.5.4",
        "§5.5.4 says free_page_hint_cmd_id and poison_val are 'available if ... negotiated'; §2.5.2 says "
        "fields of offered features are readable before FEATURES_OK.",
        "Reads are allowed when the feature is offered (before FEATURES_OK) or negotiated (after); "
        "writes of poison_val need it negotiated.",
    ),
    Ambiguity(
        "AMB-CFG-NUM-PAGES-WRITER", "5.5.4",
        "Nothing says num_pages is read-only for the driver.",
        "num_pages is device-owned; a driver write breaks BAL-CFG-D2 and is ignored.",
    ),
    Ambiguity(
        "AMB-FPH-TAGGING", "5.5.6.5.2",
        "Which command ID is a hint 'provided with'? The spec never states the association.",
        "A hint in-buffer is tagged with the most recent command-ID out-buffer the device consumed on "
        "free_page_vq before it, including an out-buffer earlier in the same chain.",
    ),
    Ambiguity(
        "AMB-FPH-CONFIG-NOTIFY", "5.5.6.5",
        "Must the device send a configuration change notification when free_page_hint_cmd_id changes?",
        "Yes (NOTIFY-DEV-D1, SHOULD): the reference device notifies on every change; the Linux driver "
        "only re-reads the field on a config interrupt.",
    ),
    Ambiguity(
        "AMB-FPH-ROUND-END", "5.5.6.5",
        "What ends a round: the driver's STOP buffer, the device's STOP/DONE, or both?",
        "A round (one command ID) ends for the driver when it sends STOP or sees STOP/DONE/a new ID in "
        "config; it ends for the device when it consumes the driver's STOP buffer or publishes "
        "STOP/DONE. Only the driver's STOP buffer frees the ID for reuse (BAL-FPH-DEV-2).",
    ),
    Ambiguity(
        "AMB-FPH-ID-REUSE", "5.5.6.5.2",
        "BAL-FPH-DEV-2 lets the device reuse a command ID once it has received *any* STOP buffer. An "
        "echo of that ID from an earlier round can still be queued behind that STOP; if the device has "
        "reissued the ID meanwhile, it accepts hints generated before a later bitmap sync, and pages "
        "written after the hint are lost.",
        "The reference device never reuses an ID before a reset (IDs increase; wrap only after 2^32 - 2 "
        "rounds). The proposal tightens the rule to: not until a STOP has been received after the "
        "out-buffer carrying that ID, and recommends increasing IDs.",
        ("literal: any STOP frees every earlier ID",),
    ),
    Ambiguity(
        "AMB-FPH-USED-LEN", "5.5.6.5",
        "What used length does the device return for command-ID and hint buffers?",
        "0 for both (QEMU since 6.2, Firecracker). Drivers must not depend on it.",
    ),
    Ambiguity(
        "AMB-FPH-ALIGNMENT", "5.5.6.5",
        "May a hint buffer cover part of a page, or start mid-page?",
        "Only whole 4 KiB pages inside the buffer count as hinted; partial pages at either end are "
        "ignored (never discarded, never skipped by migration). QEMU 7.2 does the same (reproducer "
        "unaligned-hint); the proposal requires it (PROP-FPH-8, PROP-FPH-9).",
    ),
    Ambiguity(
        "AMB-FPH-ACTIVE-VALUE", "5.5.6.5",
        "What does free_page_hint_cmd_id read while a round is active, after the driver's STOP?",
        "It keeps the current ID until the device publishes STOP, DONE or a new ID, or until the device "
        "consumes the driver's STOP for that ID, after which it reads STOP (QEMU's S_START -> S_STOP).",
    ),
    Ambiguity(
        "AMB-FPH-POISON", "5.5.6.5",
        "Does PAGE_POISON constrain hinted pages? The hinting text never mentions poison.",
        "No constraint on the device beyond BAL-FPH-DEV-4/5: a device that skips hinted pages in "
        "migration leaves them holding whatever the destination held (zeros with QEMU). The proposal "
        "(PROP-PP-1) has the driver write poison_val into a hinted page again before the guest reuses "
        "it, as Linux's page allocator does on free.",
    ),
    Ambiguity(
        "AMB-STATS-SIZE", "5.5.6.3.1",
        "The driver rule says the stats buffer is a multiple of 6 bytes; entries are 10 bytes.",
        "Check multiples of 10 (VIRTIO_BALLOON_STAT_SIZE); BAL-ST-DRV-5 is cited with the discrepancy.",
    ),
    Ambiguity(
        "AMB-PFN-DIRECTION", "5.5.6",
        "Are inflate/deflate PFN arrays device-readable, and in which byte order?",
        "Device-readable le32 (Linux, QEMU).",
    ),
    Ambiguity(
        "AMB-REPORT-DIRECTION", "5.5.6.7",
        "Are reporting buffers device-readable or device-writable?",
        "Device-writable (Linux adds in-buffers); used length 0 (QEMU) or the byte count (Cloud "
        "Hypervisor) are both accepted.",
    ),
    Ambiguity(
        "AMB-OP-QUEUE-ORDER", "5.5.6",
        "Without MUST_TELL_HOST the driver may reuse a page as soon as it queued the deflate request, which "
        "includes inflating it again. Nothing orders inflateq against deflateq, so a device that drains "
        "inflateq first sees a page inflated while it is still in the balloon.",
        "The reference device drains deflateq before inflateq; a pending deflate always refers to an "
        "inflate the device already acknowledged (BAL-OP-DRV-10), so this order never misjudges a driver.",
        ("process queues in notification order (QEMU: one handler per queue)",
         "state that a page is inflated again only after its deflate was used"),
    ),
    # -- packed virtqueues (2.8) ------------------------------------------------------------------------
    Ambiguity(
        "AMB-PACKED-BUFFER-ID", "2.8.6",
        "Which values may a Buffer ID take? 2.8 only says it is an le16 that names the buffer; the example "
        "driver in 2.8.22 asserts id < Queue Size.",
        "The reference driver hands out IDs 0 .. Queue Size - 1 (as Linux does); the reference device "
        "accepts any 16-bit ID and rejects only one that is still in flight (PACKED-DRV-D5).",
        ("IDs below the Queue Size only (2.8.22's assert)",),
    ),
    Ambiguity(
        "AMB-PACKED-INDIRECT-RESERVED", "2.8.7",
        "2.8.19 forbids the driver any flag but WRITE inside an indirect table, while 2.8.7 says the device "
        "ignores those reserved flags. Is a device that meets one (NEXT, INDIRECT) to carry on or to reject?",
        "The reference device, which checks drivers, reports PACKED-DRV-13; it reads every len/16 entry in "
        "order and never follows NEXT inside a table. A device under test that ignores the flags and carries "
        "on is not judged for it (PACKED-DEV-D5 holds either way).",
        ("carry on, ignoring the flags (2.8.7 read alone)",),
    ),
    Ambiguity(
        "AMB-PACKED-CHAIN-BYTES", "2.8.4",
        "2.8 sets no limit on a buffer's total length (the split ring has 2^32, 2.7.5.2), yet a used "
        "descriptor reports the bytes written in an le32.",
        "The split ring's bound applies: at most 2^32 bytes over all elements of a buffer (PACKED-DRV-D13).",
        ("no limit beyond each element's le32 len",),
    ),
    Ambiguity(
        "AMB-PACKED-EVENT-WINDOW", "2.8.10",
        "A RING_EVENT_FLAGS_DESC event 'triggers' when its descriptor is made available or used, but over "
        "which window, and does a descriptor the device skipped (a later element of a list) count as used?",
        "As for the split ring, the window runs from the last notification decision (the driver: the last "
        "notification) to now, over ring positions including skipped ones (QEMU's used_idx, Linux's "
        "next_avail_idx count them). A position (offset, wrap) recurs every 2 x Queue Size positions; the "
        "model tests crossing exactly. QEMU and Linux compare offsets with the split ring's u16 "
        "vring_need_event, which agrees except when the window wraps the ring, where they may notify more.",
        ("only positions that hold a used descriptor count",),
    ),
    Ambiguity(
        "AMB-PACKED-USED-WRITE", "2.8.3",
        "2.8.3 and 2.8.4 make a used descriptor's len meaningful only with VIRTQ_DESC_F_WRITE set. QEMU "
        "(hw/virtio/virtio.c, virtqueue_packed_fill_desc) writes len and never sets WRITE; Linux reads len "
        "without looking at WRITE.",
        "The reference device sets WRITE exactly when len > 0. The reference driver follows the text "
        "(PACKED-DRV-D3): without WRITE it reports len 0; used_len_needs_write=False makes it read len "
        "anyway, as Linux does, for interoperating with QEMU.",
        ("trust len whatever WRITE says (Linux)",),
    ),
    Ambiguity(
        "AMB-PACKED-BATCH", "2.8.21.1",
        "With several lists added before one publication, whose first descriptor has its flags written "
        "last: each list's, or only the batch's?",
        "Only the batch's first descriptor (2.8.21.1: 'it defers updating the descriptor flags for the "
        "first descriptor'); later lists' heads are written at once, since the device polls in ring order "
        "and stops at the batch's first. Linux exposes each list as it adds it.",
        ("defer every list's first descriptor to the publication",),
    ),
    Ambiguity(
        "AMB-PROP-CMB-INDEX", "5.5.2",
        "A proposal, not the 1.4 text: Tsirkin's 'a 3rd vq which does inflate/deflate in one go' (2016) "
        "gives the queue no index, and 1.4 is read three ways (AMB-VQ-NUMBERING). Where does it go?",
        "After every 1.4 queue, so none moves (refmodel.balloon.proposals.combined_vq.combined_index): fixed "
        "numbering, index 5; compact numberings, the count of 1.4 queues that exist, judged by offered or "
        "negotiated features as the numbering judges the others (2 to 5). Under patch 0004 (compact by "
        "offered, which Hildenbrand's 2025 patch also describes) that is the one rule a device and a driver "
        "need.",
        ("index 2, beside inflateq and deflateq (every later queue moves)",
         "a fixed index past any future queue (holes under compact numberings)"),
    ),
)

BY_ID = {a.id: a for a in AMBIGUITIES}
