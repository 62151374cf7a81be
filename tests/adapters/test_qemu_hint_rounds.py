"""QEMU hint rounds are migrations: a round the device machine starts must stay open until it ends it.

Once a non-replaying BAL-FPH-D1 failure on 7.2, "hint_start published command ID 1": the migration behind
the round (1 MiB/s then) finished its first pass over the mostly-zero guest in about 0.2 s, found nothing
dirty and completed, so QEMU published DONE on its own; a harness turn stalled that long between the
adapter seeing the new ID and the machine's read saw DONE. QEMU was right to publish DONE (its migration
had ended); the harness had promised a round it could not hold.
"""

import os
import shutil
import time

import pytest

from conformance.adapters.qemu.device import QemuFactory

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None and not os.getenv("CI"),
                                reason="qemu-system-x86_64 is not installed (tools/test installs it)")

CFG_CMD_ID = 8
#: Longer than the 0.2 s in which a 1 MiB/s migration used to complete with an idle device.
STALL = 0.6


def test_a_hint_round_outlives_a_stalled_turn_until_hint_done():
    """An idle driver (it echoes nothing), then a harness turn that takes STALL seconds: the field still
    reads the round's ID and the migration is still running; hint_done then publishes DONE."""
    from refmodel.balloon.driver import BalloonDriver
    from refmodel.system.guest_os import GuestOS

    factory = QemuFactory()
    try:
        dev = factory()
        os_ = GuestOS.over(dev.mem, reserved=dev.reserved_pages)
        assert BalloonDriver(hint_burst=0, queue_size=16).probe(dev, os_)
        for _ in range(2):  # the second round starts from the first one's DONE
            cid = dev.hint_start()
            assert cid >= 2
            time.sleep(STALL)
            assert (dev.read_config(CFG_CMD_ID, 4), dev._migration_status()) == (cid, "active")
            dev.hint_done()
            assert dev.read_config(CFG_CMD_ID, 4) == 1
    finally:
        factory.close()
