"""A vhost-user backend that serves a balloon device model to a real guest driver.

The backend is the transport between a real frontend (Linux's ``virtio_uml``) and a device with
the reference device's transport calls (``read_device_features`` ... ``notify``, ``take_interrupts``).
It is driven by :meth:`VhostUserBackend.poll`, one select round at a time, and never blocks on the
guest: the frontend sends most requests with a spinlock held and then waits for our reply.

What vhost-user does not carry is synthesised, and said so:

* device status: the frontend never sends it (6.1 keeps it locally). The device sees ACKNOWLEDGE,
  DRIVER, the driver's features and FEATURES_OK when the memory table arrives, and DRIVER_OK when
  the adapter has read DRIVER_OK from the guest (:meth:`driver_ok`); kicks before that are held back;
* queue sizes: there is no per-queue maximum in vhost-user; the frontend picks the size.

Rings are split or packed as the negotiated features say (VIRTIO_F_RING_PACKED): the device builds its
queues through :func:`refmodel.virtio.rings.ring_for`, and the backend only carries the packed ring's state
in SET/GET_VRING_BASE (offsets and wrap counters, :func:`.protocol.packed_base`).
"""

from __future__ import annotations

import collections
import mmap
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from refmodel.virtio.constants import DeviceStatus
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.rings import PACKED, ring_for
from refmodel.virtio.virtq import QueueAddresses

from conformance.interface import DeviceUnderTest
from conformance.adapters.vhost_user import protocol as P
from conformance.adapters.vhost_user.protocol import VhostUserProtocolError

MAX_FDS = 8
_STATUS_FOK = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK


class _Vring:
    __slots__ = ("num", "base", "addr", "kick", "call", "enabled")

    def __init__(self) -> None:
        self.num = 0
        self.base = 0  # SET_VRING_BASE: 0 or P.PACKED_FRESH_BASE, judged against the ring at enable
        self.addr: P.VringAddr | None = None
        self.kick: int | None = None
        self.call: int | None = None
        self.enabled = False


