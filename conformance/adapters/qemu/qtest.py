"""The qtest wire protocol: QEMU connects to a unix socket we listen on; we send one command per line
and read one reply line ("OK ..." or "FAIL ..."); lines starting with "IRQ" are asynchronous events.

Debian's QEMU has no qtest accelerator, so the machine runs under TCG stopped (-S): the CPU never
executes, and memory, port I/O and MMIO accesses from here reach the device models directly.
"""

from __future__ import annotations

import socket


class QtestError(RuntimeError):
    """QEMU answered FAIL, closed the socket, or said something we cannot parse."""


class QtestClient:
    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self._buf = b""
        self.irqs: list[str] = []

    def _line(self) -> str:
        while b"\n" not in self._buf:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise QtestError("QEMU did not answer in time") from None
            except OSError as e:
                raise QtestError(f"QEMU closed the qtest socket ({e.strerror})") from None
            if not chunk:
                raise QtestError("QEMU closed the qtest socket")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("ascii", "replace")

    def cmd(self, text: str) -> str:
        try:
            self.sock.sendall(text.encode("ascii") + b"\n")
        except OSError as e:
            raise QtestError(f"QEMU closed the qtest socket ({e.strerror})") from None
        while True:
            line = self._line()
            if line.startswith("IRQ"):
                self.irqs.append(line)
                continue
            if line.startswith("OK"):
                return line[2:].strip()
            raise QtestError(f"{text!r}: {line}")

    def _value(self, text: str, bits: int) -> int:
        """A value QEMU returned for a ``bits``-wide access: hex that fits, or one line of QtestError."""
        reply = self.cmd(text)
        try:
            value = int(reply, 16)
        except ValueError:
            raise QtestError(f"{text!r}: reply {reply[:80]!r} is not a hex value") from None
        if not 0 <= value < 1 << bits:
            raise QtestError(f"{text!r}: reply {reply[:80]!r} does not fit {bits} bits")
        return value

    def _read(self, op: str, addr: int, bits: int) -> int:
        return self._value(f"{op} 0x{addr:x}", bits)

    def readb(self, addr: int) -> int:
        return self._read("readb", addr, 8)

    def readw(self, addr: int) -> int:
        return self._read("readw", addr, 16)

    def readl(self, addr: int) -> int:
        return self._read("readl", addr, 32)

    def readq(self, addr: int) -> int:
        return self._read("readq", addr, 64)

    def writeb(self, addr: int, v: int) -> None:
        self.cmd(f"writeb 0x{addr:x} 0x{v:x}")

    def writew(self, addr: int, v: int) -> None:
        self.cmd(f"writew 0x{addr:x} 0x{v:x}")

    def writel(self, addr: int, v: int) -> None:
        self.cmd(f"writel 0x{addr:x} 0x{v:x}")

    def writeq(self, addr: int, v: int) -> None:
        self.cmd(f"writeq 0x{addr:x} 0x{v:x}")

    def inl(self, port: int) -> int:
        return self._value(f"inl 0x{port:x}", 32)

    def outl(self, port: int, v: int) -> None:
        self.cmd(f"outl 0x{port:x} 0x{v:x}")

    def inw(self, port: int) -> int:
        return self._value(f"inw 0x{port:x}", 16)

    def outw(self, port: int, v: int) -> None:
        self.cmd(f"outw 0x{port:x} 0x{v:x}")

    def inb(self, port: int) -> int:
        return self._value(f"inb 0x{port:x}", 8)

    def outb(self, port: int, v: int) -> None:
        self.cmd(f"outb 0x{port:x} 0x{v:x}")
