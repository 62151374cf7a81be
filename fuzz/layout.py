"""A front-to-back reader of fuzz bytes, and the writer that makes seed inputs for it.

Like ``atheris.FuzzedDataProvider`` but invertible: :class:`Writer` lays out the values a target should
read, so :mod:`fuzz.make_corpus` turns the reference model's own valid values into seed inputs. Past the
end every read gives its lowest value (zero bytes), so every byte string is an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def _width(lo: int, hi: int) -> int:
    return max(1, ((hi - lo).bit_length() + 7) // 8)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def int(self, lo: int, hi: int) -> int:
        """An int in ``[lo, hi]`` from the next few bytes (little-endian, reduced modulo the span)."""
        raw = int.from_bytes(self.bytes(_width(lo, hi)), "little")
        return lo + raw % (hi - lo + 1)

    def bool(self) -> bool:
        return bool(self.int(0, 1))

    def pick(self, values: Sequence[T]) -> T:
        return values[self.int(0, len(values) - 1)]

    def rest(self) -> bytes:
        return self.bytes(len(self.data) - self.pos)


class Writer:
    """Writes what a :class:`Reader` reads back: ``w.int(lo, hi, v)`` then ``Reader.int(lo, hi) == v``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def bytes(self, data: bytes) -> Writer:
        self.parts.append(bytes(data))
        return self

    def int(self, lo: int, hi: int, value: int) -> Writer:
        if not lo <= value <= hi:
            raise ValueError(f"{value} is not in [{lo}, {hi}]")
        return self.bytes((value - lo).to_bytes(_width(lo, hi), "little"))

    def bool(self, value: bool) -> Writer:
        return self.int(0, 1, int(value))

    def pick(self, values: Sequence[T], value: T) -> Writer:
        return self.int(0, len(values) - 1, values.index(value))

    def done(self) -> bytes:
        return b"".join(self.parts)
