"""Loader targets: the requirement catalogue (``spec.catalogue.load``) and the known-deviations list
(``conformance.cli.load_known_deviations``) on arbitrary file bytes, written to a file each time as a
user's would be. Allowed: ``CatalogueError`` and ``DutError``, one line naming file and field."""

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


def known_deviations(data: bytes) -> None:
    load_known_deviations(_file(data))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "catalogue": guarded_target(catalogue, (CatalogueError,)),
    "known_deviations": guarded_target(known_deviations, (DutError,)),
}