class VhostUserBackend:
    """Listens on ``path``; ``device_factory(mem)`` builds the device once the guest's memory is known.

    ``offered`` is what GET_FEATURES answers (before any device exists). With ``autorun`` the backend
    lets the device consume every kicked queue at once and delivers its interrupts, as a VMM would.
    """

    def __init__(self, path: str, offered: int, device_factory: Callable[[GuestMemory], DeviceUnderTest], *,
                 protocol_features: int = P.DEFAULT_PROTOCOL_FEATURES, autorun: bool = True,
                 trace_len: int = 400) -> None:
        self.path = path
        self.offered = offered
        self.device_factory = device_factory
        self.protocol_offer = int(protocol_features)
        self.autorun = autorun
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.conn: socket.socket | None = None
        self.channel: socket.socket | None = None  # the backend-request channel
        self.protocol_features = 0
        self.driver_features: int | None = None
        self.rings_start_enabled = True
        self.vrings: dict[int, _Vring] = collections.defaultdict(_Vring)
        self.regions: list[P.MemRegion] = []
        self._maps: list[mmap.mmap] = []
        self.mem: GuestMemory | None = None
        self.device: Any = None  # a DeviceUnderTest; its error, name_of, queues, config are read if there
        self.ready = False  # DRIVER_OK given to the device
        self.pending_kicks: list[int] = []
        self.kicks: collections.Counter[int] = collections.Counter()
        self.config_reads: collections.Counter[int] = collections.Counter()
        self.disconnected = False
        self.error: str | None = None  # a protocol breach by the frontend, or our own unsupported case
        self.last_traffic = time.monotonic()
        self.trace: collections.deque[str] = collections.deque(maxlen=trace_len)

    # -- the loop ----------------------------------------------------------------------------------
    def fds(self) -> list[int]:
        out = [self.listener.fileno()] if self.conn is None else [self.conn.fileno()]
        if self.channel is not None:
            out.append(self.channel.fileno())
        out += [v.kick for v in self.vrings.values() if v.kick is not None]
        return out

    def poll(self, timeout: float, extra: list[int] = ()) -> list[int]:  # type: ignore[assignment]
        """One select round over our fds and ``extra``; returns the ready ``extra`` fds."""
        ready, _, _ = select.select(self.fds() + list(extra), [], [], timeout)
        for fd in ready:
            if fd in extra:
                continue
            self.last_traffic = time.monotonic()
            try:
                self._dispatch(fd)
            except VhostUserProtocolError as e:
                self._fail(str(e))
        return [fd for fd in ready if fd in extra]

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
        self.trace.append(f"!! {why}")

    def _dispatch(self, fd: int) -> None:
        if fd == self.listener.fileno() and self.conn is None:
            self.conn, _ = self.listener.accept()
            self.conn.settimeout(5.0)
            self.trace.append("<- connect")
        elif self.conn is not None and fd == self.conn.fileno():
            self._read_message()
        elif self.channel is not None and fd == self.channel.fileno():
            try:
                data = self.channel.recv(4096)
            except OSError:  # reset by a frontend that went away: as EOF
                data = b""
            if not data:  # replies we did not ask for, or EOF
                self.channel.close()
                self.channel = None
        else:
            for index, v in self.vrings.items():
                if v.kick == fd:
                    try:
                        os.read(fd, 8)
                    except BlockingIOError:
                        return
                    self._kick(index)
                    return

    # -- messages ------------------------------------------------------------------------------------
    def _read_message(self) -> None:
        assert self.conn is not None
        try:
            data, anc, _flags, _ = self.conn.recvmsg(P.HEADER.size, socket.CMSG_SPACE(MAX_FDS * 4))
        except OSError:  # reset, timed out: the frontend is gone, as at EOF
            data, anc = b"", []
        if not data:
            self.trace.append("<- EOF")
            self.disconnected = True
            self.conn.close()
            self.conn = None
            return
        fds: list[int] = []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += [int.from_bytes(payload[i:i + 4], "little") for i in range(0, len(payload) - 3, 4)]
        hdr = P.parse_header_untrusted(data)
        payload = self._recv_exact(hdr.size)
        self._handle(hdr, payload, fds)

    def _recv_exact(self, n: int) -> bytes:
        assert self.conn is not None
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.conn.recv(n - len(buf))
            except OSError:  # timed out or reset: the rest of the message is not coming
                chunk = b""
            if not chunk:
                raise VhostUserProtocolError(f"payload cut short: {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def _send(self, data: bytes) -> None:
        if self.conn is not None:
            try:
                self.conn.sendall(data)
            except OSError as e:  # the frontend closed the connection before our reply: an error, not a crash
                request = P.HEADER.unpack_from(data)[0]
                raise VhostUserProtocolError(f"reply to request {request} not delivered: the frontend closed the "
                                             f"connection ({e.strerror or e})") from None

    def _handle(self, hdr: P.Header, payload: bytes, fds: list[int]) -> None:
        name = hdr.name()
        self.trace.append(f"<- {name} {payload[:40].hex()}{' fds=' + str(fds) if fds else ''}")
        handler = getattr(self, f"_on_{name.lower()}", None)
        if handler is None:
            for fd in fds:
                os.close(fd)
            raise VhostUserProtocolError(f"{name}: not supported by this balloon backend")
        result = handler(payload, fds)
        if hdr.request in P.WITH_REPLY:
            self._send(P.reply(hdr.request, result))
        elif hdr.need_reply and self.protocol_features & P.ProtocolFeature.REPLY_ACK:
            self._send(P.reply(hdr.request, P.U64.pack(0)))

    # features
    def _on_set_owner(self, payload: bytes, fds: list[int]) -> None:
        return None

    def _on_get_features(self, payload: bytes, fds: list[int]) -> bytes:
        return P.U64.pack(self.offered | P.F_PROTOCOL_FEATURES)

    def _on_get_protocol_features(self, payload: bytes, fds: list[int]) -> bytes:
        return P.U64.pack(self.protocol_offer)

    def _on_set_protocol_features(self, payload: bytes, fds: list[int]) -> None:
        value = P.parse_u64_untrusted("SET_PROTOCOL_FEATURES", payload)
        if value & ~self.protocol_offer:
            raise VhostUserProtocolError(f"SET_PROTOCOL_FEATURES {value:#x}: bits not offered "
                                         f"({self.protocol_offer:#x})")
        self.protocol_features = value

    def _on_set_backend_req_fd(self, payload: bytes, fds: list[int]) -> None:
        if len(fds) != 1:
            raise VhostUserProtocolError(f"SET_BACKEND_REQ_FD with {len(fds)} fds")
        self.channel = socket.socket(fileno=fds[0])

    def _on_set_features(self, payload: bytes, fds: list[int]) -> None:
        value = P.parse_u64_untrusted("SET_FEATURES", payload)
        self.driver_features = value & ~P.F_PROTOCOL_FEATURES
        if self.device is not None:  # after the replayed FEATURES_OK: the device judges it (INIT-DRV-3)
            self._device_call(lambda: self.device.write_driver_features(self.driver_features))
        # Rings start disabled only when PROTOCOL_FEATURES is acked (Linux 6.1 drops the bit on the
        # second write, after the driver's validate(), and never sends SET_VRING_ENABLE).
        self.rings_start_enabled = not value & P.F_PROTOCOL_FEATURES

    def _on_get_queue_num(self, payload: bytes, fds: list[int]) -> bytes:
        return P.U64.pack(5)

    # memory
    def _on_set_mem_table(self, payload: bytes, fds: list[int]) -> None:
        regions = P.parse_mem_table_untrusted(payload)
        if len(fds) != len(regions):
            raise VhostUserProtocolError(f"SET_MEM_TABLE: {len(regions)} regions but {len(fds)} fds")
        if len(regions) != 1:
            for fd in fds:
                os.close(fd)
            raise VhostUserProtocolError(f"SET_MEM_TABLE: {len(regions)} regions; this backend maps one "
                                         "(x86_64 UML has no highmem)")
        if self.mem is not None:
            raise VhostUserProtocolError("SET_MEM_TABLE a second time; re-probing is not supported")
        r = regions[0]
        try:
            m = mmap.mmap(fds[0], r.mmap_offset + r.memory_size, mmap.MAP_SHARED,
                          mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fds[0])
        self._maps.append(m)
        self.regions = regions
        view = memoryview(m)[r.mmap_offset:r.mmap_offset + r.memory_size]
        self.mem = GuestMemory(buffer=view, base=r.guest_phys_addr)
        self._create_device()

    def _create_device(self) -> None:
        if self.driver_features is None:
            raise VhostUserProtocolError("SET_MEM_TABLE before SET_FEATURES")
        assert self.mem is not None
        self.device = dev = self.device_factory(self.mem)
        # vhost-user carries no status: replay what a driver must have done by now (module docstring).
        for step in (lambda: dev.write_status(DeviceStatus.ACKNOWLEDGE),
                     lambda: dev.write_status(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER),
                     lambda: dev.write_driver_features(self.driver_features),
                     lambda: dev.write_status(_STATUS_FOK)):
            self._device_call(step)

    def _gpa(self, what: str, uva: int) -> int:
        for r in self.regions:
            if r.userspace_addr <= uva < r.userspace_addr + r.memory_size:
                return uva - r.userspace_addr + r.guest_phys_addr
        raise VhostUserProtocolError(f"{what}: address {uva:#x} is in no memory region")

    # vrings
    def _on_set_vring_num(self, payload: bytes, fds: list[int]) -> None:
        index, num = P.parse_vring_state_untrusted("SET_VRING_NUM", payload)
        self.vrings[index].num = num

    def _on_set_vring_base(self, payload: bytes, fds: list[int]) -> None:
        index, base = P.parse_vring_state_untrusted("SET_VRING_BASE", payload)
        if base not in (0, P.PACKED_FRESH_BASE):
            raise VhostUserProtocolError(f"SET_VRING_BASE {index}: base {base:#x}; only 0 (a fresh split ring) or "
                                         f"{P.PACKED_FRESH_BASE:#x} (a fresh packed ring) is supported")
        self.vrings[index].base = base

    def _on_get_vring_base(self, payload: bytes, fds: list[int]) -> bytes:
        index, _ = P.parse_vring_state_untrusted("GET_VRING_BASE", payload)
        q = self._queue(index)
        if q is None:
            base = 0
        elif hasattr(q, "last_avail_idx"):  # split: the next avail ring index
            base = q.last_avail_idx
        else:  # packed: both positions with their wrap counters
            base = P.packed_base(q.next_avail, q.next_used, q.queue_size)
        return P.VRING_STATE.pack(index, base)

    def _on_set_vring_addr(self, payload: bytes, fds: list[int]) -> None:
        a = P.parse_vring_addr_untrusted(payload)
        self.vrings[a.index].addr = a

    def _vring_fd(self, name: str, payload: bytes, fds: list[int]) -> tuple[int, int | None]:
        value = P.parse_u64_untrusted(name, payload)
        index = value & P.VRING_INDEX_MASK
        if value & P.VRING_NOFD:
            if fds:
                raise VhostUserProtocolError(f"{name} {index}: NOFD set but an fd came with it")
            return index, None
        if len(fds) != 1:
            raise VhostUserProtocolError(f"{name} {index}: {len(fds)} fds")
        return index, fds[0]

    def _on_set_vring_kick(self, payload: bytes, fds: list[int]) -> None:
        index, fd = self._vring_fd("SET_VRING_KICK", payload, fds)
        if fd is not None:
            os.set_blocking(fd, False)
        self.vrings[index].kick = fd
        if self.rings_start_enabled:  # the ring starts here (vhost-user: "Ring states")
            self._enable(index)

    def _on_set_vring_call(self, payload: bytes, fds: list[int]) -> None:
        index, fd = self._vring_fd("SET_VRING_CALL", payload, fds)
        self.vrings[index].call = fd

    def _on_set_vring_err(self, payload: bytes, fds: list[int]) -> None:
        _, fd = self._vring_fd("SET_VRING_ERR", payload, fds)
        if fd is not None:
            os.close(fd)

    def _on_set_vring_enable(self, payload: bytes, fds: list[int]) -> None:
        index, enable = P.parse_vring_state_untrusted("SET_VRING_ENABLE", payload)
        if enable:
            self._enable(index)
        else:
            self.vrings[index].enabled = False

    def _enable(self, index: int) -> None:
        v = self.vrings[index]
        if v.enabled:
            return
        if v.addr is None or self.device is None:
            raise VhostUserProtocolError(f"vring {index} started before its address or the memory table")
        self._check_base(index, v.base)
        # Packed: avail is the driver event suppression area, used the device's (vhost-user names them so).
        addrs = QueueAddresses(self._gpa("desc", v.addr.desc), self._gpa("avail", v.addr.avail),
                               self._gpa("used", v.addr.used))
        self._device_call(lambda: self.device.enable_queue(index, v.num, addrs))
        v.enabled = True

    def _packed(self) -> bool:
        negotiated = getattr(self.device, "negotiated", None)
        return ring_for(negotiated if negotiated is not None else self.driver_features) is PACKED

    def _check_base(self, index: int, base: int) -> None:
        """The ring starts fresh in the layout negotiated: split at avail index 0, packed at offset 0 with
        both wrap counters 1 (vhost-user, "Vring descriptor indices for packed virtqueues")."""
        fresh = P.PACKED_FRESH_BASE if self._packed() else 0
        if base != fresh:
            ring = "packed" if fresh else "split"
            got = P.describe_packed_base(base) if fresh else f"{base:#x}"
            raise VhostUserProtocolError(f"SET_VRING_BASE {index}: base {base:#x} ({got}) for a fresh {ring} ring, "
                                         f"expected {fresh:#x}")

    def _on_vring_kick(self, payload: bytes, fds: list[int]) -> None:
        index, _ = P.parse_vring_state_untrusted("VRING_KICK", payload)
        if self.rings_start_enabled:  # in-band: no SET_VRING_KICK ever comes, the first kick starts it
            self._enable(index)
        self._kick(index)

    # config
    def _on_get_config(self, payload: bytes, fds: list[int]) -> bytes:
        offset, size, flags, _ = P.parse_config_untrusted("GET_CONFIG", payload, with_data=False)
        data = bytearray(size)
        if self.device is not None and size:
            # virtio_uml reads [0, offset+len) and keeps the tail: the field the driver read ends at size.
            start = max(offset, size - 4 if size % 4 == 0 else size - 1)
            self.config_reads[start] += 1
            value = self._device_call(lambda: self.device.read_config(start, size - start), 0)
            data[:start] = self._raw_config()[:start]
            data[start:size] = int(value).to_bytes(size - start, "little")
        return P.CONFIG_HEADER.pack(offset, size, flags) + bytes(data)

    def _raw_config(self) -> bytes:
        snapshot = getattr(getattr(self.device, "config", None), "snapshot", None)
        return snapshot() if callable(snapshot) else bytes(P.MAX_CONFIG_SIZE)

    def _on_set_config(self, payload: bytes, fds: list[int]) -> None:
        offset, size, _, data = P.parse_config_untrusted("SET_CONFIG", payload, with_data=True)
        if self.device is None:
            raise VhostUserProtocolError(f"SET_CONFIG at {offset} before the memory table")
        self._device_call(lambda: self.device.write_config(offset, size, int.from_bytes(data, "little")))

    # -- the device side ---------------------------------------------------------------------------------
    def _device_call(self, fn: Callable[[], Any], default: Any = None) -> Any:
        """Call the device; a driver breach it raises is latched there for the machine to report."""
        if getattr(self.device, "error", None) is not None:
            return default
        try:
            return fn()
        except PeerSpecViolation as e:
            self.trace.append(f"!! device: {e.req_id}: {e.detail}")
            return default

    def _queue(self, index: int) -> Any:
        name = getattr(self.device, "name_of", {}).get(index)
        return getattr(self.device, "queues", {}).get(name)

    def _kick(self, index: int) -> None:
        self.kicks[index] += 1
        if not self.ready:
            self.pending_kicks.append(index)
            return
        self._device_call(lambda: self.device.notify(index))
        if self.autorun:
            self.service()

    def driver_ok(self) -> None:
        """The guest shows DRIVER_OK: tell the device, then hand it the kicks it was not yet allowed."""
        if self.device is None or self.ready:
            return
        if self.rings_start_enabled:  # rings the driver set up but never kicked (in-band notifications)
            for index, v in sorted(self.vrings.items()):
                if v.addr is not None:
                    self._enable(index)
        status = self._device_call(self.device.read_status, 0)
        self._device_call(lambda: self.device.write_status(status | DeviceStatus.DRIVER_OK))
        self._ready()

    def _ready(self) -> None:
        """The device is live: the kicks that came before it reach it now."""
        self.ready = True
        pending, self.pending_kicks = self.pending_kicks, []
        for index in dict.fromkeys(pending):
            self._device_call(lambda: self.device.notify(index))
        if self.autorun:
            self.service()

    def service(self) -> None:
        """Let the device consume what is available, and deliver the interrupts it raised."""
        if self.device is None or not self.ready:
            return
        self._device_call(self.device.run)
        irq = self.device.take_interrupts()
        self.signal(irq.queues, irq.config)

    def signal(self, queues: frozenset[int] | set[int] = frozenset(), config: bool = False) -> None:
        """Used-buffer notifications for ``queues`` and, if ``config``, a configuration change."""
        inband = self.protocol_features & P.ProtocolFeature.INBAND_NOTIFICATIONS
        for index in sorted(queues):
            if inband:
                self._channel_send(P.message(P.BackendRequest.VRING_CALL, P.VRING_STATE.pack(index, 0)))
                continue
            fd = self.vrings[index].call if index in self.vrings else None
            if fd is not None:
                try:
                    os.write(fd, P.U64.pack(1))
                except OSError as e:
                    self._fail(f"call fd of vring {index}: {e}")
        if config:
            self._channel_send(P.message(P.BackendRequest.CONFIG_CHANGE_MSG))

    def _channel_send(self, data: bytes) -> None:
        if self.channel is None:
            self._fail("a notification needs the backend channel (BACKEND_REQ), which the frontend never set up")
            return
        self.trace.append(f"-> backend request {P.HEADER.unpack_from(data)[0]}")
        try:
            self.channel.sendall(data)
        except OSError as e:
            self._fail(f"backend channel: {e}")

    # -- lifetime ----------------------------------------------------------------------------------------
    def close(self) -> None:
        for v in self.vrings.values():
            for fd in (v.kick, v.call):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            v.kick = v.call = None
        for s in (self.channel, self.conn, self.listener):
            if s is not None:
                s.close()
        self.channel = self.conn = None
        try:
            os.unlink(self.path)
        except OSError:
            pass
