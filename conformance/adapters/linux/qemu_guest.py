"""A real Linux guest for QEMU (TCG): Debian's cloud kernel and an initramfs with busybox and the
virtio modules, built at run time into the cache (nothing binary is committed).

The kernel package is fetched with ``apt-get download`` and unpacked, not installed. The guest's
``/init`` loads ``virtio_balloon``, keeps ``KEEP`` MiB of non-zero data in a tmpfs, writes and frees
``FILL`` MiB more (so free memory is non-zero and a migration must send it unless told otherwise),
then prints ``MemFree`` on the serial console every ``TICK`` seconds.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from conformance.adapters.linux.guest import BUSYBOX, GuestError, cache_dir

KERNEL_PACKAGE = "linux-image-cloud-amd64"
MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
           "virtio_balloon")

INIT = r"""#!/bin/sh
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o size=95% tmpfs /w
for m in MODULES; do insmod /lib/$m.ko || echo "@@ERROR insmod $m"; done
head -c 1048576 /dev/urandom > /w/chunk
i=0; while [ $i -lt ${KEEP:-0} ]; do cat /w/chunk; i=$((i+1)); done > /w/keep
i=0; while [ $i -lt ${FILL:-0} ]; do cat /w/chunk; i=$((i+1)); done > /w/fill
rm /w/fill
echo "@@READY"
while :; do
  while read -r k v u; do [ "$k" = MemFree: ] && echo "@@FREE $(cat /proc/uptime) $v"; done </proc/meminfo
  sleep ${TICK:-0.2}
done
""".replace("MODULES", " ".join(MODULES))


def _kernel_package() -> tuple[str, str]:
    """(package, version) of the newest cloud kernel apt knows."""
    dep = subprocess.run(["apt-cache", "depends", KERNEL_PACKAGE], capture_output=True, text=True)
    names = [line.split()[-1] for line in dep.stdout.splitlines() if "Depends:" in line and "linux-image-" in line]
    if not names:
        raise GuestError(f"apt-cache knows no {KERNEL_PACKAGE} (run apt-get update)")
    show = subprocess.run(["apt-cache", "show", "--no-all-versions", names[0]], capture_output=True, text=True)
    version = next((line.split(None, 1)[1] for line in show.stdout.splitlines() if line.startswith("Version:")), "")
    return names[0], version


def _download(package: str, workdir: Path) -> Path:
    r = subprocess.run(["apt-get", "download", package], cwd=workdir, capture_output=True, text=True)
    debs = list(workdir.glob("*.deb"))
    if r.returncode or not debs:
        raise GuestError(f"apt-get download {package} failed: {r.stderr.strip()[-300:]}")
    return debs[0]


def _cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc archive of (path, mode, data, rdev) entries; no root privileges needed for device nodes."""
    out = bytearray()
    for ino, (path, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], start=1):
        name = path.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(name), 0]
        out += b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + name
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build() -> tuple[Path, Path, str]:
    """(kernel, initrd, kernel version), cached by kernel package and init script."""
    if not os.access(BUSYBOX, os.X_OK):
        raise GuestError(f"{BUSYBOX} not found: install Debian's busybox-static")
    root = cache_dir() / "qemu-guest"
    root.mkdir(parents=True, exist_ok=True)
    package, pkg_version = _kernel_package()
    key = hashlib.sha256(f"{package} {pkg_version}".encode() + INIT.encode()
                         + Path(BUSYBOX).read_bytes()).hexdigest()[:16]
    done = root / key
    if (done / "initrd").exists():
        kernel = next(done.glob("vmlinuz-*"))
        return kernel, done / "initrd", kernel.name[len("vmlinuz-"):]
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        deb = _download(package, tmp)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
        kernels = glob.glob(str(tmp / "x" / "boot" / "vmlinuz-*"))
        if not kernels:
            raise GuestError(f"{deb.name} holds no vmlinuz")
        version = Path(kernels[0]).name[len("vmlinuz-"):]
        mods = {Path(p).stem: Path(p) for p in glob.glob(str(tmp / "x" / "lib" / "modules" / version / "**" / "*.ko"),
                                                         recursive=True)}
        missing = [m for m in MODULES if m not in mods]
        if missing:
            raise GuestError(f"{deb.name} lacks modules {missing} (compressed modules are not supported)")
        entries: list[tuple[str, int, bytes, int]] = [
            (d, stat.S_IFDIR | 0o755, b"", 0) for d in ("bin", "dev", "proc", "sys", "w", "lib")]
        entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5 << 8) | 1))
        entries.append(("bin/busybox", stat.S_IFREG | 0o755, Path(BUSYBOX).read_bytes(), 0))
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
        entries += [(f"bin/{a}", stat.S_IFLNK | 0o777, b"busybox", 0) for a in applets if a != "busybox"]
        entries += [(f"lib/{m}.ko", stat.S_IFREG | 0o644, mods[m].read_bytes(), 0) for m in MODULES]
        entries.append(("init", stat.S_IFREG | 0o755, INIT.encode(), 0))
        staging = Path(tempfile.mkdtemp(prefix=".stage-", dir=root))
        shutil.copy2(kernels[0], staging / Path(kernels[0]).name)
        (staging / "initrd").write_bytes(_cpio_newc(entries))
        try:
            staging.rename(done)
        except OSError:  # built by a concurrent run
            shutil.rmtree(staging, ignore_errors=True)
        return done / Path(kernels[0]).name, done / "initrd", version
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
