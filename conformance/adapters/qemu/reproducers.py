"""Standalone reproducers for what the suite found in QEMU: each sets up one QEMU (or a migration pair)
over qtest, does the least that shows the behaviour, and returns what it saw beside what the model
expects. ``python -m conformance.adapters.qemu.reproducers NAME [--qemu-binary PATH]`` runs one; the exit status
is 1 when QEMU diverges from the model. The docstrings name the QEMU code involved.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Mapping

import attrs

from refmodel.balloon.driver import BalloonDriver
from refmodel.balloon.constants import BALLOON_PAGE_SIZE
from refmodel.errors import PeerSpecViolation
from refmodel.system.guest import bits, range_mask
from refmodel.system.guest_os import GuestOS
from refmodel.balloon.hinting import DriverHintState, FreePageHintDriver
from refmodel.virtio.split.layout import AVAIL_IDX, USED_IDX, used_ring_entry
from refmodel.virtio.memory import GuestMemory

from conformance.adapters.qemu.device import RESERVED_PAGES, QemuBalloon, QemuFactory
from conformance.adapters.qemu.migration import MigrationPair
from conformance.adapters.qemu.process import QemuError

CFG_CMD_ID = 8


@attrs.frozen
class Reproduction:
    name: str
    requirement: str
    expected: str  # what the model (and the proposal) says
    observed: str
    diverges: bool


def reproducer_main(description: str, table: Mapping[str, Callable[[str | None], Reproduction]],
                    argv: list[str] | None = None, *, diverged: str = "QEMU diverges from the model") -> int:
    """The command line of a reproducer module: run one by name, print what it saw; exit 1 on divergence."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("name", choices=sorted(table))
    p.add_argument("--qemu-binary")
    args = p.parse_args(argv)
    r = table[args.name](args.qemu_binary)
    print(f"{r.name} ({r.requirement})\n  expected: {r.expected}\n  observed: {r.observed}")
    print(diverged if r.diverges else "QEMU agrees with the model")
    return 1 if r.diverges else 0


def _hinting_pair(binary: str | None, ram_mib: int, bandwidth: int, *,
                  reporting: bool = False) -> tuple[MigrationPair, QemuBalloon, GuestOS, BalloonDriver]:
    pair = MigrationPair(binary, ram_mib=ram_mib, hints=True, bandwidth=bandwidth, reporting=reporting)
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


def _wait_for_round(pair: MigrationPair, dev: QemuBalloon, drv: BalloonDriver) -> FreePageHintDriver:
    hint = drv.hint
    assert hint is not None
    deadline = time.monotonic() + 30
    while hint.state is not DriverHintState.HINTING:
        if time.monotonic() > deadline or pair.status() in ("completed", "failed"):
            raise QemuError("QEMU never started a hinting round")
        _pump(dev, drv)
    return hint


def _publish(hint: FreePageHintDriver) -> None:
    """Publish and notify whatever the queue's suppression says: QEMU is to look now."""
    hint.vq.publish()
    assert hint.kick is not None  # the reference driver always gives its hint queue one
    hint.kick()


def _migrate_after(add: Callable[[FreePageHintDriver, int], None], n_pages: int, binary: str | None,
                   ram_mib: int = 64) -> tuple[list[bool], list[bytes]]:
    """Migrate with ``n_pages`` in-use pages P.. late in RAM (the bulk pass reaches them last), calling
    ``add(hint, P)`` to queue free_page_vq buffers as soon as a round is active. Returns, per page,
    whether it arrived intact, and the destination's bytes."""
    pair, dev, os_, drv = _hinting_pair(binary, ram_mib, bandwidth=16 << 20)
    try:
        first = (ram_mib << 20) // BALLOON_PAGE_SIZE - 64
        os_.pages.allocated |= range_mask(first, n_pages)  # in use: the driver never hints them
        payloads = [bytes(((i * 7 + p) & 0xFF) or 1 for i in range(BALLOON_PAGE_SIZE)) for p in range(n_pages)]
        data = b"".join(payloads)
        pair.src.qtest.cmd(f"write 0x{first * BALLOON_PAGE_SIZE:x} 0x{len(data):x} 0x{data.hex()}")
        pair.fill_noise(bits(os_.pages.free))  # every page costs bandwidth: a slow bulk pass
        pair.start()
        hint = _wait_for_round(pair, dev, drv)
        add(hint, first)
        _publish(hint)
        pair.finish(lambda: _pump(dev, drv))
        assert pair.dst is not None
        got = [pair.dst.mem.read((first + p) * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE) for p in range(n_pages)]
        return [g == w for g, w in zip(got, payloads)], got
    finally:
        pair.close()


