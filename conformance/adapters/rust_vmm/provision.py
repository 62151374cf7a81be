"""Fetch Debian's packaged virtio-queue and its Rust dependencies, and build the shim against them.

One build per virtio-queue version, each from one Debian release (:data:`RELEASES`). The system's apt
configuration is left alone: a temporary one (its own sources list, lists, cache and empty parts
directories) points at the system's Debian mirror, ``apt-cache depends --recurse`` resolves the
closure of ``librust-virtio-queue-dev`` from the packages' ``Depends:``, ``apt-get download`` fetches
it and ``dpkg -x`` unpacks it. Debian's crates (``usr/share/cargo/registry/<crate>-<version>/``, each
with a ``.cargo-checksum.json``) are a cargo directory source; ``cargo build --release --offline``
builds ``shim/`` with the two crates pinned to the release's exact versions.

Everything lands in ``${XDG_CACHE_HOME:-~/.cache}/virtio-conformance/rust-vmm/<release>/``, with a
stamp per step: once built, :func:`shim_library` returns at once. A step that fails is one line of
:class:`ProvisionError` naming the build (:class:`RegistryUnreachable` when the mirror cannot be read).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import attrs

SHIM = Path(__file__).with_name("shim")
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGE = "librust-virtio-queue-dev"
LIB_NAME = "libvirtio_queue_shim.so"
#: Seconds per step: the mirror answers in seconds, a cold cargo build of 14 crates in under a minute.
APT_TIMEOUT, CARGO_TIMEOUT = 300, 900


@attrs.frozen
class Release:
    """A virtio-queue version and the Debian release that packages it."""

    version: str  # the factory's name for it: "0.18"
    suite: str
    crate: str  # the exact version pinned in the build
    check_valid_until: bool = True  # sid's Release file is past its Valid-Until date

    @property
    def name(self) -> str:
        return f"rust-vmm virtio-queue {self.crate} (Debian {self.suite})"


RELEASES = {
    "0.14": Release("0.14", "trixie", "0.14.0"),
    "0.18": Release("0.18", "sid", "0.18.0", check_valid_until=False),
}


class ProvisionError(RuntimeError):
    """A step of fetching or building a release failed (one line, naming the build)."""


class RegistryUnreachable(ProvisionError):
    """The Debian mirror could not be read."""


def release(version: str) -> Release:
    try:
        return RELEASES[version]
    except KeyError:
        raise ProvisionError(f"rust-vmm virtio-queue {version!r}: expected one of {', '.join(RELEASES)}") from None


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "virtio-conformance" / "rust-vmm"


def mirror(sources: Path = SOURCES) -> str:
    """The ``URIs:`` of the system's main Debian stanza (not the security archive)."""
    try:
        text = sources.read_text(encoding="utf-8")
    except OSError:
        return DEFAULT_MIRROR
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"(?m)^([A-Za-z-]+):\s*(.+)$", stanza))
        uris, suites = fields.get("URIs", "").split(), fields.get("Suites", "")
        if uris and "security" not in uris[0] and "-security" not in suites:
            return uris[0]
    return DEFAULT_MIRROR


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One provisioning per release at a time (parallel test workers share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "error", "W: Failed", "Err:"))]
    return (errors or lines or ["no output"])[-1]


