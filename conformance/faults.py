"""Fault injection at a random step: the implementation under test dies or stops at one of its calls,
and the run must report it as an error of that step, carry on, and leave nothing behind.

A :class:`FaultPoint` is a kind of fault and the call (counted from the start of each example) at which
it fires, so every replay of an example meets it at the same step, as Hypothesis' shrinking needs:

* ``c-segv`` / ``c-hang``: the example C device built with ``-DFAULT_AT_CALL`` segfaults or spins at its
  N-th call (``VC_FAULT_CALL``, ``VC_FAULT_HANG``); it runs in a child process (adapters.c.isolated);
* ``qemu-kill`` / ``qemu-stop``: SIGKILL or SIGSTOP (a hang) to the QEMU under test before its N-th call;
* ``uml-kill`` / ``uml-stop``: the same to the UML guest's process group (the Linux driver's UML route);
* ``lq-kill`` / ``lq-stop``: the same to the guest QEMU's process group on the Linux driver's QEMU-guest
  route (``--dut linux-qemu``; the kernel is VIRTIO_CONFORMANCE_KERNEL's, else bookworm's);
* ``vhost-cut``: the vhost-user connection to the guest is shut down after the N-th message's header,
  so the rest of that message never arrives, as when the peer closes its socket in the middle of one.

:func:`run_point` runs one point and judges it (:class:`Outcome`): the run returned, it reported an error
naming the call it met and a counterexample whose steps name the rule, and no process or temporary file
of the point is left (the calling process is made a child subreaper, so orphans come back to it), nor
a guest RAM file of this process in /dev/shm (the QEMU-guest route's ``vc-ram-PID-*``), and every process
group a guest fault signalled is empty.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from conformance.registry import Implementation, resolve
from conformance.runner import RunResult, run

C_SOURCE = Path(__file__).resolve().parent / "adapters" / "c" / "example_device.c"
KINDS = ("c-segv", "c-hang", "qemu-kill", "qemu-stop", "uml-kill", "uml-stop", "lq-kill", "lq-stop",
         "vhost-cut")
#: The calls a point may pick from, per kind: every example reaches that many calls of the implementation
#: (a Linux guest's boot: start, probe, and probe's agent commands insmod and device).
CALLS = {"c-segv": 80, "c-hang": 80, "qemu-kill": 40, "qemu-stop": 40, "uml-kill": 4, "uml-stop": 4,
         "lq-kill": 4, "lq-stop": 4, "vhost-cut": 8}
#: The per-call deadline of a point's run (a hang ends there): a guest's boot is one call (a TCG guest's
#: takes 10-20 s on the shared host, so ``lq`` allows three times that).
TIMEOUT = {"c": 1.0, "qemu": 5.0, "uml": 20.0, "lq": 60.0, "vhost": 20.0}
SHM = Path("/dev/shm")
_PR_SET_CHILD_SUBREAPER = 36
#: The process groups a group fault signalled during the current point (each must be empty after it).
_signalled_groups: set[int] = set()


@attrs.frozen
class FaultPoint:
    kind: str
    at: int  # the call of each example (1 = the first) at which the fault fires

    def __str__(self) -> str:
        return f"{self.kind}@{self.at}"


@attrs.frozen
class Outcome:
    point: FaultPoint
    survived: bool
    why: str  # what did not survive, or the reported error's first line
    step: str = ""  # the call the error names
    rule: str = ""  # the last rule of its counterexample
    seconds: float = 0.0


# -- where the faults come from ---------------------------------------------------------------------------
def build_c_device(workdir: str) -> str:
    """The example C device with the fault define, built once into ``workdir``."""
    lib = os.path.join(workdir, "libexample_fault.so")
    if not os.path.exists(lib):
        subprocess.run([shutil.which("cc") or "cc", "-shared", "-fPIC", "-O2", "-DFAULT_AT_CALL", "-o", lib,
                        str(C_SOURCE)], check=True, capture_output=True, timeout=120)
    return lib


class _Counting:
    """Wraps every public method of each instance the factory builds (as instance attributes, so static
    Protocol checks still see them) and calls ``fire(instance)`` before its ``at``-th call."""

    def __init__(self, inner: Any, at: int, fire: Callable[[Any], bool]) -> None:
        self._inner, self._at, self._fire = inner, at, fire
        if hasattr(inner, "provides_memory"):
            self.provides_memory = inner.provides_memory

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._inner(*args, **kwargs)
        state = {"calls": 0, "due": False}
        for name in dir(type(obj)):
            method = getattr(obj, name, None)
            if name.startswith("_") or name == "close" or not callable(method):
                continue
            setattr(obj, name, self._wrap(obj, method, state))
        return obj

    def _wrap(self, obj: Any, method: Callable[..., Any], state: dict[str, Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            state["calls"] += 1
            if state["calls"] == self._at or state["due"]:
                state["due"] = not self._fire(obj)  # not possible yet (no process): at the next call
            result = method(*args, **kwargs)
            if state["due"]:
                state["due"] = not self._fire(obj)
            return result
        return call


def _signal_pid(sig: signal.Signals, pid: Callable[[Any], int | None], group: bool) -> Callable[[Any], bool]:
    def fire(obj: Any) -> bool:
        target = pid(obj)
        if target is None:
            return False
        if group:
            _signalled_groups.add(target)
        with contextlib.suppress(ProcessLookupError):
            (os.killpg if group else os.kill)(target, sig)
        _settle(target, sig)
        if group:
            _settle_group(target, "tTZ" if sig == signal.SIGSTOP else "Z")
        return True
    return fire


def _settle_group(pgid: int, states: str, wait: float = 2.0) -> None:
    """Until every process of group ``pgid`` is in one of ``states`` (a guest's helpers die on their own
    time, and one still holding the console pipe would turn a broken pipe into a stopped guest)."""
    end = time.monotonic() + wait
    while time.monotonic() < end:
        pending = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in states:
                pending = True
                break
        if not pending:
            return
        time.sleep(0.005)


def _settle(pid: int, sig: signal.Signals, wait: float = 2.0) -> None:
    """Until ``pid`` (a child of this process) has stopped or exited whole, threads and all, without reaping
    it: a signal is delivered asynchronously, and the call that follows must meet the fault every time, or
    Hypothesis' replay of the example would not."""
    flags = os.WNOHANG | os.WNOWAIT | (os.WSTOPPED if sig == signal.SIGSTOP else os.WEXITED)
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            if os.waitid(os.P_PID, pid, flags) is not None:
                return
        except ChildProcessError:  # not ours, or reaped already
            return
        time.sleep(0.001)


