"""Standalone reproducers for what the suite found in QEMU: each sets up one QEMU (or a migration pair)
over qtest, does the least that shows the behaviour, and returns what it saw beside what the model
expects. ``python -m conformance.qemu.reproducers NAME [--qemu-binary PATH]`` runs one; the exit status
is 1 when QEMU diverges from the model. The docstrings name the QEMU code involved.
"""

from __future__ import annotations

import argparse
import sys
import time

import attrs

from refmodel.balloon_driver import BalloonDriver
from refmodel.constants import BALLOON_PAGE_SIZE, VIRTIO_BALLOON_CMD_ID_STOP
from refmodel.guest import bits, range_mask
from refmodel.guest_os import GuestOS
from refmodel.hinting import DriverHintState

from .device import QemuBalloon
from .migration import MigrationPair
from .process import QemuError

CFG_CMD_ID = 8


@attrs.frozen
class Reproduction:
    name: str
    requirement: str
    expected: str  # what the model (and the proposal) says
    observed: str
    diverges: bool


def _hinting_pair(binary: str | None, ram_mib: int, bandwidth: int) -> tuple[MigrationPair, QemuBalloon,
                                                                              GuestOS, BalloonDriver]:
    pair = MigrationPair(binary, ram_mib=ram_mib, hints=True, bandwidth=bandwidth)
    dev, os_ = pair.source_balloon()
    drv = BalloonDriver(hint_burst=0, queue_size=64)  # the driver echoes IDs but hints nothing itself
    if not drv.probe(dev, os_):
        pair.close()
        raise QemuError("the source balloon refused the reference driver's features")
    return pair, dev, os_, drv


def _pump(dev: QemuBalloon, drv: BalloonDriver) -> None:
    dev.run()
    irq = dev.take_interrupts()
    drv.interrupt(irq.queues, irq.config)
    drv.run()


def unaligned_hint(binary: str | None = None, *, ram_mib: int = 64, offset: int = 2048) -> Reproduction:
    """PROP-FPH-9 (AMB-FPH-ALIGNMENT): a hint buffer ``[P * 4096 + offset, +4096)`` covers no whole page.

    The model treats no page as hinted, so pages P and P+1 arrive intact. A control hint of the whole
    page C, sent right after it in the same round, shows the round was applied: C must arrive as
    zeros (skipped). If QEMU rounded the start down (``addr >> 12`` with ``len >> 12`` pages), the
    destination would read zeros in P's first ``offset`` bytes.
    """
    pair, dev, os_, drv = _hinting_pair(binary, ram_mib, bandwidth=16 << 20)
    try:
        src = pair.src
        page = (ram_mib << 20) // BALLOON_PAGE_SIZE - 64  # late in RAM: the bulk pass reaches it last
        control = page + 4
        os_.pages.allocated |= range_mask(page, 2) | range_mask(control, 1)  # in use: never hinted by the driver
        payload = bytes((i * 7 + 1) & 0xFF or 1 for i in range(2 * BALLOON_PAGE_SIZE))
        for first, data in ((page, payload), (control, payload[:BALLOON_PAGE_SIZE])):
            src.qtest.cmd(f"write 0x{first * BALLOON_PAGE_SIZE:x} 0x{len(data):x} 0x{data.hex()}")
        pair.fill_noise(bits(os_.pages.free))  # every page costs bandwidth: a slow bulk pass
        pair.start()
        hint = drv.hint
        assert hint is not None
        deadline = time.monotonic() + 30
        while hint.state is not DriverHintState.HINTING:
            if time.monotonic() > deadline or pair.status() in ("completed", "failed"):
                raise QemuError("QEMU never started a hinting round")
            _pump(dev, drv)
        addr = page * BALLOON_PAGE_SIZE + offset
        hint.vq.add(writable=[(addr, BALLOON_PAGE_SIZE)])
        hint.vq.add(writable=[(control * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)])
        hint.vq.publish()
        hint.kick()
        pair.finish(lambda: _pump(dev, drv))
        dst = pair.dst
        assert dst is not None
        got = dst.mem.read(page * BALLOON_PAGE_SIZE, len(payload))
        if dst.mem.read(control * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) == payload[:BALLOON_PAGE_SIZE]:
            raise QemuError("the control hint was not applied either (the round ended first); run again")
        bad = [i for i in range(len(payload)) if got[i] != payload[i]]
        observed = ("P and P+1 intact; the control page was skipped" if not bad else
                    f"{len(bad)} bytes differ on the destination, at page offsets "
                    f"{bad[0] % BALLOON_PAGE_SIZE:#x}..{bad[-1] % BALLOON_PAGE_SIZE:#x} of page "
                    f"{'P' if bad[0] < BALLOON_PAGE_SIZE else 'P+1'} (reads {got[bad[0]]:#04x})")
        return Reproduction("unaligned-hint", "PROP-FPH-9",
                            f"hint [{addr:#x}, +0x1000) covers no whole page: P and P+1 arrive intact",
                            observed, bool(bad))
    finally:
        pair.close()


def cmd_id_mid_round(binary: str | None = None) -> Reproduction:
    """BAL-FPH-D5 / PROP-FPH-2 (AMB-FPH-ACTIVE-VALUE): read free_page_hint_cmd_id after echoing it.

    The model keeps the published ID until the device publishes another value or uses the driver's
    STOP. QEMU 7.2's ``virtio_balloon_get_config`` has no case for the active state (S_START), so the
    field reads STOP as soon as QEMU has taken the echo, with no configuration change notification.
    """
    pair, dev, os_, drv = _hinting_pair(binary, 64, bandwidth=4 << 20)
    try:
        pair.fill_noise(bits(os_.pages.free))
        pair.start()
        hint = drv.hint
        assert hint is not None
        deadline = time.monotonic() + 30
        published = 0
        while not published:
            if time.monotonic() > deadline:
                raise QemuError("QEMU never published a command ID")
            dev.run()
            published = dev.read_config(CFG_CMD_ID, 4)
            published = published if published > 1 else 0
        _pump(dev, drv)  # the driver reads the ID on the configuration change and echoes it
        dev.run()
        after = dev.read_config(CFG_CMD_ID, 4)
        notified = dev.take_interrupts().config
        pair.cancel()
        return Reproduction("cmd-id-mid-round", "BAL-FPH-D5",
                            f"after the driver's echo of {published:#x} the field still reads {published:#x}",
                            f"the field reads {after:#x}" + (" (with a configuration change notification)"
                                                             if notified else " (no notification)"),
                            after != published)
    finally:
        pair.close()


REPRODUCERS = {"unaligned-hint": unaligned_hint, "cmd-id-mid-round": cmd_id_mid_round}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m conformance.qemu.reproducers", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(REPRODUCERS))
    ap.add_argument("--qemu-binary")
    args = ap.parse_args(argv)
    try:
        r = REPRODUCERS[args.name](args.qemu_binary)
    except QemuError as e:
        print(f"{args.name}: {e}", file=sys.stderr)
        return 2
    print(f"{r.name} ({r.requirement})\n  model:    {r.expected}\n  observed: {r.observed}\n"
          f"  verdict:  {'diverges from the model' if r.diverges else 'agrees with the model'}")
    return 1 if r.diverges else 0


if __name__ == "__main__":
    sys.exit(main())
