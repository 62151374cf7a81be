"""Builds of QEMU, User-Mode Linux and Linux's cloud kernel from Debian's registry, on demand.

A build is named by kind and release (``qemu:sid``, ``uml:trixie``, ``kernel:bookworm``), or by the
release alone where the kind is clear from the flag (``--qemu trixie``). It is fetched into the cache
with a temporary apt configuration (the system's sources and state are never touched), unpacked with
``dpkg -x`` (nothing is installed, no maintainer script runs), checked by the version the binary
prints, and reused by later runs.

Newer releases need a newer C library than the host's. Their binaries run through the unpacked root's
own loader: QEMU through a small wrapper script (``ld.so --library-path ROOT/... qemu -L ROOT/...``);
UML through a copy whose interpreter and rpath ``patchelf`` points into the root, because UML sizes
its memory from its own load address and cannot start through the loader.

``python -m conformance.provision qemu:sid`` prints the path of a ready binary; ``--list`` shows the
builds. Every failure is a :class:`ProvisionError`: one line naming the build.
"""

from __future__ import annotations

import argparse
import enum
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs

#: Debian's keyring, which the registry's Release files are signed with.
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class ProvisionError(RuntimeError):
    """A build could not be fetched, unpacked or started (one line naming the build)."""


class Kind(enum.Enum):
    QEMU = "qemu"
    UML = "uml"
    KERNEL = "kernel"


@attrs.frozen
class Release:
    name: str
    #: The host's own libraries suffice (bookworm and its backports): no loader, no patchelf.
    host_abi: bool
    #: sid's Release file is past its Valid-Until date on the registry this project reaches.
    check_valid_until: bool = True


RELEASES: dict[str, Release] = {r.name: r for r in (
    Release("bookworm", host_abi=True),
    Release("bookworm-backports", host_abi=True),
    Release("trixie", host_abi=False),
    Release("sid", host_abi=False, check_valid_until=False),
)}


@attrs.frozen
class Build:
    kind: Kind
    release: str
    #: What apt fetches: the package whose binary we want, and whether its dependency closure comes too.
    package: str
    closure: bool
    #: What ``--version`` must print (a regex), so a wrong or broken binary is caught at once.
    version_re: str

    @property
    def name(self) -> str:
        return f"{self.kind.value}:{self.release}"


def _builds() -> dict[str, Build]:
    out = {}
    for rel in RELEASES.values():
        out[f"qemu:{rel.name}"] = Build(Kind.QEMU, rel.name, "qemu-system-x86", not rel.host_abi,
                                        r"QEMU emulator version (\S+)")
        out[f"kernel:{rel.name}"] = Build(Kind.KERNEL, rel.name, "linux-image-cloud-amd64", False, r"(\S+)")
        if rel.name != "bookworm-backports":  # backports carries no user-mode-linux
            out[f"uml:{rel.name}"] = Build(Kind.UML, rel.name, "user-mode-linux", not rel.host_abi, r"^(\S+)$")
    return out


BUILDS = _builds()


@attrs.frozen
class Provisioned:
    """A ready build: run ``binary``; for QEMU pass nothing else (the wrapper adds ``-L``)."""

    build: Build
    version: str
    binary: Path
    #: UML: the modules tree (``<dir>/<release>/kernel/...``); kernel: the image and its modules root.
    modules: Path | None = None
    kernel: Path | None = None


