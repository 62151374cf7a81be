"""The Linux route on hosts where a UML build cannot run: one clear line, and a build that boots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conformance.adapters.linux import adapter as A
from conformance.adapters.linux.guest import GuestError, UML_BINARY, early_death, kernel_release

needs_uml = pytest.mark.skipif(not os.access(UML_BINARY, os.X_OK), reason="tools/test installs user-mode-linux")

#: What Debian 12's UML 6.1 prints on a host where it kills init (an Intel Xeon with AVX-512, host 6.18).
PANIC = """Linux version 6.1.176 (debian-kernel@lists.debian.org)
Run /init as init process
fatal_sigsegv in userspace
Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b
"""


def test_the_panic_is_named_in_one_line():
    cause = early_death(PANIC)
    assert cause is not None and "\n" not in cause
    assert cause.startswith("init died at once (SIGSEGV, exitcode 0x0000000b)") and "--uml-binary sid" in cause


@pytest.mark.parametrize("console, expected", [
    ("Kernel panic - not syncing: VFS: Unable to mount root fs\n", "the guest kernel panicked: VFS: Unable"),
    ("Too few physical memory! Needed=1, given=0\n", "UML could not size its memory"),
    ("Linux version 6.1\nsome noise\n", None),
])
def test_other_early_deaths(console, expected):
    cause = early_death(console)
    assert (cause is None) if expected is None else cause.startswith(expected)


def _crashing_uml(tmp_path: Path) -> str:
    """A stand-in for a UML build that boots and then kills init: the real kernel's --version (so the
    real modules are found), then the panic on the console."""
    release = kernel_release(UML_BINARY)
    fake = tmp_path / "linux.uml"
    text = PANIC.replace("\n", "\\n")
    fake.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then echo {release}; exit 0; fi\n'
                    f'printf "{text}"\nexit 1\n')
    fake.chmod(0o755)
    return str(fake)


@needs_uml
def test_a_build_that_kills_init_is_one_line_not_a_console_dump(tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTIO_CONFORMANCE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(GuestError) as e:
        A.LinuxFactory(_crashing_uml(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "the guest died before its agent answered: init died at once (SIGSEGV" in msg


@needs_uml
def test_without_a_named_build_the_first_that_boots_is_used(tmp_path, monkeypatch):
    """On a host where the system's UML kills init, the default run uses a build that boots."""
    monkeypatch.setenv("VIRTIO_CONFORMANCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(A, "UML_BINARY", _crashing_uml(tmp_path))
    monkeypatch.setattr(A.LinuxFactory, "FALLBACK_BUILDS", (UML_BINARY,))  # the real one stands in for sid
    f = A.LinuxFactory()
    assert f.uml == UML_BINARY
    assert "init died at once (SIGSEGV" in f.note and f.note.endswith(f"using {UML_BINARY}")


@needs_uml
def test_the_probe_is_cached_per_binary_and_host(tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTIO_CONFORMANCE_CACHE", str(tmp_path / "cache"))
    assert A.boot_probe(UML_BINARY) is None
    marks = list((tmp_path / "cache" / "uml-probe").iterdir())
    assert len(marks) == 1 and marks[0].read_text() == ""
    monkeypatch.setattr(A, "LinuxDriver", None)  # a second probe must not boot anything
    assert A.boot_probe(UML_BINARY) is None


def test_no_build_that_boots_is_one_line(tmp_path, monkeypatch):
    if shutil.which("sh") is None:
        pytest.skip("needs a shell")
    monkeypatch.setattr(A, "UML_BINARY", str(tmp_path / "missing-linux.uml"))
    monkeypatch.setattr(A.LinuxFactory, "FALLBACK_BUILDS", ("potato",))
    with pytest.raises(GuestError) as e:
        A.LinuxFactory()
    assert str(e.value).startswith("no User-Mode Linux boots on this host: potato: no build 'potato'")
