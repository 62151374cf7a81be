"""The Linux guest: a User-Mode Linux kernel from Debian, a hostfs root built at run time, an agent.

The root is built from Debian's ``user-mode-linux`` and ``busybox-static`` packages into a cache
directory keyed by their content, never committed. Its ``/init`` is the guest agent: a shell loop
on the console that loads the driver and allocates, writes, checks and frees memory on request.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import attrs

from conformance.interrupt import GroupWatcher, forget_child, register_child

UML_BINARY = "/usr/bin/linux.uml"
UML_MODULES = "/usr/lib/uml/modules"
BUSYBOX = "/bin/busybox"
MARK = "@@"

#: The guest agent. Each command line is "SEQ CMD ARGS"; every reply line starts with @@, the last is
#: "@@END SEQ RC". Workload files live in a tmpfs, so they are guest RAM the device must not touch; each
#: starts with "VCMARK-NAME\n", so a test can find the file's first page in guest memory.
AGENT = r"""#!/bin/sh
export PATH=/bin
mount -t devtmpfs dev /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o size=95% tmpfs /w
stty -echo -onlcr 2>/dev/null
dev() { for d in /sys/bus/virtio/devices/*; do [ -e "$d/device" ] && [ "$(cat $d/device)" = 0x0005 ] && echo $d; done; }
echo "@@READY $(uname -r)"
while read -r seq cmd a b; do
  rc=0
  case "$cmd" in
    insmod) out=$(insmod /virtio_balloon.ko 2>&1) || rc=$?; [ -n "$out" ] && echo "@@OUT $out" ;;
    rmmod) rmmod virtio_balloon 2>/dev/null || rc=$? ;;
    device) d=$(dev); if [ -n "$d" ]; then
              echo "@@STATUS $(cat $d/status)"; echo "@@FEATURES $(cat $d/features)"
              echo "@@DRIVER $(basename "$(readlink $d/driver 2>/dev/null)")"; else rc=1; fi ;;
    alloc) { echo "VCMARK-$a"; dd if=/dev/urandom bs=4096 count=$b 2>/dev/null; } > /w/$a && md5sum /w/$a > /w/$a.md5 || rc=$? ;;
    free) rm -f /w/$a /w/$a.md5 ;;
    verify) for f in /w/*.md5; do [ -e "$f" ] || continue; md5sum -c -s "$f" || { echo "@@BAD ${f%.md5}"; rc=1; }; done ;;
    meminfo) while read -r k v u; do case "$k" in MemTotal:|MemFree:|Buffers:|Cached:|AnonPages:|SReclaimable:|SUnreclaim:|KernelStack:|PageTables:) echo "@@MEM $k $v";; esac; done </proc/meminfo ;;
    halt) echo "@@END $seq 0"; poweroff -f ;;
    *) echo "@@OUT unknown command $cmd"; rc=127 ;;
  esac
  echo "@@END $seq $rc"
done
poweroff -f
"""


class GuestError(RuntimeError):
    """The guest could not be built, booted or commanded (one line; the console log has the rest)."""


def kernel_release(uml: str = UML_BINARY) -> str:
    out = subprocess.run([uml, "--version"], capture_output=True, text=True, timeout=30)
    release = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if not release:
        raise GuestError(f"{uml} --version printed nothing")
    return release


def modules_dir(uml: str = UML_BINARY) -> str:
    """Where ``uml``'s modules are: beside a provisioned build (conformance.provision), else Debian's path."""
    beside = Path(uml).parent / "modules"
    return str(beside) if beside.is_dir() else UML_MODULES


def balloon_module(release: str, modules: str = UML_MODULES) -> Path:
    hits = glob.glob(f"{modules}/{release}/**/virtio_balloon.ko*", recursive=True)
    if not hits:
        raise GuestError(f"no virtio_balloon module under {modules}/{release} (install user-mode-linux)")
    return Path(hits[0])


#: Exit codes of an init that died at once, as UML's panic prints them.
_SIGNALS = {0x04: "SIGILL", 0x07: "SIGBUS", 0x0B: "SIGSEGV"}


def early_death(console: str) -> str | None:
    """One line naming the likely cause of a guest that died before its agent answered, or None.

    Seen: Debian 12's UML 6.1 and 13's 6.12 boot and then kill init with SIGSEGV in userspace on some
    hosts (an Intel Xeon with AVX-512 under host kernel 6.18), where 7.2 runs.
    """
    if "Attempted to kill init" in console:
        m = re.search(r"exitcode=(0x[0-9a-fA-F]+)", console)
        code = int(m.group(1), 16) if m else None
        sig = _SIGNALS.get(code & 0x7F, f"signal {code & 0x7F}") if code is not None else "a signal"
        return (f"init died at once ({sig}{', exitcode ' + m.group(1) if m else ''}): this UML build does not "
                "run userspace on this host (CPU or host kernel); a newer one does, e.g. --uml-binary sid")
    if "Too few physical memory" in console:
        return "UML could not size its memory: it cannot start through a foreign loader (use a patchelf'd copy)"
    m = re.search(r"Kernel panic - not syncing: ([^\n]*)", console)
    if m:
        return f"the guest kernel panicked: {m.group(1).strip()}"
    return None


def cache_dir() -> Path:
    base = os.environ.get("VIRTIO_CONFORMANCE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "virtio-conformance")
    return Path(base)


def build_root(uml: str = UML_BINARY, busybox: str = BUSYBOX) -> Path:
    """The hostfs root for ``uml``'s kernel, built once per kernel, module, busybox and agent."""
    for need, pkg in ((uml, "user-mode-linux"), (busybox, "busybox-static")):
        if not os.access(need, os.X_OK):
            raise GuestError(f"{need} not found: install Debian's {pkg}")
    release = kernel_release(uml)
    module = balloon_module(release, modules_dir(uml))
    if module.suffix != ".ko":
        raise GuestError(f"{module}: compressed modules are not supported")
    h = hashlib.sha256(AGENT.encode())
    for f in (module, Path(busybox)):
        h.update(f.read_bytes())
    root = cache_dir() / f"uml-root-{release}-{h.hexdigest()[:16]}"
    if (root / "init").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root.parent))
    try:
        for d in ("bin", "proc", "sys", "w", "dev", "tmp"):
            (tmp / d).mkdir()
        shutil.copy2(busybox, tmp / "bin" / "busybox")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for a in applets:
            if a != "busybox":
                (tmp / "bin" / a).symlink_to("busybox")
        shutil.copy2(module, tmp / "virtio_balloon.ko")
        (tmp / "init").write_text(AGENT)
        (tmp / "init").chmod(0o755)
        try:
            tmp.rename(root)
        except OSError:  # another run built it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


