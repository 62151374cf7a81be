"""Loader targets: the requirement catalogue (``spec.catalogue.load``) and the known-deviations list
(``conformance.cli.load_known_deviations``, then applied to a few builds' versions) on arbitrary file
bytes, written to a file each time as a user's would be. Allowed: ``CatalogueError`` and ``DutError``,
one line naming file and field."""

from __future__ import annotations

import os
from collections.abc import Callable

from conformance.cli import load_known_deviations
from conformance.registry import DutError
from spec.catalogue import CatalogueError, load

from fuzz.harness import guarded_target

# One memfd per process, named through /proc: truncating a file on an overlay file system costs
# milliseconds, and nothing is left behind however the process ends.
_FD = os.memfd_create("virtio-fuzz-input", os.MFD_CLOEXEC)
_PATH = f"/proc/self/fd/{_FD}"


def _file(data: bytes) -> str:
    os.ftruncate(_FD, 0)
    os.pwrite(_FD, data, 0)
    return _PATH


def catalogue(data: bytes) -> None:
    load(_file(data))


#: Builds a parsed list is applied to, so the fuzzer reaches the scope conditions' matching too.
VERSIONS = ("QEMU 7.2.22 Debian 1:7.2+dfsg-7+deb12u18+b3", "QEMU 11.1.3 Debian 1:11.1.3+ds-1",
            "Linux 6.12.117+deb13-cloud-amd64 virtio_balloon (under QEMU 11.1.3 TCG)", "the reference device")


def known_deviations(data: bytes) -> None:
    known = load_known_deviations(_file(data))
    for versions in VERSIONS:
        known.applying(versions)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "catalogue": guarded_target(catalogue, (CatalogueError,)),
    "known_deviations": guarded_target(known_deviations, (DutError,)),
}
