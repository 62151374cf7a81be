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
            "by offered features, which both sides know before any queue is set up.\n"),
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
            "sync, applying stale hints), while the ordered host loses nothing.\n"),
        "edits": [(DESC,
                   "The device MUST report a value of VIRTIO_BALLOON_CMD_ID_DONE in\n\\field{free_page_hint_cmd_id} when it no longer has need for the\npreviously hinted pages.\n",
                   "The device MUST report a value of VIRTIO_BALLOON_CMD_ID_DONE in\n\\field{free_page_hint_cmd_id} when it no longer has need for the\npreviously hinted pages.\n\n"
                   "% PROP-FPH-4\nA device that skips hinted pages when copying guest memory MUST track guest\n"
                   "writes from before it sets \\field{free_page_hint_cmd_id} to the command ID of\n"
                   "the hints it applies, and MUST NOT apply a hint after it has discarded the\n"
                   "record of guest writes made since that command ID was set.\n")],
    },
]
