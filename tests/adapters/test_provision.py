"""Provisioning builds from Debian's registry: named, version-checked, cached, one-line errors."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from conformance import provision as P

needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None or shutil.which("dpkg") is None,
                               reason="provisioning needs apt-get and dpkg (Debian)")


def test_builds_cover_every_release_and_kind():
    assert {b.release for b in P.BUILDS.values()} == set(P.RELEASES)
    assert {"qemu:bookworm", "qemu:bookworm-backports", "qemu:trixie", "qemu:sid", "uml:bookworm", "uml:trixie",
            "uml:sid", "kernel:bookworm", "kernel:trixie", "kernel:sid"} <= set(P.BUILDS)


@pytest.mark.parametrize("name, kind, message", [
    ("qemu:hamm", None, "no build 'qemu:hamm': expected one of"),
    ("potato", P.Kind.QEMU, "no build 'potato': expected one of qemu:bookworm, qemu:bookworm-backports"),
    ("uml:bookworm-backports", None, "no build 'uml:bookworm-backports'"),
    ("uml:sid", P.Kind.QEMU, "'uml:sid' is a uml build, not a qemu build"),
])
def test_a_bad_name_is_one_line_naming_what_exists(name, kind, message):
    with pytest.raises(P.ProvisionError) as e:
        P.resolve(name, kind)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_binary_that_does_not_start_names_the_build(tmp_path):
    build = P.resolve("qemu:sid")
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho 'error while loading shared libraries: libc.so.6' >&2\nexit 127\n")
    fake.chmod(0o755)
    with pytest.raises(P.ProvisionError) as e:
        P._version(build, fake)
    assert str(e.value).startswith("qemu:sid: ") and "does not start here" in str(e.value)
    assert "libc.so.6" in str(e.value)


@needs_apt
def test_an_unreachable_registry_is_one_line_naming_the_build(tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTIO_CONFORMANCE_CACHE", str(tmp_path))
    monkeypatch.setenv("VIRTIO_CONFORMANCE_MIRROR", "http://127.0.0.1:9/debian")
    with pytest.raises(P.ProvisionError) as e:
        P.provision("qemu:bookworm-backports")
    assert str(e.value).startswith("qemu:bookworm-backports: apt-get update for bookworm-backports failed")
    assert not any((tmp_path / "builds").glob("qemu-*")), "a failed fetch leaves nothing behind"


@needs_apt
def test_a_newer_releases_qemu_runs_here_and_is_reused(tmp_path, monkeypatch):
    """sid's QEMU needs a newer C library than the host's: it runs through the unpacked root's loader."""
    cache = os.environ.get("VIRTIO_CONFORMANCE_CACHE")
    if cache is None:  # share the user's cache: a second run starts at once
        monkeypatch.setenv("VIRTIO_CONFORMANCE_CACHE", str(Path.home() / ".cache" / "virtio-conformance"))
    got = P.provision("qemu:sid")
    assert got.version.startswith("11.") and got.binary.name == "qemu-system-x86_64"
    start = time.perf_counter()
    again = P.provision("qemu:sid")
    assert again == got and time.perf_counter() - start < 5, "the cached build is reused"


@needs_apt
def test_a_newer_releases_uml_runs_here(monkeypatch):
    if os.environ.get("VIRTIO_CONFORMANCE_CACHE") is None:
        monkeypatch.setenv("VIRTIO_CONFORMANCE_CACHE", str(Path.home() / ".cache" / "virtio-conformance"))
    if shutil.which("patchelf") is None:
        pytest.skip("patchelf is installed by tools/test")
    got = P.provision("uml:sid")
    assert got.version.startswith("7.") and got.modules is not None
    assert any(got.modules.glob(f"{got.version}/**/virtio_balloon.ko*"))


def test_the_command_line_lists_builds(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTIO_CONFORMANCE_CACHE", str(tmp_path))
    assert P.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "qemu:sid" in out and "not fetched" in out
    assert P.main(["qemu:nosuch"]) == 1
    assert "provision: no build 'qemu:nosuch'" in capsys.readouterr().err
