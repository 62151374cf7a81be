"""The C library in a child process, so that a crash or a hang in it is a reported failure of the call
that caused it, never a dead suite.

The child is forked once the guest memory exists; the memory is a shared mapping (``GuestMemory``'s
default), so the library works on the very bytes the machine reads. Every call is one message over a
socket pair; a driver's transport callbacks come back the same way and run here, on the machine's device
and guest. A callback's exception (a spec violation the reference device saw) is kept on this side and
raised when the C call returns, as the in-process adapter does.
"""

from __future__ import annotations

import ctypes
import faulthandler
import mmap
import os
import pickle
import signal
import socket
import sys
import warnings
from collections.abc import Callable
from typing import Any

from conformance.adapters.c.adapter import CDevice, CDriver, load, load_driver
from conformance.harness import ImplementationError, ImplementationGone
from conformance.interrupt import forget_child, register_child
from refmodel.capabilities import Capability
from refmodel.system.guest_os import GuestOS
from refmodel.virtio.virtq import QueueAddresses
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.transport import Interrupts, Transport

_MAX_MESSAGE = 1 << 20
#: One receive buffer for the process: a fresh megabyte per message costs an mmap and a munmap.
_BUF = bytearray(_MAX_MESSAGE)
_VIEW = memoryview(_BUF)
_FD_SIZE = 4  # a C int in SCM_RIGHTS
_PR_SET_PDEATHSIG = 1


class _CallbackRaised(Exception):
    """In the child: the parent's callback raised; the C call is to return and the parent re-raises."""