def cache_root() -> Path:
    base = os.environ.get("VIRTIO_CONFORMANCE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "virtio-conformance")
    return Path(base) / "builds"


def resolve(name: str, kind: Kind | None = None) -> Build:
    """``qemu:sid``, or ``sid`` with ``kind`` given; a one-line error lists what exists."""
    key = name if ":" in name or kind is None else f"{kind.value}:{name}"
    if key not in BUILDS:
        known = ", ".join(sorted(b for b in BUILDS if kind is None or b.startswith(kind.value + ":")))
        raise ProvisionError(f"no build {name!r}: expected one of {known}")
    build = BUILDS[key]
    if kind is not None and build.kind is not kind:
        raise ProvisionError(f"{name!r} is a {build.kind.value} build, not a {kind.value} build")
    return build


# -- apt, with a configuration of our own ---------------------------------------------------------------------
def _mirror() -> str:
    """The system's Debian mirror (read, never changed), or ``VIRTIO_CONFORMANCE_MIRROR``."""
    if os.environ.get("VIRTIO_CONFORMANCE_MIRROR"):
        return os.environ["VIRTIO_CONFORMANCE_MIRROR"]
    try:
        text = Path("/etc/apt/sources.list.d/debian.sources").read_text()
    except OSError:
        return DEFAULT_MIRROR
    m = re.search(r"^URIs:\s*(\S+)", text, re.M)
    return m.group(1) if m else DEFAULT_MIRROR


class _Apt:
    """apt-get/apt-cache over one release, with lists, cache and an empty dpkg status in ``work``."""

    def __init__(self, build: Build, work: Path) -> None:
        self.build, self.work = build, work
        for d in ("lists/partial", "cache/archives/partial"):
            (work / d).mkdir(parents=True, exist_ok=True)
        (work / "status").touch()
        (work / "sources.list").write_text(f"deb [signed-by={KEYRING}] {_mirror()} {build.release} main\n")
        rel = RELEASES[build.release]
        self.opts = [
            "-o", f"Dir::Etc::SourceList={work / 'sources.list'}", "-o", "Dir::Etc::SourceParts=-",
            "-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}",
            # An empty status: resolve the whole closure as if nothing were installed.
            "-o", f"Dir::State::status={work / 'status'}", "-o", "Dir::Etc::Preferences=/dev/null",
            "-o", "Dir::Etc::PreferencesParts=-", "-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1",
            "-o", "APT::Architectures::=amd64",
            *(() if rel.check_valid_until else ("-o", "Acquire::Check-Valid-Until=false")),
        ]

    def run(self, tool: str, *args: str, what: str) -> str:
        try:
            r = subprocess.run([tool, "-q", *self.opts, *args], cwd=self.work, capture_output=True, text=True,
                               timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ProvisionError(f"{self.build.name}: {what} failed: {e}") from None
        if r.returncode:
            last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or [""]
            raise ProvisionError(f"{self.build.name}: {what} failed: {last[0]}")
        return r.stdout + r.stderr

    def _kernel_parts(self, meta: str) -> list[str]:
        """The image package a kernel metapackage names, and the binary and modules packages it is split
        into since Debian 14 (``linux-binary-*``, ``linux-modules-*``); the rest (initramfs tools) is
        not needed to boot it under QEMU with our own initramfs."""
        wanted = ("linux-image-", "linux-binary-", "linux-modules-")
        out: list[str] = []
        todo = [meta]
        while todo:
            pkg = todo.pop()
            dep = self.run("apt-cache", "depends", pkg, what=f"apt-cache depends {pkg}")
            for ln in dep.splitlines():
                name = ln.split()[-1]
                if "Depends:" in ln and name.startswith(wanted) and name not in out:
                    out.append(name)
                    todo.append(name)
        if not out:
            raise ProvisionError(f"{self.build.name}: {meta} names no kernel image")
        return out

    def debs(self) -> list[Path]:
        """Fetch the build's package (and its closure if needed); return the .deb files."""
        out = self.run("apt-get", "update", what=f"apt-get update for {self.build.release}")
        if not any((self.work / "lists").glob("*_Packages*")):  # apt-get update exits 0 when a fetch fails
            err = next((ln for ln in out.splitlines() if ln.startswith(("Err:", "W:", "E:"))), "no package lists")
            raise ProvisionError(f"{self.build.name}: apt-get update for {self.build.release} failed: "
                                 f"{err.strip()}")
        package = self.build.package
        if self.build.kind is Kind.KERNEL:
            parts = self._kernel_parts(package)
            self.run("apt-get", "download", *parts, what=f"downloading {' '.join(parts)}")
            return sorted(self.work.glob("*.deb"))
        if self.build.closure:
            self.run("apt-get", "install", "-y", "--download-only", "--no-install-recommends", package,
                     what=f"downloading {package} and its dependencies")
            return sorted((self.work / "cache" / "archives").glob("*.deb"))
        extra = ("qemu-system-common", "qemu-system-data") if self.build.kind is Kind.QEMU else ()
        if self.build.kind is Kind.UML:
            extra = ()
        self.run("apt-get", "download", package, *extra, what=f"downloading {package}")
        return sorted(self.work.glob("*.deb"))


# -- unpacking and making the binary start ---------------------------------------------------------------------
def _loader(root: Path) -> tuple[Path, str]:
    for cand in ("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"):
        if (root / cand).exists():
            libs = f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu"
            return root / cand, libs
    raise ProvisionError(f"{root}: the unpacked root has no ld-linux-x86-64.so.2")


def _finish_qemu(build: Build, root: Path, dest: Path) -> Path:
    qemu = root / "usr/bin/qemu-system-x86_64"
    if not qemu.exists():
        raise ProvisionError(f"{build.name}: the packages hold no qemu-system-x86_64")
    wrapper = dest / "qemu-system-x86_64"
    if RELEASES[build.release].host_abi:
        body = f'exec "{qemu}" -L "{root}/usr/share/qemu" "$@"\n'
    else:
        ld, libs = _loader(root)
        body = f'exec "{ld}" --library-path "{libs}" "{qemu}" -L "{root}/usr/share/qemu" "$@"\n'
    wrapper.write_text(f"#!/bin/sh\n# {build.name}, unpacked from Debian's packages by conformance.provision\n"
                       + body)
    wrapper.chmod(0o755)
    return wrapper


def _finish_uml(build: Build, root: Path, dest: Path) -> Path:
    uml = root / "usr/bin/linux.uml"
    if not uml.exists():
        raise ProvisionError(f"{build.name}: the packages hold no linux.uml")
    out = dest / "linux.uml"
    shutil.copy2(uml, out)
    if not RELEASES[build.release].host_abi:
        patchelf = shutil.which("patchelf")
        if patchelf is None:
            raise ProvisionError(f"{build.name}: patchelf is needed to start this UML (apt-get install patchelf)")
        ld, libs = _loader(root)
        r = subprocess.run([patchelf, "--set-interpreter", str(ld), "--set-rpath", libs, str(out)],
                           capture_output=True, text=True)
        if r.returncode:
            raise ProvisionError(f"{build.name}: patchelf failed: {r.stderr.strip()}")
    modules = root / "usr/lib/uml/modules"
    if modules.is_dir():
        (dest / "modules").symlink_to(modules)
    return out


def _finish_kernel(build: Build, root: Path, dest: Path) -> Path:
    # /boot/vmlinuz-VERSION up to Debian 13; /usr/lib/modules/VERSION/vmlinuz since the split packages.
    images = sorted((root / "boot").glob("vmlinuz-*")) or sorted((root / "usr/lib/modules").glob("*/vmlinuz"))
    if not images:
        raise ProvisionError(f"{build.name}: the packages hold no vmlinuz")
    image = images[-1]
    version = image.name.removeprefix("vmlinuz-") if image.name != "vmlinuz" else image.parent.name
    (dest / "vmlinuz").symlink_to(image)
    modules = next((m for m in (root / "lib/modules", root / "usr/lib/modules") if (m / version).is_dir()), None)
    if modules is None:
        raise ProvisionError(f"{build.name}: no modules for kernel {version}")
    (dest / "modules").symlink_to(modules)
    (dest / "release").write_text(version + "\n")
    return dest / "vmlinuz"


def _version(build: Build, binary: Path) -> str:
    if build.kind is Kind.KERNEL:
        return (binary.parent / "release").read_text().strip()
    try:
        r = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ProvisionError(f"{build.name}: {binary} does not start here: {e}") from None
    text = r.stdout.strip()
    lines = text.splitlines()
    probe = lines[-1] if build.kind is Kind.UML and lines else text
    m = re.search(build.version_re, probe, re.M)
    if r.returncode or not m:
        detail = (r.stderr.strip() or text).splitlines()[-1:] or ["no output"]
        raise ProvisionError(f"{build.name}: {binary} does not start here: {detail[0]}")
    return m.group(1)


_FINISH = {Kind.QEMU: _finish_qemu, Kind.UML: _finish_uml, Kind.KERNEL: _finish_kernel}
_BINARY = {Kind.QEMU: "qemu-system-x86_64", Kind.UML: "linux.uml", Kind.KERNEL: "vmlinuz"}


def _ready(build: Build, dest: Path) -> Provisioned:
    binary = dest / _BINARY[build.kind]
    version = _version(build, binary)
    modules = dest / "modules" if (dest / "modules").exists() else None
    return Provisioned(build, version, binary, modules=modules,
                       kernel=binary if build.kind is Kind.KERNEL else None)


def provision(name: str, kind: Kind | None = None, *, progress=lambda s: None) -> Provisioned:
    """The build named ``name``, fetched into the cache on first use."""
    build = resolve(name, kind)
    dest = cache_root() / build.name.replace(":", "-")
    if (dest / ".complete").exists():
        try:
            return _ready(build, dest)
        except ProvisionError:
            shutil.rmtree(dest, ignore_errors=True)  # a broken cache entry is fetched again
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{build.name.replace(':', '-')}-", dir=dest.parent))
    stage = Path(tempfile.mkdtemp(prefix=f".{build.name.replace(':', '-')}-stage-", dir=dest.parent))
    try:
        progress(f"{build.name}: fetching {build.package} from Debian {build.release}")
        debs = _Apt(build, work).debs()
        root = stage / "root"
        root.mkdir()
        for deb in debs:
            r = subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True, text=True)
            if r.returncode:
                raise ProvisionError(f"{build.name}: dpkg -x {deb.name} failed: {r.stderr.strip()}")
        # Paths inside wrappers name the final location, so finish after the move.
        shutil.rmtree(dest, ignore_errors=True)
        stage.rename(dest)
        _FINISH[build.kind](build, dest / "root", dest)
        ready = _ready(build, dest)
        (dest / ".complete").write_text(f"{ready.version}\n")
        return ready
    except ProvisionError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance.provision", description=__doc__.splitlines()[0])
    p.add_argument("build", nargs="*", help="kind:release, e.g. qemu:sid uml:trixie kernel:bookworm")
    p.add_argument("--list", action="store_true", help="list the builds and which are cached")
    args = p.parse_args(argv)
    if args.list or not args.build:
        for name, build in sorted(BUILDS.items()):
            done = cache_root() / name.replace(":", "-") / ".complete"
            state = f"cached ({done.read_text().strip()})" if done.exists() else "not fetched"
            print(f"{name:26} {build.package:26} {state}")
        return 0
    status = 0
    for name in args.build:
        try:
            print(provision(name, progress=lambda s: print(s, file=sys.stderr)).binary)
        except ProvisionError as e:
            print(f"provision: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