@attrs.frozen
class Reply:
    rc: int
    lines: tuple[str, ...]

    def values(self, key: str) -> list[str]:
        return [line[len(key) + 1:] for line in self.lines if line.startswith(key + " ") or line == key]


class Guest:
    """One UML process. The console is polled by the caller's loop (:meth:`feed`), never blocked on."""

    def __init__(self, workdir: str, socket_path: str, *, mem_mib: int = 256, init_on_free: bool = False,
                 uml: str = UML_BINARY) -> None:
        self.root = build_root(uml)
        self.workdir = workdir
        self.mem_mib = mem_mib
        self.log_path = os.path.join(workdir, "console.log")
        self.log = open(self.log_path, "wb")
        args = [uml, f"mem={mem_mib}M", "root=/dev/root", "rootfstype=hostfs", f"rootflags={self.root}", "ro",
                "init=/init", "con=null", "con0=fd:0,fd:1", f"virtio_uml.device={socket_path}:5",
                f"umid=vc{os.getpid()}-{id(self):x}", f"uml_dir={workdir}", "loglevel=4"]
        if init_on_free:
            args.append("init_on_free=1")
        self.cmdline = args
        env = dict(os.environ, TMPDIR=workdir)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     cwd=workdir, env=env, start_new_session=True)
        self._started()

    def _started(self) -> None:
        """The guest process runs: watch its group, and start reading its console."""
        # UML's helper processes outlive a killed kernel process, and nothing of ours runs if this process
        # is killed. A watcher kills the guest's process group once its pipe from us reads EOF.
        register_child(self.proc.pid, group=True)  # a second Ctrl-C kills the group at once
        self._watcher = GroupWatcher(self.proc.pid)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._buf = b""
        self.lines: list[str] = []  # agent lines (@@...) not yet consumed
        self.ready_release: str | None = None
        self._seq = 0

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def feed(self) -> None:
        """Read what the console has (call when select says it is readable)."""
        try:
            chunk = os.read(self.fileno(), 65536)
        except BlockingIOError:
            return
        if not chunk:
            return
        self.log.write(chunk)
        self.log.flush()
        self._buf += chunk
        *complete, self._buf = self._buf.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace").strip("\r")
            i = line.find(MARK)
            if i < 0:
                continue
            line = line[i + len(MARK):]
            if line.startswith("READY"):
                self.ready_release = line[6:]
            else:
                self.lines.append(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, command: str) -> int:
        self._seq += 1
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{self._seq} {command}\n".encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise GuestError(f"guest console closed ({e}); see {self.log_path}") from None
        return self._seq

    def take_reply(self, seq: int) -> Reply | None:
        for i, line in enumerate(self.lines):
            if line.startswith(f"END {seq} "):
                body = tuple(self.lines[:i])
                del self.lines[:i + 1]
                return Reply(int(line.split()[2]), body)
        return None

    def console_tail(self, n: int = 30) -> str:
        try:
            data = Path(self.log_path).read_bytes()[-8192:]
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").replace("\r", "").splitlines()[-n:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        # UML's helper processes share the session; sweep it after the kernel is gone, and return only
        # once the group is empty (they die asynchronously), so no guest process outlives this call.
        for _ in range(500):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.01)
        self._watcher.close()  # it reads EOF and exits: reaped here, not left a zombie until the next Popen
        forget_child(self.proc.pid)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.log.close()
