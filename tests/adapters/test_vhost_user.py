"""The vhost-user wire format: untrusted payloads give one error type that names message and field,
and a frontend sending garbage leaves the backend with a reported error, never a crash."""

from __future__ import annotations

import os
import socket
import struct
import tempfile

import pytest

from conformance.adapters.vhost_user import protocol as P
from conformance.adapters.vhost_user.backend import VhostUserBackend
from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice


@pytest.mark.parametrize("data, field", [
    (b"\x01\x00\x00\x00", "header: 4 bytes"),
    (P.HEADER.pack(1, 0x2, 0), "version 2"),
    (P.HEADER.pack(1, 0x1, 1 << 20), "payload size"),
])
def test_bad_headers_name_the_field(data: bytes, field: str) -> None:
    with pytest.raises(P.VhostUserProtocolError, match=field):
        P.parse_header_untrusted(data)


def test_bad_payloads_name_message_and_field() -> None:
    with pytest.raises(P.VhostUserProtocolError, match="SET_FEATURES: payload of 3 bytes"):
        P.parse_u64_untrusted("SET_FEATURES", b"abc")
    with pytest.raises(P.VhostUserProtocolError, match="nregions 0"):
        P.parse_mem_table_untrusted(P.MEM_HEADER.pack(0, 0))
    with pytest.raises(P.VhostUserProtocolError, match="2 regions need"):
        P.parse_mem_table_untrusted(P.MEM_HEADER.pack(2, 0) + P.MEM_REGION.pack(0, 4096, 0, 0))
    with pytest.raises(P.VhostUserProtocolError, match="GET_CONFIG: offset 250 size 16"):
        P.parse_config_untrusted("GET_CONFIG", P.CONFIG_HEADER.pack(250, 16, 0), with_data=False)
    with pytest.raises(P.VhostUserProtocolError, match="SET_CONFIG: size 4 but 2 data bytes"):
        P.parse_config_untrusted("SET_CONFIG", P.CONFIG_HEADER.pack(12, 4, 0) + b"\0\0", with_data=True)


def test_reply_flags_are_exactly_version_and_reply() -> None:
    # Linux's virtio_uml compares the flags for equality.
    assert P.HEADER.unpack_from(P.reply(P.Request.GET_FEATURES, P.U64.pack(0)))[1] == 0x5


def _pair() -> tuple[VhostUserBackend, socket.socket, str]:
    d = tempfile.mkdtemp()
    path = os.path.join(d, "s")
    be = VhostUserBackend(path, DEFAULT_OFFER, lambda mem: BalloonDevice(mem))
    front = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    front.connect(path)
    be.poll(1.0)  # accept
    return be, front, d


def _request(be: VhostUserBackend, front: socket.socket, req: int, payload: bytes = b"", flags: int = 1) -> bytes:
    front.sendall(P.HEADER.pack(req, flags, len(payload)) + payload)
    be.poll(1.0)
    front.settimeout(0.2)
    try:
        return front.recv(4096)
    except socket.timeout:
        return b""


def test_a_frontend_that_negotiates_gets_the_offer_and_acks() -> None:
    be, front, _ = _pair()
    try:
        got = _request(be, front, P.Request.GET_FEATURES)
        assert P.HEADER.unpack_from(got) == (P.Request.GET_FEATURES, 0x5, 8)
        assert struct.unpack_from("<Q", got, 12)[0] == DEFAULT_OFFER | P.F_PROTOCOL_FEATURES
        proto = struct.unpack_from("<Q", _request(be, front, P.Request.GET_PROTOCOL_FEATURES), 12)[0]
        assert proto & P.ProtocolFeature.BACKEND_REQ and proto & P.ProtocolFeature.CONFIG
        assert _request(be, front, P.Request.SET_PROTOCOL_FEATURES, P.U64.pack(P.ProtocolFeature.REPLY_ACK)) == b""
        ack = _request(be, front, P.Request.SET_OWNER, flags=1 | P.FLAG_NEED_REPLY)
        assert ack == P.reply(P.Request.SET_OWNER, P.U64.pack(0))  # REPLY_ACK: one u64 0 per request
        assert be.error is None
    finally:
        be.close()
        front.close()


@pytest.mark.parametrize("req, payload, why", [
    (P.Request.SET_FEATURES, b"xx", "SET_FEATURES: payload of 2 bytes"),
    (P.Request.SET_PROTOCOL_FEATURES, P.U64.pack(1 << 40), "bits not offered"),
    (99, b"", "request 99: not supported"),
    (P.Request.SET_VRING_BASE, P.VRING_STATE.pack(0, 7), "only 0"),
    (P.Request.SET_MEM_TABLE, P.MEM_HEADER.pack(1, 0) + P.MEM_REGION.pack(0, 4096, 0, 0), "1 regions but 0 fds"),
])
def test_garbage_from_the_frontend_is_a_reported_error(req: int, payload: bytes, why: str) -> None:
    be, front, _ = _pair()
    try:
        _request(be, front, req, payload)
        assert be.error is not None and why in be.error
    finally:
        be.close()
        front.close()


def test_packed_ring_state_carries_both_positions_and_wrap_counters() -> None:
    assert P.packed_base(0, 0, 256) == P.PACKED_FRESH_BASE == 0x80008000
    # Offset 1 of the second lap (wrap 0) for the next available, offset 3 of the first (wrap 1) for used.
    assert P.packed_base(257, 3, 256) == 1 | 3 << 16 | 1 << 31
    assert P.describe_packed_base(0) == "avail offset 0 wrap 0, used offset 0 wrap 0"


def test_a_fresh_packed_base_is_taken_and_judged_against_the_negotiated_ring() -> None:
    be, front, _ = _pair()
    try:
        _request(be, front, P.Request.SET_VRING_BASE, P.VRING_STATE.pack(0, P.PACKED_FRESH_BASE))
        assert be.error is None and be.vrings[0].base == P.PACKED_FRESH_BASE
        be.driver_features = 1 << 34  # VIRTIO_F_RING_PACKED: a base of 0 (wrap counters 0) is not a fresh ring
        with pytest.raises(P.VhostUserProtocolError, match=r"base 0x0 \(avail offset 0 wrap 0.*fresh packed ring"):
            be._check_base(1, 0)
        be._check_base(0, P.PACKED_FRESH_BASE)
        be.driver_features = 0
        with pytest.raises(P.VhostUserProtocolError, match="fresh split ring, expected 0x0"):
            be._check_base(0, P.PACKED_FRESH_BASE)
    finally:
        be.close()
        front.close()


def test_the_uml_route_refuses_packed_rings_in_one_line() -> None:
    from conformance.adapters.linux.guest import UML_BINARY
    from conformance.registry import DutError, resolve

    if not os.access(UML_BINARY, os.X_OK):
        pytest.skip(f"{UML_BINARY} is not installed (tools/test installs it)")
    with pytest.raises(DutError) as e:
        resolve("linux", "driver", ring="packed")
    assert "\n" not in str(e.value) and "SET_VRING_BASE 0" in str(e.value) and "linux-qemu" in str(e.value)
