"""Profile ``device-init-reported``: oasis-tcs/virtio-spec issue #244 (Michael S. Tsirkin, 2026-05-03),
``VIRTIO_BALLOON_F_DEVICE_INIT_REPORTED``, proposed as bit 6 (see :mod:`.bits`).

The device says, through the used length of each reporting_vq element, that it initialized the reported
pages (zeros, or poison_val with PAGE_POISON). Our reading allows only 0 and the whole length
(``PROP-DIR-DEV-1``); the driver trusts nothing else (``PROP-DIR-DRV-1``).
"""

from __future__ import annotations

from collections.abc import Callable

from refmodel.errors import PeerSpecViolation


def report_used_len(length: int, initialized: bool) -> int:
    """The device side of #244 (``PROP-DIR-DEV-1``): the whole length if every page was initialized."""
    return length if initialized else 0


def reported_initialized(length: int, used_len: int,
                         reads_initialized: Callable[[], bool] | None = None) -> bool:
    """The driver's reading of one returned reporting_vq element (``PROP-DIR-DRV-1``), checked."""
    if used_len not in (0, length):
        raise PeerSpecViolation("PROP-DIR-DEV-1", f"used length {used_len} for a {length}-byte report: "
                                "neither 0 nor the whole length")
    if used_len and reads_initialized is not None and not reads_initialized():
        raise PeerSpecViolation("PROP-DIR-DEV-1", "report marked initialized but its pages hold other data")
    return used_len == length and length > 0
