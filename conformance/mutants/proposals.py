"""Mutants of the proposal profiles' reference device and driver: each subclasses the profile's reference
(``refmodel.balloon.proposals.reference``) and breaks one of its requirements, named in ``breaks``; its
``profile`` is the run that must catch it (the registry selects it for the mutant)."""

from __future__ import annotations

from typing import Any

from refmodel.balloon.hinting import DeviceHintState, FreePageHintDevice
from refmodel.balloon.inflate import InflateDriver
from refmodel.balloon.proposals import bitmap_inflate as bmp
from refmodel.balloon.proposals import combined_vq as cmb
from refmodel.balloon.proposals.bits import BITS, Proposal
from refmodel.balloon.proposals.device_init_reported import P as DIR
from refmodel.balloon.proposals.reference import device_class, driver_class
from refmodel.balloon.proposals.stats_only import STATS_ONLY
from refmodel.system.guest import bits
from refmodel.virtio.virtq import Chain

P = Proposal


def _device(p: Proposal) -> Any:
    return device_class([p])


def _driver(p: Proposal) -> Any:
    return driver_class([p])


class StatsOnlyAsksForPages(_device(P.STATS_ONLY)):  # type: ignore[misc]
    """stats-only: keeps asking a stats-only guest for pages (num_pages above actual)."""

    breaks = "PROP-SO-DEV-1"
    profile = P.STATS_ONLY.value
    asks_anyway = True


class StatsOnlyInflatesAnyway(_driver(P.STATS_ONLY)):  # type: ignore[misc]
    """stats-only: declares the mode, then inflates when the host asks all the same."""

    breaks = "PROP-SO-DRV-1"
    profile = P.STATS_ONLY.value

    def resize(self) -> None:
        InflateDriver.resize(self)


class StatsOnlyChangesMode(_driver(P.STATS_ONLY)):  # type: ignore[misc]
    """stats-only: after DRIVER_OK writes its features again without STATS_ONLY (a mode change)."""

    breaks = "PROP-SO-DRV-2"
    profile = P.STATS_ONLY.value

    def run(self) -> None:
        if self.ok and self.proposal_has(P.STATS_ONLY):
            self.dev.write_driver_features(self.negotiated & ~STATS_ONLY)
        super().run()


class _HoldingHints(FreePageHintDevice):
    """Leaves hint buffers on the ring once the host has stopped or is done with the round."""

    def process(self) -> int:
        if self.state in (DeviceHintState.STOP, DeviceHintState.DONE) and self.tag is not None:
            return 0
        return super().process()


class WaitOnAckHoldsHints(_device(P.HINT_WAIT_ON_ACK)):  # type: ignore[misc]
    """hint-wait-on-ack: after STOP or DONE leaves the driver's hint buffers unused."""

    breaks = "PROP-HWA-DEV-2"
    profile = P.HINT_WAIT_ON_ACK.value

    def make_hint_device(self, *args: Any, **kwargs: Any) -> FreePageHintDevice:
        return _HoldingHints(*args, **kwargs)


class WaitOnAckDiscardsAfterUse(_device(P.HINT_WAIT_ON_ACK)):  # type: ignore[misc]
    """hint-wait-on-ack: discards the hinted pages a turn after it used their buffers (an asynchronous
    MADV_DONTNEED that the ACK does not wait for)."""

    breaks = "PROP-HWA-DEV-1"
    profile = P.HINT_WAIT_ON_ACK.value

    def reset_state(self) -> None:
        self.late = 0
        super().reset_state()

    def apply_hint(self, pages: int) -> None:
        super().apply_hint(pages)
        self.late |= pages

    def run(self) -> None:
        for p in bits(self.late):
            self.mem.fill(p * 4096, 4096, 0xD7)
        self.late = 0
        super().run()


class WaitOnAckWithoutHinting(_driver(P.HINT_WAIT_ON_ACK)):  # type: ignore[misc]
    """hint-wait-on-ack: accepts the bit whenever it is offered, FREE_PAGE_HINT or not."""

    breaks = "PROP-HWA-DRV-2"
    profile = P.HINT_WAIT_ON_ACK.value

    def wants(self, p: Proposal, accepted: int) -> bool:
        return True


class InitOnInflateFalseClaim(_device(P.DEVICE_INIT_ON_INFLATE)):  # type: ignore[misc]
    """device-init-on-inflate: sets every bit but leaves the pages as they were (the discard failed)."""

    breaks = "PROP-DII-DEV-1"
    profile = P.DEVICE_INIT_ON_INFLATE.value

    def initialize(self, pages: int) -> bool:
        for p in bits(pages):
            self.mem.fill(p * 4096, 4096, 0xC5)
        return True


class InitOnInflateNoBitmap(_driver(P.DEVICE_INIT_ON_INFLATE)):  # type: ignore[misc]
    """device-init-on-inflate: accepts the bit but sends plain PFN arrays, no bitmap."""

    breaks = "PROP-DII-DRV-1"
    profile = P.DEVICE_INIT_ON_INFLATE.value

    def send_pfns(self, name: str, pfns: list[int]) -> int:
        return InflateDriver.send_pfns(self, name, pfns)


class InitReportedHalfLength(_device(P.DEVICE_INIT_REPORTED)):  # type: ignore[misc]
    """device-init-reported: returns half the length of each report, neither 0 nor the whole."""

    breaks = "PROP-DIR-DEV-1"
    profile = P.DEVICE_INIT_REPORTED.value

    def on_reporting_vq(self, chain: Chain) -> int | None:
        used = super().on_reporting_vq(chain)
        return chain.writable_len // 2 if self.proposal_has(DIR) else used