def unaligned_hint(binary: str | None = None, *, offset: int = 2048) -> Reproduction:
    """PROP-FPH-9 (AMB-FPH-ALIGNMENT): a hint buffer ``[P * 4096 + offset, +4096)`` covers no whole page.

    The model treats no page as hinted, so pages P and P+1 arrive intact. A control hint of the whole
    page P+3, right after it in the same round, shows the round was live: P+3 must be skipped. A
    device that rounded the start down (``addr >> 12`` with ``len >> 12`` pages) would skip P.
    """
    def add(hint: FreePageHintDriver, p: int) -> None:
        hint.vq.add(writable=[(p * BALLOON_PAGE_SIZE + offset, BALLOON_PAGE_SIZE)])
        hint.vq.add(writable=[((p + 3) * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)])

    intact, got = _migrate_after(add, 4, binary)
    if intact[3]:
        raise QemuError("the control hint was not applied either (the round ended first); run again")
    observed = ("P and P+1 intact; the control page was skipped" if intact[0] and intact[1] else
                f"page {'P' if not intact[0] else 'P+1'} differs on the destination "
                f"(reads {got[0 if not intact[0] else 1][:4].hex()}...)")
    return Reproduction("unaligned-hint", "PROP-FPH-9",
                        f"hint [P + {offset:#x}, +0x1000) covers no whole page: P and P+1 arrive intact",
                        observed, not (intact[0] and intact[1]))


def hint_after_stop(binary: str | None = None) -> Reproduction:
    """PROP-FPH-6 (AMB-FPH-ROUND-END): a whole-page hint of P (the control), the driver's STOP, then a
    whole-page hint of P+1, in one kick. Pages after STOP are provided with STOP: P+1 must arrive
    intact, while P is skipped. QEMU leaves S_START on the driver's STOP and applies hints only in it."""
    def add(hint: FreePageHintDriver, p: int) -> None:
        hint.vq.add(writable=[(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)])
        hint.vq.add([(hint.stop_buf, 4)])
        hint.vq.add(writable=[((p + 1) * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)])

    intact, _ = _migrate_after(add, 2, binary)
    if intact[0]:
        raise QemuError("the control hint was not applied (the round ended first); run again")
    return Reproduction("hint-after-stop", "PROP-FPH-6", "the hint after the driver's STOP is ignored: P+1 "
                        "arrives intact (the control hint before STOP is skipped)",
                        "P+1 intact" if intact[1] else "P+1 was skipped: its destination page differs",
                        not intact[1])


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


def _used_lengths(mem: GuestMemory, used: int, count: int) -> list[int]:
    return [mem.read_u32(used + used_ring_entry(i) + 4) for i in range(count)]


def used_lengths(binary: str | None = None) -> Reproduction:
    """PROP-FPH-10 and PROP-FPR-2 (AMB-FPH-USED-LEN, AMB-REPORT-DIRECTION): the used length QEMU returns
    for a command-ID buffer, a hint buffer and a free page report. The model returns 0 for all three;
    the proposal makes 0 a MUST on free_page_vq and a SHOULD on reporting_vq."""
    pair, dev, os_, drv = _hinting_pair(binary, 64, bandwidth=4 << 20, reporting=True)
    try:
        pair.fill_noise(bits(os_.pages.free))
        pair.start()
        hint = _wait_for_round(pair, dev, drv)
        start = os_.pages.take_free_block(0)
        assert start is not None
        hint.vq.add(writable=[(start * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)])
        _publish(hint)
        drv.report()
        dev.run()
        fpv, rep = drv.vqs["free_page_vq"], drv.vqs["reporting_vq"]
        hint_lens = _used_lengths(dev.mem, fpv.addrs.used, dev.mem.read_u16(fpv.addrs.used + USED_IDX))
        report_lens = _used_lengths(dev.mem, rep.addrs.used, dev.mem.read_u16(rep.addrs.used + USED_IDX))
        pair.cancel()
        if len(hint_lens) < 2 or not report_lens:
            raise QemuError(f"QEMU used {len(hint_lens)} free_page_vq and {len(report_lens)} reporting_vq buffers")
        return Reproduction("used-lengths", "PROP-FPH-10",
                            "used length 0 for the command-ID buffer, the hint and the report",
                            f"free_page_vq: {hint_lens} (command ID, hint); reporting_vq: {report_lens} "
                            f"for a {drv.report_pages * BALLOON_PAGE_SIZE}-byte report",
                            any(hint_lens) or any(report_lens))
    finally:
        pair.close()


