"""CoreWaits: the time a guest (or the suite) spent runnable but waiting for a core, from schedstat."""

import os
import subprocess
import sys
import time

import pytest

from conformance.adapters.linux.core_waits import CoreWaits

pytestmark = pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/schedstat"), reason="no schedstat")

BUSY = "import os, time\nos.sched_setaffinity(0, {%d})\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"


def test_a_group_sharing_one_core_with_us_is_seen_waiting():
    cpu = min(os.sched_getaffinity(0))
    child = subprocess.Popen([sys.executable, "-c", BUSY % cpu], start_new_session=True)
    mine = os.sched_getaffinity(0)
    try:
        time.sleep(0.3)  # the child is on its core
        waits = CoreWaits(child.pid)
        os.sched_setaffinity(0, {cpu})
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass
        os.sched_setaffinity(0, mine)
        waited = waits.seconds()
    finally:
        os.sched_setaffinity(0, mine)
        child.kill()
        child.wait()
    # Two busy threads on one core for 1 s: each waits about half of it; never more than the time between looks.
    assert 0.2 < waited <= 1.2, waited


def test_a_group_that_is_gone_waits_nothing_more():
    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    child.wait()
    waits = CoreWaits(child.pid)
    time.sleep(0.1)
    assert waits.seconds() < 0.1
