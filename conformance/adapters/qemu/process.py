"""Start and stop one QEMU for the suite: qtest and QMP sockets, guest RAM shared through a file
(so guest memory is our memory, with no copying over qtest), and cleanup that always runs.

The RAM file lives in the run's temporary directory, not /dev/shm: containers often cap /dev/shm at
64 MiB, and the page cache serves a shared file as well. ``VIRTIO_CONFORMANCE_RAM_DIR`` overrides.

Facts this relies on (Debian 12's QEMU 7.2 and bookworm-backports' 10.0): no qtest accelerator, so
``-machine q35 -accel tcg -S -qtest unix:PATH`` with a firmware of HLT bytes; QEMU connects to the
qtest and QMP sockets we listen on; free-page-hint needs an iothread.
"""

from __future__ import annotations

import atexit
import mmap
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import NoReturn

from refmodel.virtio.memory import GuestMemory

from conformance.adapters.qemu.qmp import QmpClient, QmpError
from conformance.adapters.qemu.qtest import QtestClient
from conformance.interrupt import GroupWatcher, forget_child, register_child

DEFAULT_BINARY = "qemu-system-x86_64"


DEFAULT_DEVICE = ("virtio-balloon-pci,id=balloon0,disable-legacy=on,iothread=io0,free-page-hint=on,"
                  "free-page-reporting=on,deflate-on-oom=on")
RAM_MIB = 64

_live: "weakref.WeakSet[QemuProcess]" = weakref.WeakSet()


class QemuError(RuntimeError):
    """QEMU could not be found, did not start, or died."""


class QemuProcess:
    def __init__(self, binary: str | None = None, *, device: str = DEFAULT_DEVICE, ram_mib: int = RAM_MIB,
                 extra_args: tuple[str, ...] = (), timeout: float = 20.0) -> None:
        binary = binary or os.environ.get("VIRTIO_CONFORMANCE_QEMU", DEFAULT_BINARY)
        path = shutil.which(binary)
        if path is None:
            raise QemuError(f"QEMU binary {binary!r} not found (install qemu-system-x86 or pass --qemu-binary)")
        self.binary, self.ram_bytes = path, ram_mib << 20
        self.wedged = False  # set when QEMU stops answering migration commands (see device.corrupted_queue)
        self.dir = Path(tempfile.mkdtemp(prefix="virtio-conformance-qemu-"))
        ram_dir = Path(os.environ.get("VIRTIO_CONFORMANCE_RAM_DIR", self.dir))
        self.ram_path = ram_dir / f"{self.dir.name}.ram"
        bios = self.dir / "bios.bin"
        bios.write_bytes(b"\xf4" * 65536)  # HLT: no firmware touches PCI; the suite is the driver
        qtest_path, qmp_path = self.dir / "qtest.sock", self.dir / "qmp.sock"
        try:
            self.qmp = QmpClient(str(qmp_path), timeout, listen=True)  # QEMU connects to it, as to qtest's
        except QmpError as e:
            self.close()
            raise QemuError(str(e)) from None
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(qtest_path))
        listener.listen(1)
        listener.settimeout(timeout)
        args = [path, "-machine", "q35,memory-backend=ram0", "-accel", "tcg", "-S", "-nodefaults",
                "-display", "none", "-m", f"{ram_mib}M",
                "-object", f"memory-backend-file,id=ram0,size={ram_mib}M,mem-path={self.ram_path},share=on",
                "-object", "iothread,id=io0", "-bios", str(bios), "-qtest", f"unix:{qtest_path}",
                "-qmp", f"unix:{qmp_path}", "-device", device, *extra_args]
        self.args = args
        self._log = open(self.dir / "qemu.log", "w+b")
        try:
            self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        except OSError as e:
            listener.close()
            self.close()
            raise QemuError(f"cannot run {path}: {e.strerror}") from None
        _live.add(self)
        self._watcher = GroupWatcher(self.proc.pid)
        register_child(self.proc.pid, group=True)  # its own session: a terminal's Ctrl-C does not reach it
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            self._fail(f"QEMU did not connect to qtest within {timeout:g} s")
        finally:
            listener.close()
        self.qtest = QtestClient(conn, timeout)
        try:
            self.qmp.accept()
        except QmpError as e:
            self._fail(str(e))
        fd = os.open(self.ram_path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, self.ram_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.mem = GuestMemory(buffer=self._map)

    def _fail(self, what: str) -> NoReturn:
        tail = self.log_tail()  # before close() removes the log
        self.close()
        raise QemuError(f"{what}: {tail}") from None

    def log_tail(self, n: int = 2000) -> str:
        try:
            self._log.flush()
            return (self.dir / "qemu.log").read_text(errors="replace")[-n:].strip() or "(no output)"
        except OSError:
            return "(no log)"

    @property
    def alive(self) -> bool:
        """Running and able to answer: a stopped QEMU (SIGSTOP, a debugger) counts as gone, so the factory
        starts a new one rather than let every later example wait out its deadline on it."""
        return self.proc.poll() is None and not _stopped_or_exiting(self.proc.pid)

    def close(self) -> None:
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        if getattr(self, "proc", None) is not None:
            forget_child(self.proc.pid)
        if getattr(self, "_watcher", None) is not None:
            self._watcher.close()
        for obj in ("qtest", "qmp"):
            client = getattr(self, obj, None)
            if client is not None:
                try:
                    (client.sock if obj == "qtest" else client).close()
                except Exception:  # noqa: BLE001 - closing a dead socket
                    pass
        if getattr(self, "_log", None) is not None:
            self._log.close()
        self.ram_path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        _live.discard(self)


def _stopped_or_exiting(pid: int) -> bool:
    """Stopped, or killed with threads still exiting (the main thread is a zombie before it can be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t", "Z", "X")


@atexit.register
def _close_all() -> None:
    for q in list(_live):
        q.close()
