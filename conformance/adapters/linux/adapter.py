"""Linux's virtio_balloon driver as a driver under test: a UML guest, its agent, and a vhost-user
backend serving the reference device, all run from one select loop in the calling thread.

The loop never blocks on the guest, and every wait has a deadline: a hung or dead guest becomes an
:class:`~conformance.harness.ImplementationError` with the console's last lines, never a hung suite.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice
from refmodel.capabilities import Capability
from refmodel.virtio.constants import DeviceStatus
from refmodel.virtio.memory import GuestMemory

from conformance.harness import ImplementationError
from conformance.interface import DeviceUnderTest
from conformance.adapters.vhost_user.backend import VhostUserBackend
from conformance.adapters.vhost_user.protocol import DEFAULT_PROTOCOL_FEATURES
from conformance.adapters.linux.guest import UML_BINARY, Guest, GuestError, Reply, cache_dir, early_death

BOOT_TIMEOUT = 60.0
#: A build that has not answered by then does not boot here (a good one answers in about 1.5 s).
PROBE_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
QUIET = 0.25  # no vhost-user traffic for this long: the driver has nothing left to do right now
RUN_LIMIT = 8.0


class LinuxDriver:
    """One guest per instance: :meth:`start` boots it, :meth:`close` kills it and removes its files."""

    #: Driver-side actions the machine may ask for (``report``/``oom`` happen on Linux's own schedule).
    capabilities = frozenset({Capability.GUEST_AGENT})

    def __init__(self, *, uml: str = UML_BINARY, mem_mib: int = 256, quiet: float = QUIET,
                 boot_timeout: float = BOOT_TIMEOUT) -> None:
        self.uml, self.mem_mib, self.quiet, self.boot_timeout = uml, mem_mib, quiet, boot_timeout
        self.workdir = tempfile.mkdtemp(prefix="vc-linux-")
        self.backend: VhostUserBackend | None = None
        self.guest: Guest | None = None
        self.status = 0
        self.guest_features = ""
        self.driver_name = ""

    # -- lifetime ------------------------------------------------------------------------------------
    def start(self, offered: int, device_factory: Callable[[GuestMemory], DeviceUnderTest], *,
              init_on_free: bool = False, protocol_features: int = DEFAULT_PROTOCOL_FEATURES) -> str:
        """Boot the guest with a backend offering ``offered``; returns the kernel release."""
        sock = os.path.join(self.workdir, "balloon.sock")
        self.backend = VhostUserBackend(sock, offered, device_factory, protocol_features=protocol_features)
        try:
            self.guest = guest = Guest(self.workdir, sock, mem_mib=self.mem_mib, init_on_free=init_on_free,
                                       uml=self.uml)
        except GuestError as e:
            raise ImplementationError("start", str(e)) from None
        self._pump(lambda: guest.ready_release is not None, self.boot_timeout, "boot")
        return guest.ready_release or ""

    def close(self) -> None:
        if self.guest is not None:
            self.guest.kill()
        if self.backend is not None:
            self.backend.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __del__(self) -> None:  # a machine that failed before teardown still leaves no process behind
        try:
            if self.guest is not None and self.guest.alive():
                self.guest.kill()
        except Exception:
            pass

    # -- the loop --------------------------------------------------------------------------------------
    def _pump(self, until: Callable[[], bool], timeout: float, what: str) -> None:
        assert self.backend is not None and self.guest is not None
        end = time.monotonic() + timeout
        while not until():
            if self.backend.error is not None:
                raise ImplementationError(what, f"vhost-user: {self.backend.error}")
            if not self.guest.alive():
                try:
                    self.guest.feed()  # the console's last words, if it still has any
                except (OSError, ValueError):
                    pass
                tail = self.guest.console_tail(60)
                cause = early_death(tail) if self.guest.ready_release is None else None
                if cause is not None:  # one line, not a console dump: the build does not run here
                    raise ImplementationError(what, f"the guest died before its agent answered: {cause}")
                raise ImplementationError(what, f"the guest stopped (exit {self.guest.proc.returncode}); "
                                          f"console:\n{tail}")
            left = end - time.monotonic()
            if left <= 0:
                raise ImplementationError(what, f"no progress within {timeout:g} s; console:\n"
                                          f"{self.guest.console_tail()}")
            if self.backend.poll(min(left, 0.05), [self.guest.fileno()]):
                self.guest.feed()
        if self.backend.error is not None:
            raise ImplementationError(what, f"vhost-user: {self.backend.error}")

    def command(self, line: str, timeout: float = COMMAND_TIMEOUT) -> Reply:
        """Run one agent command in the guest, serving the device while it runs."""
        assert self.guest is not None
        try:
            seq = self.guest.send(line)
        except GuestError as e:
            raise ImplementationError(line.split()[0], str(e)) from None
        box: list[Reply] = []

        def done() -> bool:
            r = self.guest.take_reply(seq)  # type: ignore[union-attr]
            if r is not None:
                box.append(r)
            return bool(box)

        self._pump(done, timeout, f"guest agent {line.split()[0]}")
        return box[0]

    # -- the driver-under-test protocol --------------------------------------------------------------
    def probe(self) -> bool:
        """Load the driver; True when the guest shows DRIVER_OK (then the device gets it too)."""
        r = self.command("insmod")
        if r.rc != 0:
            return False
        info = self.command("device")
        status = info.values("STATUS")
        self.status = int(status[0], 0) if status else 0
        self.guest_features = (info.values("FEATURES") or [""])[0]
        self.driver_name = (info.values("DRIVER") or [""])[0]
        if self.status & DeviceStatus.DRIVER_OK:
            assert self.backend is not None
            self.backend.driver_ok()
            return True
        return False

    def interrupt(self, queues: frozenset[int] = frozenset(), config: bool = False) -> None:
        assert self.backend is not None
        self.backend.signal(queues, config)

    def run(self) -> None:
        """Serve the guest until the driver has been quiet for a while (it runs on its own clock)."""
        assert self.backend is not None
        start = time.monotonic()
        self.backend.last_traffic = start
        self._pump(lambda: time.monotonic() - self.backend.last_traffic >= self.quiet  # type: ignore[union-attr]
                   or time.monotonic() - start >= RUN_LIMIT, RUN_LIMIT + 5, "run")

    def serve(self, seconds: float) -> None:
        """Serve the guest for ``seconds`` whatever it does."""
        end = time.monotonic() + seconds
        self._pump(lambda: time.monotonic() >= end, seconds + 5, "serve")

    def meminfo(self) -> dict[str, int]:
        """MemTotal, MemFree and the counters of the guest's own use, in bytes, as the guest sees them."""
        out = {}
        for v in self.command("meminfo").values("MEM"):
            key, kib = v.split()
            out[key.rstrip(":")] = int(kib) * 1024
        return out

    def alloc(self, name: str, pages: int) -> bool:
        return self.command(f"alloc {name} {pages}").rc == 0

    def free(self, name: str) -> None:
        self.command(f"free {name}")

    def verify(self) -> list[str]:
        """Workload files whose contents changed since they were written."""
        return [p.rsplit("/", 1)[-1] for p in self.command("verify").values("BAD")]


