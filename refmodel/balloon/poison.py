"""Page poison (§5.5.6.6): the driver writes poison_val before DRIVER_OK, and the pages it gives away
(deflated, reported) hold that pattern.

:class:`PoisonDevice` and :class:`PoisonDriver` are parts of the balloon device and driver; each names,
under ``TYPE_CHECKING``, what it uses of the side it is part of.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from refmodel.balloon.config import CFG_POISON, FIELDS_BY_NAME
from refmodel.errors import PeerSpecViolation, Sticky
from refmodel.system.guest_os import poison_pattern
from refmodel.virtio.features import Feature

if TYPE_CHECKING:
    from refmodel.balloon.config import BalloonConfigSpace
    from refmodel.system.guest_os import GuestOS

F = Feature
_POISON = FIELDS_BY_NAME["poison_val"]


class PoisonDevice(Sticky):
    """Part of :class:`~refmodel.balloon.device.BalloonDevice`: whether and what the driver wrote."""

    poison_written: bool
    if TYPE_CHECKING:  # provided by BalloonDevice
        config: BalloonConfigSpace

        def negotiated_has(self, feature: Feature) -> bool: ...

    def _reset_poison(self) -> None:
        self.poison_written = False

    @property
    def poison_val(self) -> int | None:
        """The poison value when PAGE_POISON is negotiated, else None."""
        return self.config.get("poison_val") if self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON) else None

    def _note_config_write(self, offset: int, size: int) -> None:
        if offset < _POISON.offset + _POISON.size and _POISON.offset < offset + size:
            self.poison_written = True

    def _check_poison_written(self) -> None:
        """At DRIVER_OK."""
        if self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON) and not self.poison_written:
            raise PeerSpecViolation("BAL-PP-DRV-2", "DRIVER_OK set before poison_val was written")


class PoisonDriver(Sticky):
    """Part of :class:`~refmodel.balloon.driver.BalloonDriver`: write poison_val, fill pages with it."""

    poison_val: int
    if TYPE_CHECKING:  # provided by BalloonDriver
        dev: Any
        os: GuestOS | None

        def negotiated_has(self, feature: Feature) -> bool: ...

    def write_poison(self) -> None:
        """With PAGE_POISON, write poison_val before DRIVER_OK (BAL-PP-DRV-2). Override point."""
        if self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON):
            self.dev.write_config(CFG_POISON, 4, self.poison_val)

    def poison(self, pages: list[int]) -> None:
        """With PAGE_POISON, fill ``pages`` with poison_val: the driver gives them away (BAL-PP-DRV-1)."""
        if not self.negotiated_has(F.VIRTIO_BALLOON_F_PAGE_POISON):
            return
        assert self.os is not None
        pattern = poison_pattern(self.poison_val)
        for p in pages:
            self.os.fill(p, pattern)
