"""A minimal synchronous QMP client (JSON lines over a unix socket). Events are collected, not lost."""

from __future__ import annotations

import json
import socket
from typing import Any


class QmpError(RuntimeError):
    """QEMU returned an error, or the socket failed."""


class QmpClient:
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        greeting = self._msg()
        if "QMP" not in greeting:
            raise QmpError(f"unexpected QMP greeting {greeting}")
        self.execute("qmp_capabilities")

    def _msg(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise QmpError("QEMU did not answer on QMP in time") from None
            if not chunk:
                raise QmpError("QEMU closed the QMP socket")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def execute(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._msg()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QmpError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    def close(self) -> None:
        self.sock.close()