def _build_path(uml: str) -> str:
    """A path as given; a Debian release name provisioned into the cache."""
    if "/" in uml:
        return uml
    from conformance.provision import Kind, ProvisionError, provision

    try:
        return str(provision(uml, Kind.UML).binary)
    except ProvisionError as e:
        raise GuestError(str(e)) from None


def _prepare(uml: str) -> str:
    from conformance.adapters.linux.guest import build_root, kernel_release

    try:
        build_root(uml)
        return kernel_release(uml)
    except (GuestError, OSError, subprocess.SubprocessError) as e:
        raise GuestError(f"cannot prepare a Linux guest from {uml}: {e}") from None


def _probe_key(uml: str) -> str:
    """What decides whether a UML build boots: the binary, this host's kernel and its CPU."""
    st = os.stat(uml)
    try:
        cpu = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    except OSError:
        cpu = ""
    h = hashlib.sha256(f"{os.path.realpath(uml)}|{st.st_size}|{st.st_mtime_ns}|{os.uname().release}|{cpu}".encode())
    return h.hexdigest()[:16]


def boot_probe(uml: str) -> str | None:
    """Boot ``uml`` once with the reference device and return None if its agent answered, else one line
    naming why not. Cached per binary, host kernel and CPU: a second run knows at once."""
    mark = cache_dir() / "uml-probe" / _probe_key(uml)
    if mark.exists():
        text = mark.read_text()
        return text or None
    _prepare(uml)
    drv = LinuxDriver(uml=uml, boot_timeout=PROBE_TIMEOUT)
    failure = ""
    try:
        drv.start(DEFAULT_OFFER, BalloonDevice)
    except ImplementationError as e:
        failure = e.what.splitlines()[0]
    finally:
        drv.close()
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(failure)
    return failure or None


class LinuxFactory:
    """A fresh guest per example (each boots in about 1.5 s); the root is built once, up front."""

    #: Fewer, shorter examples than the in-process profiles: every example boots a kernel.
    profiles = {"dev": {"max_examples": 4, "stateful_step_count": 10},
                "ci": {"max_examples": 8, "stateful_step_count": 12},
                "nightly": {"max_examples": 40, "stateful_step_count": 25},
                "soak": {"max_examples": 100, "stateful_step_count": 25}}  # random: one seed per run

    route = "uml"  # named in the JSON report ("route")
    #: Builds tried, in order, when none is named and the system's UML does not boot on this host.
    FALLBACK_BUILDS = ("sid",)

    def __init__(self, uml: str | None = None) -> None:
        """``uml``: a path, a Debian release (``bookworm``, ``trixie``, ``sid``: fetched by
        :mod:`conformance.provision`), or None: the system's UML if it boots here, else the first of
        :data:`FALLBACK_BUILDS` that does."""
        self.note = ""
        if uml is None:
            self.uml = self._default()
        else:
            self.uml = _build_path(uml)
            failure = boot_probe(self.uml)
            if failure:
                raise GuestError(f"{uml}: {failure}")
        self.release = _prepare(self.uml)
        self.version = f"Linux {self.release} virtio_balloon (User-Mode Linux {self.uml}, vhost-user)"
        if self.note:  # the report says which build ran, and why not the system's
            self.version += f"; {self.note}"

    def _default(self) -> str:
        tried: list[str] = []
        candidates: list[str] = [UML_BINARY] if os.access(UML_BINARY, os.X_OK) else []
        for uml in [*candidates, *self.FALLBACK_BUILDS]:
            try:
                path = _build_path(uml)
                failure = boot_probe(path)
            except GuestError as e:
                failure = str(e)
            if not failure:
                if tried:
                    self.note = f"{'; '.join(tried)}; using {path}"
                return path
            tried.append(f"{uml}: {failure}")
        raise GuestError("no User-Mode Linux boots on this host: " + "; ".join(tried))

    def __call__(self) -> LinuxDriver:
        return LinuxDriver(uml=self.uml)
