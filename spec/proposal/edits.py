"""The proposal to the virtio TC, as data: one commit per topic, each a list of (file, old, new) text
edits against virtio 1.4 (oasis-tcs/virtio-spec 15f488c1). ``build.py`` turns them into
``git format-patch`` files. Every new normative sentence carries a ``% PROP-...`` comment naming its
catalogue entry (profile "proposal" in spec/requirements.toml); a test checks both agree.
"""

from __future__ import annotations

DESC = "device-types/balloon/description.tex"
DRIVER_CONF = "device-types/balloon/driver-conformance.tex"
DEVICE_CONF = "device-types/balloon/device-conformance.tex"

COMMITS = [
    {
        "slug": "balloon-stats-buffer-size",
        "subject": "balloon: statistics buffers are a multiple of 10 bytes",
        "body": (
            "struct virtio_balloon_stat is le16 tag followed by le64 val, 10 bytes, and\n"
            "the text two paragraphs earlier says so. The normative statement still says\n"
            "a multiple of 6 bytes, left over from an older layout; no driver can meet it\n"
            "while sending whole entries. The reference model checks multiples of 10\n"
            "(ambiguity AMB-STATS-SIZE).\n"),
        "edits": [(DESC,
                   "Driver MUST use an output buffer size which is a multiple of 6\nbytes for all buffers submitted to the statsq.\n",
                   "% PROP-ST-1\nDriver MUST use an output buffer size which is a multiple of 10\n"
                   "bytes (the size of struct virtio_balloon_stat) for all buffers submitted\nto the statsq.\n")],
    },
    {
        "slug": "balloon-hint-tagging-and-active-value",
        "subject": "balloon: say which command ID a hint carries and what the field reads mid-round",
        "body": (
            "The device must ignore pages \"provided with a command ID\" that is not the\n"
            "current one, but nothing says how a page is associated with a command ID.\n"
            "Devices and drivers agree on the rule Linux and QEMU use: a hint belongs to\n"
            "the last command-ID output buffer the device used before it. State it.\n"
            "\n"
            "Nothing says what free_page_hint_cmd_id reads while a round is active.\n"
            "QEMU 7.2 reports VIRTIO_BALLOON_CMD_ID_STOP as soon as it has the driver's\n"
            "echo (its get_config has no case for the active state) and sends no\n"
            "configuration change notification. Linux only re-reads the field on a\n"
            "notification and keeps hinting, but a driver that re-reads the field, as\n"
            "the driver requirements invite (\"SHOULD stop supplying pages when ...\n"
            "VIRTIO_BALLOON_CMD_ID_STOP\"), stops after its first hints. The conformance\n"
            "suite reports this as BAL-FPH-D5 against QEMU (ambiguities\n"
            "AMB-FPH-TAGGING, AMB-FPH-ACTIVE-VALUE).\n"),
        "edits": [(DESC,
                   "The device MUST ignore pages that are provided with a command ID that does\nnot match the current value in \\field{free_page_hint_cmd_id}.\n",
                   "The device MUST ignore pages that are provided with a command ID that does\nnot match the current value in \\field{free_page_hint_cmd_id}.\n\n"
                   "% PROP-FPH-1\nA page supplied in a device-writable buffer is provided with the command ID\n"
                   "contained in the last output buffer that the device used on the free_page_vq\n"
                   "before that buffer, including an output buffer earlier in the same\ndescriptor chain.\n\n"
                   "% PROP-FPH-2\nAfter setting \\field{free_page_hint_cmd_id} to a command ID, the device MUST\n"
                   "keep reporting that command ID in \\field{free_page_hint_cmd_id} until it sets\n"
                   "the field to another value, or until it has used an output buffer containing\n"
                   "VIRTIO_BALLOON_CMD_ID_STOP that follows the output buffer containing that\n"
                   "command ID, after which it MAY report VIRTIO_BALLOON_CMD_ID_STOP.\n")],
    },
    {
        "slug": "balloon-command-id-reuse",
        "subject": "balloon: do not reuse a command ID before a device reset",
        "body": (
            "A device may reuse a command ID once it has received a STOP output buffer,\n"
            "but an echo of that ID from an earlier round can still be queued behind the\n"
            "STOP. A device that reuses the ID as early as allowed applies hints the\n"
            "driver produced before a later dirty-bitmap sync, and the host loses the\n"
            "pages the guest wrote since. The reference model finds this history in a\n"
            "few steps (ambiguity AMB-FPH-ID-REUSE). QEMU and Firecracker never reuse an\n"
            "ID within a device lifetime, so the stricter rule costs nothing.\n"),
        "edits": [(DESC,
                   "The device MUST NOT reuse a command ID until it has received an output\nbuffer containing VIRTIO_BALLOON_CMD_ID_STOP from the driver.\n",
                   "% PROP-FPH-3\nThe device MUST NOT reuse a command ID that it has set in\n"
                   "\\field{free_page_hint_cmd_id} since the last device reset.\n")],
    },
    {
        "slug": "balloon-virtqueue-numbering",
        "subject": "balloon: number the virtqueues that exist consecutively, by offered features",
        "body": (
            "The list gives statsq, free_page_vq and reporting_vq the fixed indices 2, 3\n"
            "and 4, then says each \"only exists if\" its feature \"is set\". Read one way, an\n"
            "absent queue keeps its index free; read the other, later queues move down.\n"
            "Every implementation we checked moves them down, but they judge \"set\"\n"
            "differently: QEMU, Firecracker and crosvm by the features the device offers,\n"
            "Linux by the features it negotiated (find_vqs names a queue only when its\n"
            "feature is negotiated). The two agree as long as a driver declines no\n"
            "queue's feature ahead of one it accepts. Linux 6.1 declines only\n"
            "VIRTIO_BALLOON_F_PAGE_REPORTING (with init_on_free and no PAGE_POISON), the\n"
            "last queue, so they agree today (the reference model's Linux runs under\n"
            "User-Mode Linux, ambiguity AMB-VQ-NUMBERING). Write the rule down, judged\n"
            "by offered features, which both sides know before any queue is set up.\n"
            "\n"
            "Relation to earlier patches. This is the rule of David Hildenbrand's\n"
            "\"virtio-balloon: Fix queue index assignment for non-existing queues\"\n"
            "(2025-04-04, posted in the thread of \"[PATCH v1] s390/virtio_ccw: don't\n"
            "allocate/assign airqs for non-existing queues\" [1]; it is not in the 1.4\n"
            "text): the queues that exist are numbered consecutively from 0. His text\n"
            "kept \"is set\" and put the numbering in a note; in the same thread he\n"
            "pointed out that QEMU creates the queues from the features it offers,\n"
            "whatever is negotiated. This patch makes that reading explicit and\n"
            "normative for both sides, so the two are compatible: a device that\n"
            "follows his text with \"set\" read as offered follows this one. It is a\n"
            "different rule from Michael S. Tsirkin's Linux patch \"virtio: fix vq #\n"
            "for balloon\" (2024-07-10 [2]), which gave each queue its place in the\n"
            "fixed list, holes included, and kept consecutive numbering inside the\n"
            "balloon driver only for compatibility with existing hypervisors.\n"
            "\n"
            "[1] https://lore.kernel.org/all/20250402203621.940090-1-david@redhat.com/\n"
            "[2] https://lore.kernel.org/all/3d655be73ce220f176b2c163839d83699f8faf43.1720611677.git.mst@redhat.com/\n"),
        "edits": [(DESC,
                   "  reporting_vq only exists if VIRTIO_BALLOON_F_PAGE_REPORTING is set.\n",
                   "  reporting_vq only exists if VIRTIO_BALLOON_F_PAGE_REPORTING is set.\n\n"
                   "  The virtqueues that exist are numbered consecutively from 0, in the\n"
                   "  order above; whether a virtqueue exists is decided by the features the\n"
                   "  device offers. For example, a device offering VIRTIO_BALLOON_F_FREE_PAGE_HINT\n"
                   "  but not VIRTIO_BALLOON_F_STATS_VQ has free_page_vq at index 2.\n\n"
                   "\\drivernormative{\\subsubsection}{Virtqueues}{Device Types / Memory Balloon Device / Virtqueues}\n\n"
                   "% PROP-VQ-2\nThe driver MUST use, for each virtqueue it sets up, the index given by\n"
                   "the features the device offers, also when it does not accept the feature\n"
                   "of an earlier virtqueue.\n\n"
                   "\\devicenormative{\\subsubsection}{Virtqueues}{Device Types / Memory Balloon Device / Virtqueues}\n\n"
                   "% PROP-VQ-1\nThe device MUST number the virtqueues that exist, judged by the features\n"
                   "it offers, consecutively from 0 in the order above.\n"),
                  (DRIVER_CONF,
                   "\\item \\ref{drivernormative:Device Types / Memory Balloon Device / Feature bits}\n",
                   "\\item \\ref{drivernormative:Device Types / Memory Balloon Device / Virtqueues}\n"
                   "\\item \\ref{drivernormative:Device Types / Memory Balloon Device / Feature bits}\n"),
                  (DEVICE_CONF,
                   "\\item \\ref{devicenormative:Device Types / Memory Balloon Device / Feature bits}\n",
                   "\\item \\ref{devicenormative:Device Types / Memory Balloon Device / Virtqueues}\n"
                   "\\item \\ref{devicenormative:Device Types / Memory Balloon Device / Feature bits}\n")],
    },
    {
        "slug": "balloon-hint-ordering",
        "subject": "balloon: state the host's ordering obligation for free page hints",
        "body": (
            "A hint says a page was free at some moment between the device setting a\n"
            "command ID and the device using the buffer that carries the hint; the guest\n"
            "may reuse the page right after. A host that skips hinted pages in a live\n"
            "migration is safe only if every guest write after that moment is caught by\n"
            "its dirty log and no hint is applied after a dirty-log synchronization that\n"
            "followed the command ID. The 2016 review asked this question; the model\n"
            "shows that each way of breaking the order loses data (clearing after the\n"
            "sync, applying stale hints), while the ordered host loses nothing.\n"
            "\n"
            "Also say, in the description, how this differs from free page reporting,\n"
            "where the page stays with the device until it uses the buffer.\n"),
        "edits": [(DESC,
                   "The contents of any stale pages that have not been written to since the\npage was hinted may be lost, and if read the contents of such pages will\nbe uninitialized memory.\n",
                   "The contents of any stale pages that have not been written to since the\npage was hinted may be lost, and if read the contents of such pages will\nbe uninitialized memory.\n\n"
                   "A hint does not hand the page to the device: the driver can reuse a hinted\n"
                   "page at any time, and the hint only says that the page was free at some\n"
                   "moment after the device set the command ID and before the device used the\n"
                   "buffer. A device that skips hinted pages when copying guest memory relies\n"
                   "on its own record of guest writes to copy the pages the guest reused. Free\n"
                   "page reporting, by contrast, hands the reported pages to the device until\n"
                   "the device uses the buffer, so the device can discard them.\n"),
                  (DESC,
                   "The device MUST report a value of VIRTIO_BALLOON_CMD_ID_DONE in\n\\field{free_page_hint_cmd_id} when it no longer has need for the\npreviously hinted pages.\n",
                   "The device MUST report a value of VIRTIO_BALLOON_CMD_ID_DONE in\n\\field{free_page_hint_cmd_id} when it no longer has need for the\npreviously hinted pages.\n\n"
                   "% PROP-FPH-4\nA device that skips hinted pages when copying guest memory MUST track guest\n"
                   "writes from before it sets \\field{free_page_hint_cmd_id} to the command ID of\n"
                   "the hints it applies, and MUST NOT apply a hint after it has discarded the\n"
                   "record of guest writes made since that command ID was set.\n")],
    },
    {
        "slug": "balloon-hint-round-end",
        "subject": "balloon: say what ends a hinting round, and notify every command ID change",
        "body": (
            "The description says a round ends when the driver runs out of pages or\n"
            "when the device sets free_page_hint_cmd_id to STOP or DONE. Devices also end\n"
            "a round by setting a new command ID: QEMU publishes STOP before and a new\n"
            "ID after every dirty-bitmap synchronization (the conformance suite saw IDs\n"
            "0x80000001 to 0x80000006 over seven synchronizations of one migration).\n"
            "\n"
            "Nothing requires a configuration change notification when the field\n"
            "changes. Linux reads the field only from its configuration change handler,\n"
            "so a device that changes it silently is never heard: no round starts, or\n"
            "hints keep coming under a command ID the device no longer accepts. QEMU and\n"
            "Firecracker notify on every change. Make it a requirement (ambiguities\n"
            "AMB-FPH-ROUND-END, AMB-FPH-CONFIG-NOTIFY).\n"
            "\n"
            "Pages supplied after the driver's STOP are provided with STOP (by the\n"
            "tagging rule of the earlier patch). Once the device reports STOP itself,\n"
            "they match the current value of the field, and \"MUST ignore pages provided\n"
            "with a command ID that does not match\" no longer excludes them. Say that\n"
            "STOP never makes a page a hint; QEMU 7.2 already ignores a hint queued\n"
            "behind the driver's STOP (reproducer hint-after-stop). Linux also sends STOP\n"
            "when the device ends the round; recommend it, since it tells the device no\n"
            "more hints follow.\n"),
        "edits": [(DESC,
                   "\\item A round of hinting ends either when the driver is no longer able to\n"
                   "  supply more pages for hinting as described above, or when the device\n"
                   "  updates \\field{free_page_hint_cmd_id} configuration field to contain either\n"
                   "  VIRTIO_BALLOON_CMD_ID_STOP or VIRTIO_BALLOON_CMD_ID_DONE.\n",
                   "\\item A round of hinting ends either when the driver is no longer able to\n"
                   "  supply more pages for hinting as described above, or when the device\n"
                   "  updates \\field{free_page_hint_cmd_id} configuration field to contain\n"
                   "  VIRTIO_BALLOON_CMD_ID_STOP, VIRTIO_BALLOON_CMD_ID_DONE or a new command\n"
                   "  ID, whichever comes first. The device sends a configuration change\n"
                   "  notification each time it updates \\field{free_page_hint_cmd_id}.\n"),
                  (DESC,
                   "If the driver is unable to supply pages, it MUST complete hinting by adding\n"
                   "an output buffer containing the command ID VIRTIO_BALLOON_CMD_ID_STOP.\n",
                   "If the driver is unable to supply pages, it MUST complete hinting by adding\n"
                   "an output buffer containing the command ID VIRTIO_BALLOON_CMD_ID_STOP.\n\n"
                   "% PROP-FPH-7\nIf the driver stops supplying pages because \\field{free_page_hint_cmd_id}\n"
                   "no longer contains the command ID it sent, it SHOULD add an output buffer\n"
                   "containing VIRTIO_BALLOON_CMD_ID_STOP.\n"),
                  (DESC,
                   "VIRTIO_BALLOON_CMD_ID_STOP any time that it will not be able to make use\n"
                   "of the hints provided by the driver.\n",
                   "VIRTIO_BALLOON_CMD_ID_STOP any time that it will not be able to make use\n"
                   "of the hints provided by the driver.\n\n"
                   "% PROP-FPH-5\nThe device MUST send a configuration change notification each time it\n"
                   "changes \\field{free_page_hint_cmd_id}.\n\n"
                   "% PROP-FPH-6\nThe device MUST ignore pages that are provided with\n"
                   "VIRTIO_BALLOON_CMD_ID_STOP, also while \\field{free_page_hint_cmd_id}\n"
                   "contains VIRTIO_BALLOON_CMD_ID_STOP.\n")],
    },
    {
        "slug": "balloon-hint-whole-pages",
        "subject": "balloon: a hint covers the whole pages inside its buffer",
        "body": (
            "The driver \"maps a series of pages and adds them ... as individual\n"
            "scatter-gather input buffer entries\", but nothing gives the page size or\n"
            "says what a buffer that starts or ends inside a page hints. A device that\n"
            "rounds the start of a buffer down skips, when migrating, the part of a page\n"
            "the driver never hinted, and that part is lost.\n"
            "\n"
            "Linux hints whole blocks of 2^order pages. QEMU 7.2 skips neither page that\n"
            "a hint buffer offset into a page touches, while a whole-page hint in the\n"
            "same round is skipped (a qtest reproducer in virtio-balloon-ref,\n"
            "ambiguity AMB-FPH-ALIGNMENT). Require both sides to agree on 4096-byte\n"
            "pages, the unit of the balloon's other queues.\n"),
        "edits": [(DESC,
                   "The driver MUST use an output buffer size of 4 bytes for all output\n"
                   "buffers submitted to the free_page_vq.\n",
                   "The driver MUST use an output buffer size of 4 bytes for all output\n"
                   "buffers submitted to the free_page_vq.\n\n"
                   "% PROP-FPH-8\nThe driver MUST supply pages as input buffers whose guest physical address\n"
                   "and length are both multiples of 4096 bytes.\n"),
                  (DESC,
                   "If the content of a previously hinted page has not been modified by the\n",
                   "% PROP-FPH-9\nThe device MUST treat as hinted only the 4096-byte pages, aligned on 4096\n"
                   "bytes, that lie entirely within an input buffer.\n\n"
                   "If the content of a previously hinted page has not been modified by the\n")],
    },
    {
        "slug": "balloon-used-lengths",
        "subject": "balloon: used lengths on free_page_vq and reporting_vq",
        "body": (
            "The device writes nothing into hint and report buffers through the\n"
            "virtqueue, so the used length is 0 by the general rule for used buffers.\n"
            "Devices differ anyway: QEMU reports 0 on both queues (on free_page_vq\n"
            "since 6.2), Cloud Hypervisor reports the byte count of report buffers.\n"
            "Require 0 on free_page_vq, where every current device agrees, recommend it\n"
            "on reporting_vq, and tell drivers not to depend on the reporting_vq length\n"
            "(ambiguities AMB-FPH-USED-LEN, AMB-REPORT-DIRECTION).\n"),
        "edits": [(DESC,
                   "\\paragraph{Legacy Interface: Free Page Hinting}",
                   "% PROP-FPH-10\nThe device MUST set the used length of every buffer it uses on the\n"
                   "free_page_vq to 0.\n\n"
                   "\\paragraph{Legacy Interface: Free Page Hinting}"),
                  (DESC,
                   "The driver SHOULD avoid reading/writing reported pages if\nnot strictly necessary.\n",
                   "The driver SHOULD avoid reading/writing reported pages if\nnot strictly necessary.\n\n"
                   "% PROP-FPR-1\nThe driver MUST NOT depend on the used length of buffers on the\n"
                   "reporting_vq.\n"),
                  (DESC,
                   "MUST NOT modify the the content of a reported page to a value other than\n"
                   "\\field{poison_val}.\n",
                   "MUST NOT modify the the content of a reported page to a value other than\n"
                   "\\field{poison_val}.\n\n"
                   "% PROP-FPR-2\nThe device SHOULD set the used length of every buffer it uses on the\n"
                   "reporting_vq to 0.\n")],
    },
    {
        "slug": "balloon-poison-and-hints",
        "subject": "balloon: poison hinted pages again before the guest reuses them",
        "body": (
            "A hinted page may have been skipped by a migration: on the destination it\n"
            "holds whatever the destination's memory held (zeros with QEMU), not\n"
            "poison_val. The hinting text has the driver initialize hinted pages it\n"
            "releases before DONE, but not those it releases after DONE, and the Page\n"
            "Poison text does not mention hinting. A guest that checks the poison value\n"
            "when it allocates a page then reports corruption after the migration.\n"
            "\n"
            "Linux is safe because it returns hinted pages through its page allocator,\n"
            "which writes the poison value (or zeros, with init_on_free) on free. State\n"
            "that as the rule. The alternative, making the device keep poison_val in\n"
            "hinted pages as reporting does, would make every host fill skipped pages\n"
            "with poison_val on the destination; QEMU does not (ambiguity\n"
            "AMB-FPH-POISON).\n"),
        "edits": [(DESC,
                   "The driver MUST NOT modify \\field{poison_val} while the DRIVER_OK bit is set.\n",
                   "The driver MUST NOT modify \\field{poison_val} while the DRIVER_OK bit is set.\n\n"
                   "% PROP-PP-1\nIf VIRTIO_BALLOON_F_FREE_PAGE_HINT has also been negotiated, the driver\n"
                   "MUST initialize a previously hinted page with \\field{poison_val} before it\n"
                   "releases the page for use by the guest.\n")],
    },
    {
        "slug": "balloon-pace-the-copy-by-the-hints",
        "subject": "balloon: note that a device can pace its copy by the hints it receives",
        "body": (
            "A driver hints at its own pace, and a host that copies guest memory at\n"
            "full speed once it sets a command ID copies most free pages before their\n"
            "hints arrive: with Linux's driver under QEMU, hints cut the pages sent to\n"
            "about half of what they could. The text says nothing about when hints are\n"
            "useful. Add an informative paragraph: a device gains from a hint only if\n"
            "it arrives before the device copies the page, and can pace its copy by\n"
            "the rate at which hints arrive, within a bound, so a driver that never\n"
            "hints costs little. No requirement: the best pace depends on the host.\n"
            "\n"
            "Measured with the conformance suite (bench/bench_linux_migration.py), QEMU\n"
            "11.1.3 under TCG, the host using QMP only: max-bandwidth at 0.35 times the\n"
            "rate at which hints clear guest RAM, lifted when no hint came for 200 ms\n"
            "of the guest's time, when none came within 0.25 s, or at 2 s; a 10 Gbit/s\n"
            "link in every mode. Pages sent in full over the honest ideal (pages in use\n"
            "plus forced resends), and seconds:\n"
            "  1 GiB, 700 MiB written and freed:\n"
            "    Linux 7.2.13   paced 1.09 (0.88 s)  unpaced 1.63 (1.07 s)  off 3.39 (1.11 s)\n"
            "    Linux 6.12.117 paced 1.14 (0.83 s)  unpaced 1.95 (0.69 s)  off 4.30 (0.90 s)\n"
            "    Linux 6.1      paced 1.13 (0.63 s)  unpaced 2.40 (0.91 s)  off 4.15 (1.02 s)\n"
            "  2 GiB, 1,500 MiB written and freed:\n"
            "    Linux 7.2.13   paced 1.16 (2.16 s)  unpaced 2.24 (1.27 s)  off 4.42 (1.88 s)\n"
            "    Linux 6.12.117 paced 1.29 (2.11 s)  unpaced 2.62 (2.49 s)  off 5.22 (2.54 s)\n"
            "    Linux 6.1      paced 1.37 (1.56 s)  unpaced 2.17 (1.76 s)  off 4.90 (2.35 s)\n"
            "Paced, five of six were faster than without hints; 7.2 at 2 GiB was 0.28 s\n"
            "slower. At 0.5 times the rate the 2 GiB guests stayed at 1.46 (7.2), 1.58\n"
            "(6.12) and 1.87 (6.1). A guest that never hints, under the same pacing,\n"
            "took up to 1 s longer than the run without hints on a loaded host. Every\n"
            "page matched at the destination in every run.\n"),
        "edits": [(DESC,
                   "the device uses the buffer, so the device can discard them.\n",
                   "the device uses the buffer, so the device can discard them.\n\n"
                   "A hint is of use to a device that copies guest memory only if it arrives\n"
                   "before the device copies the page it names. A driver supplies hints at its\n"
                   "own pace, so a device that copies at full speed from the moment it sets a\n"
                   "command ID copies many free pages before their hints arrive. Such a device\n"
                   "can instead limit its copy rate to a fraction of the rate at which hints\n"
                   "arrive until no hint has arrived for a while, and bound that wait so that\n"
                   "a driver that supplies no hints delays the copy only briefly.\n")],
    },
]