def _send(sock: socket.socket, msg: object) -> None:
    sock.send(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(sock: socket.socket) -> Any:
    # No spinning before the wait: on an idle VM a spin halves a call's cost, but beside another busy
    # process it holds the CPU the peer needs and costs 40 times that (bench: 9 us a round trip, 414 us).
    n = sock.recv_into(_BUF)  # SOCK_SEQPACKET: one message per call, never a part of one
    if not n:
        raise EOFError
    return pickle.loads(_VIEW[:n])


def _recv_with_fds(sock: socket.socket) -> tuple[Any, list[int]]:
    n, anc, _, _ = sock.recvmsg_into([_BUF], socket.CMSG_SPACE(_FD_SIZE))
    if not n:
        raise EOFError
    fds = [int.from_bytes(data[i:i + _FD_SIZE], sys.byteorder) for level, kind, data in anc
           if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS for i in range(0, len(data), _FD_SIZE)]
    return pickle.loads(_VIEW[:n]), fds


class _Host:
    """One forked process that loads the library and serves calls on the objects it builds in it.

    It lives for the whole run (a fork per example would make the suite pay copy-on-write faults on every
    page it touches); an object is built per example on that example's memory, whose memfd is sent along.
    After a crash or a hang the process is gone, and the next example forks a new one.
    """

    def __init__(self, path: str, kind: str) -> None:
        self.path, self.kind = path, kind
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.callbacks: dict[str, Any] = {}
        self.raised: BaseException | None = None
        self._ids = 0
        self._freed: list[int] = []  # objects whose handles are gone, freed with the next message

    def build(self, mem: GuestMemory) -> int:
        """A new object on ``mem`` in the child (forked now if there is none); its id for :meth:`call`."""
        fd = mem.fileno()
        if fd < 0:
            raise ImplementationError(f"{self.kind}", "guest memory has no descriptor to share: the library "
                                      "cannot run in a child process")
        if self.pid is None:
            self._fork()
        self._ids += 1
        assert self.sock is not None
        socket.send_fds(self.sock, [pickle.dumps(("new", self._ids, mem.base, mem.size, self._take_freed()))],
                        [fd])
        self._wait(f"{self.kind}.new")
        return self._ids

    def _fork(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the child only serves
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            parent.close()
            os._exit(_serve(child, self.path, self.kind))
        child.close()
        register_child(pid)
        self.pid, self.sock, self.raised = pid, parent, None

    def call(self, oid: int, method: str, *args: Any) -> Any:
        name = f"{self.kind}.{method}"
        if self.pid is None or self.sock is None:
            raise ImplementationGone(name, "the library's process is gone (an earlier call crashed or hung in it)")
        _send(self.sock, (oid, method, args, self._take_freed()))
        return self._wait(name)

    def _take_freed(self) -> list[int]:
        freed, self._freed = self._freed, []
        return freed

    def _wait(self, name: str) -> Any:
        assert self.sock is not None
        try:
            while True:
                kind, *rest = _recv(self.sock)
                if kind != "cb":
                    break
                self._callback(*rest)
        except EOFError:
            raise ImplementationGone(name, self._death()) from None
        except BaseException:  # a deadline, Ctrl-C: the child may be mid-call, so it cannot be trusted again
            self.close()
            raise
        raised, self.raised = self.raised, None
        if raised is not None:
            raise raised
        if kind == "err":
            raise ImplementationError(name, rest[0])
        return rest[0]

    def _callback(self, target: str, name: str, args: tuple[Any, ...]) -> None:
        assert self.sock is not None
        if self.raised is None:
            try:
                _send(self.sock, ("ok", getattr(self.callbacks[target], name)(*args)))
                return
            except BaseException as e:  # noqa: BLE001 - carried across the C call, raised when it returns
                self.raised = e
        _send(self.sock, ("raised",))

    def _death(self) -> str:
        pid, self.pid = self.pid, None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._freed = []
        if pid is None:
            return "the library's process is gone"
        _, status = os.waitpid(pid, 0)
        forget_child(pid)
        if os.WIFSIGNALED(status):
            return f"crashed the library's process ({signal.Signals(os.WTERMSIG(status)).name})"
        return f"the library's process exited with status {os.WEXITSTATUS(status)}"

    def forget(self, oid: int) -> None:
        """Called from ``__del__``, at any point of another call: only noted here, never sent."""
        if self.pid is not None:
            self._freed.append(oid)

    def close(self) -> None:
        """Kill and reap the child; the next :meth:`build` forks a new one."""
        pid, self.pid = self.pid, None
        self._freed = []
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            forget_child(pid)

    def __del__(self) -> None:
        self.close()


def _serve(sock: socket.socket, path: str, kind: str) -> int:  # pragma: no cover - the child
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the run and kills this process
        faulthandler.disable()  # the library's crash is reported by the parent, once, as the call's error
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the suite
        lib = load(path) if kind == "device" else load_driver(path)
        objs: dict[int, Any] = {}
        while True:
            try:
                msg, fds = _recv_with_fds(sock)
            except EOFError:
                return 0
            try:
                for oid in msg[-1]:
                    objs.pop(oid, None)
                if msg[0] == "new":
                    _, oid, base, size, _ = msg
                    mem = GuestMemory(base=base, buffer=mmap.mmap(fds[0], size))
                    os.close(fds[0])
                    objs[oid] = CDevice(lib, mem) if kind == "device" else _ChildDriver(CDriver(lib), sock, mem)
                    result: Any = oid
                else:
                    oid, method, args, _ = msg
                    result = getattr(objs[oid], method)(*args)
            except _CallbackRaised:
                _send(sock, ("err", "a callback raised"))
            except Exception as e:  # noqa: BLE001 - sent to the parent, which names the call
                _send(sock, ("err", f"raised {type(e).__name__}: {e}"))
            else:
                _send(sock, ("ok", result))
    except BaseException:  # noqa: BLE001
        return 3


class _Remote:
    """In the child: an object of the parent (the device a driver drives, its guest) reached over the socket."""

    def __init__(self, sock: socket.socket, target: str) -> None:
        self._sock, self._target = sock, target

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            _send(self._sock, ("cb", self._target, name, args))
            kind, *rest = _recv(self._sock)
            if kind == "raised":
                raise _CallbackRaised
            return rest[0]
        return call


class _RemoteGuest(_Remote):
    def __init__(self, sock: socket.socket, mem: GuestMemory) -> None:
        super().__init__(sock, "guest")
        self.mem = mem  # the child's mapping of the same memfd


class _ChildDriver:  # pragma: no cover - lives in the child
    def __init__(self, drv: CDriver, sock: socket.socket, mem: GuestMemory) -> None:
        self.drv, self.device, self.guest = drv, _Remote(sock, "device"), _RemoteGuest(sock, mem)

    def probe(self) -> bool:
        return self.drv.probe(self.device, self.guest)  # type: ignore[arg-type]

    def interrupt(self, queues: frozenset[int], config: bool) -> None:
        self.drv.interrupt(queues, config)

    def run(self) -> None:
        self.drv.run()


class _Object:
    """The parent's handle on one object in the child."""

    def __init__(self, host: _Host, mem: GuestMemory) -> None:
        self._host, self._oid = host, host.build(mem)

    def _call(self, method: str, *args: Any) -> Any:
        return self._host.call(self._oid, method, *args)

    def __del__(self) -> None:
        host = getattr(self, "_host", None)
        if host is not None and getattr(self, "_oid", None) is not None:
            host.forget(self._oid)


class IsolatedCDevice(_Object):
    """:class:`CDevice` in the child process."""

    capabilities: frozenset[Capability] = CDevice.capabilities

    def __init__(self, host: _Host, mem: GuestMemory) -> None:
        super().__init__(host, mem)
        self.mem = mem

    def read_device_features(self) -> int:
        return int(self._call("read_device_features"))

    def write_driver_features(self, value: int) -> None:
        self._call("write_driver_features", value)

    def read_status(self) -> int:
        return int(self._call("read_status"))

    def write_status(self, value: int) -> None:
        self._call("write_status", value)

    def config_generation(self) -> int:
        return int(self._call("config_generation"))

    def read_config(self, offset: int, size: int) -> int:
        return int(self._call("read_config", offset, size))

    def write_config(self, offset: int, size: int, value: int) -> None:
        self._call("write_config", offset, size, value)

    def queue_max_size(self, index: int) -> int:
        return int(self._call("queue_max_size", index))

    def enable_queue(self, index: int, size: int, addrs: QueueAddresses) -> None:
        self._call("enable_queue", index, size, addrs)

    def notify(self, index: int) -> None:
        self._call("notify", index)

    def take_interrupts(self) -> Interrupts:
        result: Interrupts = self._call("take_interrupts")
        return result

    def run(self) -> None:
        self._call("run")

    def set_target(self, num_pages: int) -> None:
        self._call("set_target", num_pages)

    def hint_start(self) -> int:
        return int(self._call("hint_start"))

    def hint_stop(self) -> None:
        self._call("hint_stop")

    def hint_done(self) -> None:
        self._call("hint_done")

    def hinted_pages(self) -> int:
        return int(self._call("hinted_pages"))

    def request_stats(self) -> bool:
        return bool(self._call("request_stats"))


class IsolatedCDriver:
    """:class:`CDriver` in the child process, built at the first probe (when the guest's memory exists)."""

    capabilities: frozenset[Capability] = CDriver.capabilities

    def __init__(self, host: _Host) -> None:
        self._host = host
        self._obj: _Object | None = None

    def probe(self, device: Transport, guest: GuestOS) -> bool:
        if self._obj is None:
            self._obj = _Object(self._host, guest.mem)
        self._host.callbacks = {"device": device, "guest": guest}
        return bool(self._obj._call("probe"))

    def interrupt(self, queues: frozenset[int] = frozenset(), config: bool = False) -> None:
        if self._obj is not None:
            self._obj._call("interrupt", queues, config)

    def run(self) -> None:
        if self._obj is not None:
            self._obj._call("run")


class DeviceFactory:
    """``factory(mem)`` for the device machine; :meth:`close` ends the library's process (the runner
    calls it when a run ends)."""

    def __init__(self, path: str) -> None:
        load(path)  # a library without the ABI is one line now, not an error in every child
        self._host = _Host(path, "device")

    def __call__(self, mem: GuestMemory) -> IsolatedCDevice:
        return IsolatedCDevice(self._host, mem)

    def close(self) -> None:
        self._host.close()


class DriverFactory:
    """``factory()`` for the driver machine; :meth:`close` as for :class:`DeviceFactory`."""

    def __init__(self, path: str) -> None:
        load_driver(path)
        self._host = _Host(path, "driver")

    def __call__(self) -> IsolatedCDriver:
        return IsolatedCDriver(self._host)

    def close(self) -> None:
        self._host.close()


def device_factory(path: str) -> DeviceFactory:
    return DeviceFactory(path)


def driver_factory(path: str) -> DriverFactory:
    return DriverFactory(path)