def _qemu_pid(obj: Any) -> int | None:
    return obj.q.proc.pid


def _guest_pid(obj: Any) -> int | None:
    """The Linux guest's process (UML's kernel, or the guest QEMU): the leader of its own session."""
    return obj.guest.proc.pid if getattr(obj, "guest", None) is not None else None


class _CutConnection:
    """The backend's connection to the guest, shut down after the header of its ``at``-th message (or the
    first after it that has a payload): the payload's read then meets the end of the stream."""

    def __init__(self, sock: socket.socket, at: int) -> None:
        self._sock, self._at, self._seen, self._armed = sock, at, 0, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def recvmsg(self, *args: Any) -> Any:
        got = self._sock.recvmsg(*args)
        self._seen += 1
        if self._seen >= self._at and len(got[0]) >= 12 and int.from_bytes(got[0][8:12], "little") > 0:
            self._armed = True
        return got

    def recv(self, n: int) -> bytes:
        if not self._armed:
            return self._sock.recv(n)
        with contextlib.suppress(OSError):  # the guest sees the connection close; the payload never comes
            self._sock.shutdown(socket.SHUT_RDWR)
        return b""


class _CutListener:
    def __init__(self, sock: socket.socket, at: int) -> None:
        self._sock, self._at = sock, at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def accept(self) -> tuple[Any, Any]:
        conn, addr = self._sock.accept()
        return _CutConnection(conn, self._at), addr


@contextlib.contextmanager
def _cut_vhost_user(at: int) -> Iterator[None]:
    from conformance.adapters.linux import adapter
    from conformance.adapters.vhost_user.backend import VhostUserBackend

    def backend(*args: Any, **kwargs: Any) -> VhostUserBackend:
        be = VhostUserBackend(*args, **kwargs)
        be.listener = _CutListener(be.listener, at)  # type: ignore[assignment]
        return be

    saved = adapter.VhostUserBackend
    adapter.VhostUserBackend = backend  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        adapter.VhostUserBackend = saved  # type: ignore[misc]


