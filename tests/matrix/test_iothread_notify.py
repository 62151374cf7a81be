"""QEMU's iothread notifications under MSI-X, by release: after 10.0 QEMU drops the used buffer notifications
of free_page_vq and the configuration change notification of an error found there (known deviations
PACKED-DEV-D10, SPLIT-DEV-10/12, STATUS-DEV-3); 10.0.2 sends them. Needs the provisioned builds, so it runs
with the matrix (``tools/matrix -k iothread``), not in the default test run.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("VIRTIO_MATRIX") != "1",
                                reason="the matrix runs with tools/matrix")

NAMES = ("hint-use-not-notified", "hint-use-not-notified-split", "hint-error-not-notified",
         "hint-error-not-notified-split")


@pytest.mark.verifies("PACKED-DEV-D10", "SPLIT-DEV-12", "STATUS-DEV-3")
@pytest.mark.parametrize("release, diverges", [("bookworm-backports", False), ("sid", True)])
@pytest.mark.parametrize("name", NAMES)
def test_iothread_notifications_by_release(release, diverges, name):
    from conformance.adapters.qemu.packed_reproducers import REPRODUCERS
    from conformance.provision import Kind, provision

    r = REPRODUCERS[name](str(provision(release, Kind.QEMU).binary))
    assert r.diverges is diverges, r
    control = "inflateq (main loop): used and notified" if name.startswith("hint-use") else \
        "control (balloon target, main loop): notified"
    assert r.observed.startswith(control), r  # the main loop's notifications arrive on every release
