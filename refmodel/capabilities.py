"""The optional abilities an implementation under test may declare in its ``capabilities``.

They live in the model because the reference device and driver declare theirs too; the Protocol each
one stands for is in :mod:`conformance.interface`.
"""

from __future__ import annotations

import enum


class Capability(enum.Enum):
    """An optional ability of an implementation under test. The value is the name used in reports."""

    #: Device: the host can start and finish a free page hinting round (§5.5.6.5).
    HINTING = "hinting"
    #: Device: the host can stop a round early, writing STOP to ``free_page_hint_cmd_id``.
    HINT_STOP = "hint_stop"
    #: Device: which pages the host would skip now (the hinted-pages observation).
    HINTED_PAGES = "hinted_pages"
    #: Device: the host can ask for and read memory statistics (§5.5.6.3).
    STATS = "stats"
    #: Device: ``take_interrupts().queues`` names exactly the queues signalled (MSI-X, one vector each).
    PER_QUEUE_INTERRUPTS = "per_queue_interrupts"
    #: Driver: can be asked to report free pages now (§5.5.6.7).
    REPORT = "report"
    #: Driver: can be put under memory pressure (§5.5.6.1, DEFLATE_ON_OOM).
    OOM = "oom"
    #: Driver queue: tells the suite when it sent an available buffer notification.
    KICKED = "kicked"
    #: Driver: a real guest with an agent that allocates, frees and checks pages (Linux).
    GUEST_AGENT = "guest_agent"