@contextlib.contextmanager
def inject(point: FaultPoint, workdir: str) -> Iterator[Implementation]:
    """The implementation with ``point``'s fault armed, for the duration of the block."""
    kind = point.kind
    if kind.startswith("c-"):
        lib = build_c_device(workdir)
        env = {"VC_FAULT_CALL": str(point.at), "VC_FAULT_HANG": "1" if kind == "c-hang" else "0"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # read by the library's child process, forked at the run's first example
        try:
            yield resolve(f"c:{lib}", "device")
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    elif kind.startswith("qemu-"):
        impl = resolve("qemu", "device")
        sig = signal.SIGKILL if kind == "qemu-kill" else signal.SIGSTOP
        fire = _signal_pid(sig, _qemu_pid, False)
        yield attrs.evolve(impl, factory=_Counting(impl.factory, point.at, fire))
    elif kind in ("uml-kill", "uml-stop", "lq-kill", "lq-stop"):  # the guest's process group, either route
        impl = resolve("linux" if kind.startswith("uml-") else "linux-qemu", "driver")
        sig = signal.SIGKILL if kind.endswith("-kill") else signal.SIGSTOP
        fire = _signal_pid(sig, _guest_pid, True)
        yield attrs.evolve(impl, factory=_Counting(impl.factory, point.at, fire))
    elif kind == "vhost-cut":
        with _cut_vhost_user(point.at):
            yield resolve("linux", "driver")
    else:
        raise ValueError(f"fault kind {kind!r}: expected one of {', '.join(KINDS)}")


# -- judging a point ----------------------------------------------------------------------------------------
def become_subreaper() -> None:
    """Orphaned descendants (a guest's helpers, a QEMU in its own session) become this process's children,
    so :func:`live_children` sees whatever a run left behind."""
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def live_children(wait: float = 2.0, before: frozenset[str] = frozenset()) -> list[str]:
    """This process's children still running after ``wait`` seconds (zombies are reaped: they are gone),
    but for those in ``before`` (there before the run)."""
    end = time.monotonic() + wait
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        live = []
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    continue
                name = f"{pid} {stat.split(' (', 1)[1].split(')', 1)[0]}"
                if stat.rsplit(")", 1)[1].split()[0] != "Z" and name not in before:
                    live.append(name)
        if not live or time.monotonic() >= end:
            return live
        time.sleep(0.05)


_STEP = re.compile(r"^state\.(\w+)\(")
_CALL = re.compile(r"\b((?:device|driver)\.\w+): ")


def judge(point: FaultPoint, result: RunResult) -> Outcome:
    """Survived: an implementation error, or a requirement's failure (a device that hangs on a config read
    breaks CFG-DEV-1), that names the call it met and comes with a script of the rules that led there."""
    reported = [(e.detail, e.counterexample, "") for e in result.errors if e.kind == "implementation"]
    reported += [(v.failure.detail, v.failure.counterexample, v.requirement.id) for v in result.verdicts
                 if v.failure is not None and _CALL.search(v.failure.detail)]
    if not reported:
        kinds = ", ".join(e.kind for e in result.errors) or "none"
        return Outcome(point, False, f"no implementation error reported (errors: {kinds})")
    detail, script, req = reported[0]
    m = _CALL.search(detail)
    step = m.group(1) if m else detail.split(":", 1)[0]
    rules = [m.group(1) for line in script if (m := _STEP.match(line)) and m.group(1) != "teardown"]
    first = (f"{req}: " if req else "") + detail.splitlines()[0]
    if not rules:
        return Outcome(point, False, f"the error has no counterexample naming a rule: {first}", step)
    return Outcome(point, True, first, step, rules[-1])


def _live_groups(pgids: set[int], wait: float = 2.0) -> list[int]:
    """Those of ``pgids`` that still have a process after ``wait`` seconds."""
    end = time.monotonic() + wait
    while True:
        live = []
        for pgid in sorted(pgids):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
            live.append(pgid)
        if not live or time.monotonic() >= end:
            return live
        time.sleep(0.05)


def _ram_files() -> frozenset[str]:
    """This process's guest RAM files in /dev/shm (the QEMU-guest route's, named by its pid)."""
    return frozenset(p.name for p in SHM.glob(f"vc-ram-{os.getpid()}-*")) if SHM.is_dir() else frozenset()


def run_point(point: FaultPoint, workdir: str, profile: str = "dev") -> Outcome:
    """Run the suite once with ``point`` armed; the temporary directory it uses must be empty afterwards,
    no guest RAM file of this process left in /dev/shm, and no child of this process left (call
    :func:`become_subreaper` first)."""
    start = time.monotonic()
    before = frozenset(live_children(0))
    rams = _ram_files()
    _signalled_groups.clear()
    tmp = tempfile.mkdtemp(prefix="pt-", dir=workdir)  # short: the sockets in it have a 108-byte path limit
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = tmp
    try:
        with inject(point, workdir) as impl:
            timeout = TIMEOUT[point.kind.split("-")[0]]
            outcome = judge(point, run(impl, profile, max_failures=0, timeout=timeout))
    except Exception as e:  # noqa: BLE001 - the suite did not survive the fault: that is the finding
        outcome = Outcome(point, False, f"the run raised {type(e).__name__}: {e}")
    finally:
        tempfile.tempdir = saved[0]
        os.environ.pop("TMPDIR", None) if saved[1] is None else os.environ.__setitem__("TMPDIR", saved[1])
    gc.collect()  # objects of the run that close their processes when collected
    left = live_children(before=before)
    groups = _live_groups(_signalled_groups)
    files = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*"))
    files += sorted(str(SHM / name) for name in _ram_files() - rams)
    shutil.rmtree(tmp, ignore_errors=True)
    why = [outcome.why] if not outcome.survived else []
    if left:
        why.append(f"processes left: {', '.join(left)}")
    if groups:
        why.append(f"process groups signalled and not empty: {', '.join(map(str, groups))}")
    if files:
        why.append(f"temporary files left: {', '.join(files[:5])}")
    return attrs.evolve(outcome, survived=not why, why="; ".join(why) or outcome.why,
                        seconds=time.monotonic() - start)