def reset_during_round(binary: str | None = None, *, attempts: int = 200, queue_size: int = 256,
                       seed: int = 0) -> Reproduction:
    """SPLIT-DEV-D3: reset the device while QEMU's iothread works on free_page_vq, set the queues up again
    and look at what QEMU does with the new free_page_vq.

    The model: after a reset the device consumes only buffers made available after it, so its used
    idx never passes the driver's avail idx. QEMU 7.2 and 10.0: while a round is active
    (``FREE_PAGE_HINT_S_START``), ``virtio_ballloon_get_free_page_hints`` polls free_page_vq in the
    iothread without the BQL; ``virtio_reset`` zeroes the queue's indices (``__virtio_queue_reset``)
    without taking ``free_page_lock``. A reset that lands inside ``virtqueue_pop`` leaves
    ``last_avail_idx`` one ahead of ``shadow_avail_idx``; from then on the queue never reads as empty
    and QEMU pops ring slots the driver never made available (its used idx runs ahead of the avail
    idx), or the iothread spins holding the lock and ``migrate_cancel`` never completes. Timing
    decides, so the reproducer tries up to ``attempts`` times (a 256-entry queue full of hints keeps
    the iothread busy long enough); it reports the first hit.
    """
    rng = random.Random(seed)
    factory = QemuFactory(binary)
    try:
        for attempt in range(1, attempts + 1):
            drv = BalloonDriver(queue_size=queue_size, hint_burst=queue_size - 1)
            phase = "the previous attempt (a new session)"
            try:
                dev = factory()
                os_ = GuestOS.over(dev.mem, reserved=RESERVED_PAGES)
                phase = "the round"
                if not drv.probe(dev, os_):
                    raise QemuError("the reference driver could not initialize the device")
                dev.hint_start()
                for _ in range(rng.randint(1, 4)):  # echo, then queue hints: the iothread pops them
                    irq = dev.take_interrupts()
                    drv.interrupt(irq.queues, irq.config)
                    drv.run()
                phase = "the reset"
                dev.write_status(0)
                drv.remove()
                if not drv.probe(dev, os_):
                    raise QemuError("the device refused the features after the reset")
                time.sleep(0.005)
                vq = drv.vqs["free_page_vq"]
                made = dev.mem.read_u16(vq.addrs.avail + AVAIL_IDX)
                st = dev.queue_status(drv.index_of["free_page_vq"])
                if st.get("last-avail-idx") != made:
                    return Reproduction(
                        "reset-during-round", "SPLIT-DEV-D3", RESET_EXPECTED,
                        f"attempt {attempt}: after the reset the driver made {made} buffer(s) available on "
                        f"free_page_vq; QEMU's queue reads last-avail-idx {st.get('last-avail-idx')}, "
                        f"shadow-avail-idx {st.get('shadow-avail-idx')}, used-idx {st.get('used-idx')}", True)
                phase = "the next round"
                dev.hint_start()
                for _ in range(3):
                    irq = dev.take_interrupts()
                    drv.interrupt(irq.queues, irq.config)
                    drv.run()
            except PeerSpecViolation as e:
                return Reproduction("reset-during-round", "SPLIT-DEV-D3", RESET_EXPECTED,
                                    f"attempt {attempt}, after {phase}: {e.req_id}: {e.detail}", True)
            except QemuError as e:
                return Reproduction("reset-during-round", "SPLIT-DEV-D3", RESET_EXPECTED,
                                    f"attempt {attempt}, after {phase}: QEMU wedged: {e}", True)
        return Reproduction("reset-during-round", "SPLIT-DEV-D3", RESET_EXPECTED,
                            f"no inconsistency in {attempts} attempts", False)
    finally:
        factory.close()


