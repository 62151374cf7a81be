"""QEMU targets: qtest reply lines and QMP replies, as QEMU would send them over the socket.

qtest: a fake socket hands :class:`QtestClient` the input's bytes in chunks of the sizes the input picks;
each access must return an int of its width or raise ``QtestError``. QMP: the reply line goes through
``qemu.qmp``'s own message parsing and reply checks (what ``QMPClient.execute`` does with the bytes it
reads), inside :class:`QmpClient`; only a value or ``QmpError`` may come out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qemu.qmp.message import Message
from qemu.qmp.models import ErrorResponse
from qemu.qmp.qmp_client import BadReplyError, ExecuteError

from conformance.adapters.qemu.qmp import QmpClient, QmpError
from conformance.adapters.qemu.qtest import QtestClient, QtestError

from fuzz.layout import Reader
from fuzz.harness import Finding, guarded_target

#: (method, width in bits of its value, takes a value to write)
QTEST_OPS = (("readb", 8, False), ("readw", 16, False), ("readl", 32, False), ("readq", 64, False),
             ("inb", 8, False), ("inw", 16, False), ("inl", 32, False),
             ("writel", 32, True), ("outw", 16, True))


class FakeSocket:
    """A socket whose peer sent ``chunks``; sendall is accepted; then end of file."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def settimeout(self, _t: float) -> None:
        pass

    def sendall(self, _data: bytes) -> None:
        pass

    def recv(self, _n: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def qtest_reply(data: bytes) -> None:
    rd = Reader(data)
    ops = [QTEST_OPS[rd.int(0, len(QTEST_OPS) - 1)] for _ in range(rd.int(1, 3))]
    chunks = []
    while rd.pos < len(rd.data):
        chunks.append(rd.bytes(rd.int(1, 64)))
    client = QtestClient(FakeSocket(chunks))  # type: ignore[arg-type]
    for name, bits, writes in ops:
        got = getattr(client, name)(0x1000, 1) if writes else getattr(client, name)(0x1000)
        if not writes and not (isinstance(got, int) and 0 <= got < 1 << bits):
            raise Finding(f"qtest {name} returned {got!r}, not a {bits}-bit value")


class ReplyLine:
    """Stands in for ``QEMUMonitorProtocol``: ``cmd`` treats the input as QEMU's reply line, checked as
    ``qemu.qmp``'s ``QMPClient.execute`` checks one (its ``_do_recv``, then ``execute``'s reply rules)."""

    def __init__(self, line: bytes) -> None:
        self.line = line

    def cmd(self, command: str, **arguments: Any) -> Any:
        sent = Message({"execute": command})
        reply = Message(self.line, eager=True)
        if "error" in reply:
            try:
                error_response = ErrorResponse(reply)
            except (KeyError, TypeError) as err:
                raise BadReplyError("QMP error reply is malformed", reply, sent) from err
            raise ExecuteError(error_response, sent, reply)
        if "return" not in reply:
            raise BadReplyError("QMP reply is missing a 'error' or 'return' member", reply, sent)
        return reply["return"]

    def clear_events(self) -> None:
        pass


def qmp_reply(data: bytes) -> None:
    client = QmpClient.__new__(QmpClient)
    client.timeout, client.broken = 1.0, False
    client._qmp = ReplyLine(data)  # type: ignore[assignment]
    client.execute("query-balloon")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "qtest_reply": guarded_target(qtest_reply, (QtestError,)),
    "qmp_reply": guarded_target(qmp_reply, (QmpError,)),
}