def _run(rel: Release, what: str, cmd: list[str], *, cwd: Path | None = None, timeout: float = APT_TIMEOUT,
         env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ProvisionError(f"{rel.name}: {what}: {cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"{rel.name}: {what}: no answer within {timeout} s") from None
    if log is not None:
        log.write_text(out.stdout + out.stderr, encoding="utf-8")
    if out.returncode:
        where = f" (full log: {log})" if log is not None else ""
        raise ProvisionError(f"{rel.name}: {what} failed: {_last_line(out.stderr + out.stdout)}{where}")
    return out


class _Apt:
    """apt-get and apt-cache with a configuration of their own in ``tmp``."""

    def __init__(self, rel: Release, tmp: Path) -> None:
        self.rel = rel
        for d in ("lists/partial", "cache/archives/partial", "parts"):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        sources = tmp / "sources.list"
        sources.write_text(f"deb [signed-by={KEYRING}] {mirror()} {rel.suite} main\n", encoding="utf-8")
        self.opts = [
            "-o", f"Dir::Etc::SourceList={sources}", "-o", f"Dir::Etc::SourceParts={tmp / 'parts'}",
            "-o", f"Dir::State::Lists={tmp / 'lists'}", "-o", f"Dir::Cache={tmp / 'cache'}",
            "-o", "Dir::Etc::Preferences=/dev/null", "-o", f"Dir::Etc::PreferencesParts={tmp / 'parts'}",
            "-o", "Dir::State::status=/dev/null", "-o", "APT::Sandbox::User=root",
        ]
        if not rel.check_valid_until:
            self.opts += ["-o", "Acquire::Check-Valid-Until=false"]
        self.lists = tmp / "lists"

    def update(self) -> None:
        try:
            out = _run(self.rel, "apt-get update", ["apt-get", *self.opts, "update"])
        except ProvisionError as e:
            raise RegistryUnreachable(str(e)) from None
        if not any(self.lists.glob("*_Packages*")):  # apt-get update exits 0 when a fetch fails
            raise RegistryUnreachable(f"{self.rel.name}: apt-get update fetched no package list from "
                                      f"{mirror()}: {_last_line(out.stderr + out.stdout)}")

    def candidate(self, package: str) -> str:
        out = _run(self.rel, f"apt-cache show {package}",
                   ["apt-cache", *self.opts, "show", "--no-all-versions", package]).stdout
        m = re.search(r"(?m)^Version:\s*(\S+)", out)
        if not m:
            raise ProvisionError(f"{self.rel.name}: {package} is not in Debian {self.rel.suite}")
        return m.group(1)

    def closure(self, package: str) -> list[str]:
        """The real ``librust-*`` packages ``package`` depends on, recursively (virtual ones are
        resolved to their providers by apt-cache; feature packages, with ``+``, are empty)."""
        out = _run(self.rel, f"apt-cache depends {package}",
                   ["apt-cache", *self.opts, "depends", "--recurse", "--no-recommends", "--no-suggests",
                    "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", package]).stdout
        return sorted({ln for ln in out.splitlines() if re.fullmatch(r"librust-[a-z0-9.-]+-dev", ln)})

    def download(self, packages: list[str], into: Path) -> None:
        _run(self.rel, f"apt-get download ({len(packages)} packages)",
             ["apt-get", *self.opts, "download", *packages], cwd=into)


def _stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def fetch(rel: Release) -> Path:
    """Debian's crate registry for ``rel`` (``.../usr/share/cargo/registry``), fetched once."""
    home = cache_root() / rel.suite
    registry = home / "root" / "usr" / "share" / "cargo" / "registry"
    stamp = home / "fetched.json"
    if _stamp(stamp).get("virtio-queue") == rel.crate and registry.is_dir():
        return registry
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="apt-", dir=home) as t:
        tmp = Path(t)
        apt = _Apt(rel, tmp / "apt")
        apt.update()
        have = apt.candidate(PACKAGE)
        if have.split("-")[0] != rel.crate:
            raise ProvisionError(f"{rel.name}: Debian {rel.suite} has {PACKAGE} {have}, this build pins "
                                 f"{rel.crate} (update RELEASES in {Path(__file__).name})")
        packages = apt.closure(PACKAGE)
        debs = tmp / "debs"
        debs.mkdir()
        apt.download(packages, debs)
        root = tmp / "root"
        for deb in sorted(debs.glob("*.deb")):
            _run(rel, f"dpkg -x {deb.name}", ["dpkg", "-x", str(deb), str(root)])
        if not (root / "usr/share/cargo/registry" / f"virtio-queue-{rel.crate}").is_dir():
            raise ProvisionError(f"{rel.name}: {PACKAGE} {have} holds no crate virtio-queue-{rel.crate}")
        shutil.rmtree(home / "root", ignore_errors=True)
        shutil.move(str(root), home / "root")
        stamp.write_text(json.dumps({"virtio-queue": rel.crate, "package": f"{PACKAGE} {have}",
                                     "closure": packages, "mirror": mirror()}, indent=1), encoding="utf-8")
    return registry


def _cargo() -> str:
    found = shutil.which("cargo")
    if found:
        return found
    for home in (Path.home(), Path("/root")):
        candidate = home / ".cargo" / "bin" / "cargo"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ProvisionError("rust-vmm virtio-queue: no cargo on PATH nor in ~/.cargo/bin (install a Rust toolchain)")


def _dependency(registry: Path, crate: str, version: str, dep: str) -> str:
    manifest = tomllib.loads((registry / f"{crate}-{version}" / "Cargo.toml").read_text(encoding="utf-8"))
    spec = manifest["dependencies"][dep]
    return spec if isinstance(spec, str) else spec["version"]


def manifest(rel: Release, registry: Path) -> str:
    """The shim's Cargo.toml with virtio-queue pinned to ``rel.crate`` and vm-memory to the version
    that virtio-queue asks for, found among the release's crates."""
    want = _dependency(registry, "virtio-queue", rel.crate, "vm-memory").lstrip("^=~ ")
    major_minor = ".".join(want.split(".")[:2])
    found = sorted(p.name.removeprefix("vm-memory-") for p in registry.glob(f"vm-memory-{major_minor}.*"))
    if not found:
        raise ProvisionError(f"{rel.name}: virtio-queue {rel.crate} needs vm-memory {want}, which Debian "
                             f"{rel.suite} does not package")
    text = (SHIM / "Cargo.toml").read_text(encoding="utf-8")
    text, n1 = re.subn(r'(?m)^virtio-queue = .*$', f'virtio-queue = "={rel.crate}"', text)
    text, n2 = re.subn(r'(?m)^vm-memory = \{ version = "[^"]*"', f'vm-memory = {{ version = "={found[-1]}"', text)
    if (n1, n2) != (1, 1):
        raise ProvisionError(f"{rel.name}: {SHIM / 'Cargo.toml'} has no virtio-queue / vm-memory line to pin")
    return text + "\n[workspace]  # standalone: no parent workspace\n"


def _sources_hash(*extra: str) -> str:
    h = hashlib.sha256()
    for path in sorted(SHIM.rglob("*")):
        if path.is_file() and path.suffix in (".rs", ".toml") and "target" not in path.parts:
            h.update(path.relative_to(SHIM).as_posix().encode() + b"\0" + path.read_bytes())
    for text in extra:
        h.update(text.encode())
    return h.hexdigest()[:16]


def build_dir(rel: Release) -> Path:
    return cache_root() / rel.suite / "build"


def shim_library(version: str) -> Path:
    """The shim built against ``version`` ("0.14" or "0.18"): provisioned and built on first use."""
    rel = release(version)
    if not (SHIM / "Cargo.toml").is_file() or not (SHIM / "src" / "lib.rs").is_file():
        raise ProvisionError(f"{rel.name}: the shim's sources are not installed in {SHIM} (package data of "
                             "conformance.adapters.rust_vmm)")
    home = cache_root() / rel.suite
    stamp = home / "built.json"
    digest = _sources_hash(rel.crate)
    lib = home / "lib" / f"libvirtio_queue_shim-{digest}.so"
    if _stamp(stamp).get("hash") == digest and lib.is_file():
        return lib
    with _locked(cache_root() / f"{rel.suite}.lock"):
        if _stamp(stamp).get("hash") == digest and lib.is_file():  # another worker built it meanwhile
            return lib
        registry = fetch(rel)
        cargo = _cargo()
        project = build_dir(rel)
        shutil.rmtree(project / "src", ignore_errors=True)
        shutil.copytree(SHIM / "src", project / "src")
        if (SHIM / "examples").is_dir():
            shutil.rmtree(project / "examples", ignore_errors=True)
            shutil.copytree(SHIM / "examples", project / "examples")
        (project / "Cargo.toml").write_text(manifest(rel, registry), encoding="utf-8")
        (project / ".cargo").mkdir(exist_ok=True)
        (project / ".cargo" / "config.toml").write_text(
            f'[source.crates-io]\nreplace-with = "debian"\n\n[source.debian]\ndirectory = "{registry}"\n\n'
            "[net]\noffline = true\n", encoding="utf-8")
        (project / "Cargo.lock").unlink(missing_ok=True)  # resolved afresh against this registry
        env = {**os.environ, "VQ_CRATE_VERSION": rel.crate, "CARGO_TARGET_DIR": str(project / "target")}
        try:
            _run(rel, "cargo build", [cargo, "build", "--release", "--offline"], cwd=project, env=env,
                 timeout=CARGO_TIMEOUT, log=project / "build.log")
        except ProvisionError as e:
            missing = re.search(r"no matching package named `([^`]+)`", (project / "build.log").read_text())
            if missing:
                raise ProvisionError(f"{rel.name}: cargo build: crate {missing.group(1)} is not among Debian "
                                     f"{rel.suite}'s packaged crates") from None
            raise
        lib.parent.mkdir(parents=True, exist_ok=True)
        for old in lib.parent.glob("libvirtio_queue_shim-*.so"):  # never overwrite one a process has loaded
            if old != lib:
                old.unlink(missing_ok=True)
        tmp = lib.with_suffix(".tmp")
        shutil.copyfile(project / "target" / "release" / LIB_NAME, tmp)
        tmp.rename(lib)
        stamp.write_text(json.dumps({"hash": digest, "lib": str(lib), "virtio-queue": rel.crate}, indent=1),
                         encoding="utf-8")
    return lib