class BitmapDeflateAsPfns(_device(P.BITMAP_INFLATE_DEFLATE)):  # type: ignore[misc]
    """bitmap-inflate-deflate: takes inflate bitmaps, but reads deflate buffers as PFN arrays still."""

    breaks = "PROP-BMP-DEV-1"
    profile = P.BITMAP_INFLATE_DEFLATE.value

    def pfns_untrusted(self, chain: Chain, queue: str) -> list[int]:
        if queue == "deflateq":
            return super(bmp.BitmapReferenceDevice, self).pfns_untrusted(chain, queue)
        return super().pfns_untrusted(chain, queue)


class BitmapUnalignedBase(_driver(P.BITMAP_INFLATE_DEFLATE)):  # type: ignore[misc]
    """bitmap-inflate-deflate: starts each bitmap at its lowest PFN, not a multiple of 64."""

    breaks = "PROP-BMP-DRV-2"
    profile = P.BITMAP_INFLATE_DEFLATE.value

    def bitmap_of(self, pfns: list[int]) -> bytes:
        base = min(pfns)
        return bmp.encode(base, max(pfns) - base + 1, sum(1 << (p - base) for p in pfns))


class BitmapLongerThanBuffer(_driver(P.BITMAP_INFLATE_DEFLATE)):  # type: ignore[misc]
    """bitmap-inflate-deflate: sends one word more than nbits needs."""

    breaks = "PROP-BMP-DRV-1"
    profile = P.BITMAP_INFLATE_DEFLATE.value

    def bitmap_of(self, pfns: list[int]) -> bytes:
        return super().bitmap_of(pfns) + bytes(bmp.WORD)


class BitmapPastMemory(_driver(P.BITMAP_INFLATE_DEFLATE)):  # type: ignore[misc]
    """bitmap-inflate-deflate: each bitmap's nbits runs one bit past the end of guest memory."""

    breaks = "PROP-BMP-DRV-3"
    profile = P.BITMAP_INFLATE_DEFLATE.value

    def bitmap_of(self, pfns: list[int]) -> bytes:
        assert self.os is not None
        base = min(pfns) & ~63
        data = bmp.encode(base, self.os.mem.end // 4096 - base + 1, sum(1 << (p - base) for p in pfns))
        return data if len(data) <= self.slot_bytes else super().bitmap_of(pfns)  # a word more than a slot


class CombinedIgnoresDeflations(_device(P.COMBINED_VQ)):  # type: ignore[misc]
    """combined-inflate-deflate-vq: applies a combined buffer's inflations and drops its deflations."""

    breaks = "PROP-CMB-DEV-1"
    profile = P.COMBINED_VQ.value

    def on_combined_vq(self, chain: Chain) -> int | None:
        kept = self.ballooned
        used = super().on_combined_vq(chain)
        inflate, _ = cmb.decode(chain.read_all(self.mem))
        self.ballooned = kept | sum(1 << p for p in inflate)
        return used


class CombinedUsesInflateq(_driver(P.COMBINED_VQ)):  # type: ignore[misc]
    """combined-inflate-deflate-vq: negotiates the combined queue, then inflates on inflateq all the same."""

    breaks = "PROP-CMB-DRV-3"
    profile = P.COMBINED_VQ.value

    def send_combined(self, inflate: list[int], deflate: list[int]) -> int:
        # a plain inflation goes the 1.4 way, on inflateq, while inflateq has room (its one bug: not also
        # a crash when a turn has more batches than inflateq has buffer slots)
        if inflate and not deflate and self.can_send("inflateq"):
            return self.send_pfns("inflateq", inflate)
        return super().send_combined(inflate, deflate)


class CombinedCountsOneMore(_driver(P.COMBINED_VQ)):  # type: ignore[misc]
    """combined-inflate-deflate-vq: its header counts one PFN to inflate more than the buffer holds."""

    breaks = "PROP-CMB-DRV-1"
    profile = P.COMBINED_VQ.value

    def combined_buffer(self, inflate: list[int], deflate: list[int]) -> bytes:
        data = super().combined_buffer(inflate, deflate)
        return cmb.HEADER.pack(len(inflate) + 1, len(deflate)) + data[cmb.HEADER.size:] if inflate else data


class CombinedDeflatesTwice(_driver(P.COMBINED_VQ)):  # type: ignore[misc]
    """combined-inflate-deflate-vq: names the first PFN of each deflate twice in its buffer."""

    breaks = "PROP-CMB-DRV-2"
    profile = P.COMBINED_VQ.value

    def combined_buffer(self, inflate: list[int], deflate: list[int]) -> bytes:
        return super().combined_buffer(inflate, [*deflate, deflate[0]] if deflate else deflate)


DEVICE_MUTANTS = (StatsOnlyAsksForPages, WaitOnAckHoldsHints, WaitOnAckDiscardsAfterUse, InitOnInflateFalseClaim,
                  InitReportedHalfLength, BitmapDeflateAsPfns, CombinedIgnoresDeflations)
DRIVER_MUTANTS = (StatsOnlyInflatesAnyway, StatsOnlyChangesMode, WaitOnAckWithoutHinting, InitOnInflateNoBitmap,
                  BitmapUnalignedBase, BitmapLongerThanBuffer, BitmapPastMemory, CombinedUsesInflateq,
                  CombinedCountsOneMore, CombinedDeflatesTwice)
__all__ = ["BITS", "DEVICE_MUTANTS", "DRIVER_MUTANTS"]