def notify_before_driver_ok(binary: str | None = None, *, attempts: int = 200, queue_size: int = 256,
                            seed: int = 0) -> Reproduction:
    """STATUS-DEV-1: reset the device while QEMU's iothread works on free_page_vq, set the queues up again,
    and before DRIVER_OK read the ISR.

    The model: a device sends no used buffer notification before DRIVER_OK (and a reset clears the ISR).
    QEMU: ``virtio_ballloon_get_free_page_hints`` pops hints under ``free_page_lock`` in the iothread and
    calls ``virtio_notify`` for free_page_vq *after* dropping it; the reset path
    (``virtio_balloon_device_reset``, then ``virtio_reset`` zeroing ``isr``) can run in between, so the
    old round's notification lands on the new device: ISR bit 0 (and INTx) while the driver is still
    setting the queues up, with every used idx at 0. Timing decides, so it tries up to ``attempts``
    times and reports the first hit.
    """
    rng = random.Random(seed)
    factory = QemuFactory(binary)
    seen: list[str] = []

    def look(drv: BalloonDriver) -> None:
        time.sleep(0.005)  # the iothread's notify trails its unlock
        irq = dev.take_interrupts()
        if irq.queues:
            used = {n: dev.mem.read_u16(q.addrs.used + USED_IDX) for n, q in drv.vqs.items()}
            seen.append(f"ISR bit 0 set before DRIVER_OK, used idx {used}")

    restarts = 0
    try:
        for attempt in range(1, attempts + 1):
            drv = BalloonDriver(queue_size=queue_size, hint_burst=queue_size - 1)
            dev = factory()
            os_ = GuestOS.over(dev.mem, reserved=RESERVED_PAGES)
            try:
                if not drv.probe(dev, os_):
                    raise QemuError("the reference driver could not initialize the device")
                dev.hint_start()
                for _ in range(rng.randint(1, 4)):  # echo, then queue hints: the iothread pops them
                    irq = dev.take_interrupts()
                    drv.interrupt(irq.queues, irq.config)
                    drv.run()
            except (PeerSpecViolation, QemuError):
                # An earlier reset met the SPLIT-DEV-D3 race (reset-during-round): a fresh QEMU goes on.
                factory.close()
                factory, restarts = QemuFactory(binary), restarts + 1
                continue
            dev.write_status(0)
            drv.remove()
            again = BalloonDriver(queue_size=queue_size, hint_burst=0, before_driver_ok=look)
            if not again.probe(dev, os_):
                raise QemuError("the device refused the features after the reset")
            if seen:
                return Reproduction("notify-before-driver-ok", "STATUS-DEV-1", NOTIFY_EXPECTED,
                                    f"attempt {attempt}: after a reset mid-round, {seen[0]}"
                                    + (f" ({restarts} fresh QEMU(s) after the reset-during-round race)"
                                       if restarts else ""), True)
        return Reproduction("notify-before-driver-ok", "STATUS-DEV-1", NOTIFY_EXPECTED,
                            f"no notification before DRIVER_OK in {attempts} attempts", False)
    finally:
        factory.close()


NOTIFY_EXPECTED = "after a reset, no used buffer notification (ISR bit 0) until the driver sets DRIVER_OK"

RESET_EXPECTED = ("after a reset mid-round the device consumes only buffers made available after it: "
                  "free_page_vq's last-avail-idx equals the driver's avail idx")

REPRODUCERS = {"unaligned-hint": unaligned_hint, "cmd-id-mid-round": cmd_id_mid_round,
               "used-lengths": used_lengths,
               "hint-after-stop": hint_after_stop,
               "reset-during-round": reset_during_round,
               "notify-before-driver-ok": notify_before_driver_ok}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m conformance.adapters.qemu.reproducers", description=__doc__.split("\n\n")[0])
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
