"""vhost-user targets: every ``parse_*_untrusted`` of :mod:`conformance.adapters.vhost_user.protocol`
on arbitrary frontend bytes. The only allowed error is ``VhostUserProtocolError`` (one line naming the
message and field)."""

from __future__ import annotations

from collections.abc import Callable

from conformance.adapters.vhost_user import protocol as P

from fuzz.harness import guarded_target

ALLOWED = (P.VhostUserProtocolError,)


def header(data: bytes) -> None:
    """parse_header_untrusted on the first 12 bytes (any length is tried: the socket may give fewer)."""
    P.parse_header_untrusted(data[:P.HEADER.size] if data[:1] != b"\xff" else data)


def u64(data: bytes) -> None:
    P.parse_u64_untrusted("SET_FEATURES", data)


def vring_state(data: bytes) -> None:
    P.parse_vring_state_untrusted("SET_VRING_NUM", data)


def vring_addr(data: bytes) -> None:
    P.parse_vring_addr_untrusted(data)


def mem_table(data: bytes) -> None:
    P.parse_mem_table_untrusted(data)


def config(data: bytes) -> None:
    """GET_CONFIG (no data) or SET_CONFIG (with data), by the first byte."""
    if data:
        with_data = bool(data[0] & 1)
        P.parse_config_untrusted("SET_CONFIG" if with_data else "GET_CONFIG", data[1:], with_data=with_data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    f"vhost_user_{f.__name__}": guarded_target(f, ALLOWED)
    for f in (header, u64, vring_state, vring_addr, mem_table, config)
}
