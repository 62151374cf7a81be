"""The QEMU-guest route: Linux's virtio_balloon in a real guest (Debian's cloud kernel under QEMU TCG),
bound over virtio-pci to QEMU 11.1's ``vhost-user-test-device-pci``, served by the reference device
through :class:`~conformance.adapters.linux.qemu_backend.QemuVhostBackend`.

The guest runs the UML route's agent (:data:`~conformance.adapters.linux.guest.AGENT`) from an
initramfs on the serial console, so the driver machine and the adapter's protocol are the UML route's;
what differs is how the guest starts and that device status comes from QEMU's trace.

Builds: the kernel is ``kernel:RELEASE`` (or a path to a provisioned build's ``vmlinuz``) and QEMU is
``qemu:sid``, both fetched by :mod:`conformance.provision` on first use.
"""

from __future__ import annotations

import hashlib
import lzma
import mmap
import os
import re
import stat
import struct
import subprocess
import zlib
import time
from collections.abc import Callable
from pathlib import Path

from refmodel.virtio.memory import GuestMemory

from conformance.harness import ImplementationError
from conformance.interface import DeviceUnderTest
from conformance.adapters.vhost_user.protocol import DEFAULT_PROTOCOL_FEATURES, ProtocolFeature
from conformance.adapters.linux.adapter import LinuxDriver
from conformance.adapters.linux.guest import AGENT, BUSYBOX, Guest, GuestError, cache_dir
from conformance.adapters.linux.qemu_backend import NUM_VQS, QemuVhostBackend
from conformance.adapters.linux.qemu_guest import _cpio_newc
from conformance.adapters.linux.qemu_trace import EVENTS

ROUTE = "qemu-guest"
DEFAULT_KERNEL = "bookworm"
QEMU_BUILD = "sid"  # the first with a user-creatable vhost-user-test-device-pci
QUEUE_SIZE = 256  # vq_size: as the UML route's rings, so the machine's queue limits are the same
MEM_MIB = 256
#: TCG guests are heavy and the host is shared: QEMU runs at this niceness (VIRTIO_CONFORMANCE_NICE).
NICE = int(os.environ.get("VIRTIO_CONFORMANCE_NICE", "10"))
#: Modules the guest needs besides virtio_balloon, where they are not built in.
TRANSPORT = ("virtio_pci",)
_LOAD = 'for m in $(cat /lib/order); do insmod /lib/$m || echo "insmod $m failed"; done\n'
#: The UML route's agent, with the virtio-pci transport loaded first.
QEMU_AGENT = AGENT.replace('echo "@@READY', _LOAD + 'echo "@@READY', 1)
#: Kernel options that only shorten the boot (``bench/bench_routes.py --compare`` measures them against a
#: plain boot); none reaches the virtio core, virtio_pci or virtio_balloon, nor the devices QEMU emulates.
#: ``cryptomgr.notests``: skip the crypto API's self-tests of every algorithm the kernel registers
#: (crypto_algapi_init and the per-algorithm test threads, the largest initcall cost under TCG); the
#: balloon driver uses no crypto. Measured and left out, as no gain showed under TCG: ``mitigations=off``,
#: ``no_timer_check``, ``i8042.noaux i8042.nokbd i8042.nopnp``, ``-machine hpet=off`` and qboot for SeaBIOS;
#: the delay loop is already skipped (lpj from the timer's frequency) and the console already quiet.
FAST_APPEND = ("cryptomgr.notests",)


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


def _modules(tree: Path) -> dict[str, Path]:
    out = {}
    for p in tree.rglob("*.ko*"):
        name = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", p.name).replace("-", "_")
        out.setdefault(name, p)
    return out


def _load_order(found: dict[str, Path], roots: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """(name, ELF bytes) of ``roots`` and what they depend on (their ``depends=`` modinfo), deps first."""
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in found:
            return  # built in
        seen.add(name)
        data = _module_bytes(found[name])
        m = re.search(rb"\0depends=([^\0]*)\0", data)
        for dep in (m.group(1).decode().split(",") if m and m.group(1) else []):
            visit(dep.replace("-", "_"))
        order.append((name, data))

    for r in roots:
        visit(r)
    return order


def build_initrd(modules_root: Path, release: str) -> Path:
    """The agent's initramfs for kernel ``release``, cached by kernel, agent and busybox."""
    if not os.access(BUSYBOX, os.X_OK):
        raise GuestError(f"{BUSYBOX} not found: install Debian's busybox-static")
    found = _modules(modules_root / release)
    if "virtio_balloon" not in found:
        raise GuestError(f"kernel {release}: no virtio_balloon module under {modules_root / release}")
    h = hashlib.sha256(QEMU_AGENT.encode() + Path(BUSYBOX).read_bytes() + found["virtio_balloon"].read_bytes())
    out = cache_dir() / "qemu-route" / f"{release}-{h.hexdigest()[:16]}.initrd"
    if out.exists():
        return out
    transport = _load_order(found, TRANSPORT)
    balloon = [m for m in _load_order(found, ("virtio_balloon",)) if m[0] not in {n for n, _ in transport}]
    entries: list[tuple[str, int, bytes, int]] = [
        (d, stat.S_IFDIR | 0o755, b"", 0) for d in ("bin", "dev", "proc", "sys", "w", "tmp", "lib")]
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5 << 8) | 1))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, Path(BUSYBOX).read_bytes(), 0))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    entries += [(f"bin/{a}", stat.S_IFLNK | 0o777, b"busybox", 0) for a in applets if a != "busybox"]
    load = [*transport, *balloon[:-1]]  # virtio_balloon itself is the agent's insmod
    entries += [(f"lib/{n}.ko", stat.S_IFREG | 0o644, data, 0) for n, data in load]
    entries.append(("lib/order", stat.S_IFREG | 0o644, "".join(f"{n}.ko\n" for n, _ in load).encode(), 0))
    entries.append(("virtio_balloon.ko", stat.S_IFREG | 0o644, balloon[-1][1], 0))
    entries.append(("init", stat.S_IFREG | 0o755, QEMU_AGENT.encode(), 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.write_bytes(_cpio_newc(entries))
    tmp.replace(out)
    return out


#: Decompressors of a bzImage's payload, by its magic: (magic, command or None for Python's own).
_PAYLOADS = ((b"\x1f\x8b", None), (b"\xfd7zXZ\x00", None), (b"\x28\xb5\x2f\xfd", ("zstd", "-dcq")),
             (b"\x02\x21\x4c\x18", ("lz4", "-dcq")))
_XEN_ELFNOTE_PHYS32_ENTRY = 18


def _pvh_entry(elf: bytes) -> bool:
    """Whether a whole 64-bit ELF kernel (every segment's bytes there) carries the PVH entry note QEMU
    boots it by."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    headers = [struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize) for i in range(phnum)]
    if any(off + size > len(elf) for _, _, off, _, _, size in headers):
        return False  # cut short: a decompressor that stopped early
    for kind, _, off, _, _, size in headers:
        pos, end = off, off + size
        while kind == 4 and pos + 12 <= end:  # PT_NOTE: (namesz, descsz, type, name, desc), 4-aligned
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_kernel(image: Path) -> Path | None:
    """The ELF ``vmlinux`` inside bzImage ``image``, cached, if it has a PVH entry; else None.

    QEMU boots such an ELF directly (its PVH option ROM after SeaBIOS), so the guest skips the bzImage's
    decompressor: unpacking some 50 MB under TCG is the largest single cost of the boot. It is the same
    kernel, byte for byte what the decompressor would have unpacked; the decompressor's KASLR is all it
    does not do, so the kernel sits at its link address (the balloon's pages come from the page
    allocator either way). Firmware, ACPI tables and PCI setup are SeaBIOS's as before."""
    data = image.read_bytes()
    out = cache_dir() / "qemu-route" / f"vmlinux-{hashlib.sha256(data).hexdigest()[:16]}"
    if out.exists():
        return out
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return None
    setup = ((data[0x1F1] or 4) + 1) * 512
    offset, length = struct.unpack_from("<II", data, 0x248)
    payload = data[setup + offset:setup + offset + length]
    elf = b""
    try:
        for magic, cmd in _PAYLOADS:
            if not payload.startswith(magic):
                continue
            if cmd:
                elf = subprocess.run(cmd, input=payload, capture_output=True, timeout=120).stdout
            elif magic == b"\x1f\x8b":
                elf = zlib.decompressobj(wbits=31).decompress(payload)
            else:
                elf = lzma.LZMADecompressor().decompress(payload)
    except (OSError, subprocess.SubprocessError, zlib.error, lzma.LZMAError):
        return None
    if not _pvh_entry(elf):
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.write_bytes(elf)
    tmp.replace(out)
    return out


class QemuGuest(Guest):
    """One QEMU process: console on its stdout/stdin (the agent), trace on its stderr (the backend's)."""

    def __init__(self, workdir: str, socket_path: str, ram_path: str, *, qemu: str, kernel: str, initrd: str,
                 mem_mib: int = MEM_MIB, init_on_free: bool = False,
                 extra_append: tuple[str, ...] = ()) -> None:
        self.workdir, self.mem_mib = workdir, mem_mib
        self.log_path = os.path.join(workdir, "console.log")
        self.log = open(self.log_path, "wb")
        append = " ".join(("console=ttyS0 loglevel=4 panic=-1 rdinit=/init", *extra_append)) \
            + (" init_on_free=1" if init_on_free else "")
        args = [qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-machine", "q35,memory-backend=ram0", "-accel", "tcg", "-smp", "1", "-m", f"{mem_mib}M",
                "-object", f"memory-backend-file,id=ram0,size={mem_mib}M,mem-path={ram_path},share=on",
                "-kernel", kernel, "-initrd", initrd, "-append", append,
                "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
                "-chardev", f"socket,id=vu0,path={socket_path}",
                "-device", f"vhost-user-test-device-pci,chardev=vu0,virtio-id=5,num_vqs={NUM_VQS},config_size=16,"
                           f"vq_size={QUEUE_SIZE}",
                *[a for e in EVENTS for a in ("-trace", e)]]
        self.cmdline = args
        trace_r, trace_w = os.pipe()
        try:
            nice = ["nice", "-n", str(NICE)] if NICE else []  # nice execs: QEMU keeps the pid and the group
            self.proc = subprocess.Popen([*nice, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=trace_w, cwd=workdir, start_new_session=True)
        except OSError as e:
            os.close(trace_r)
            raise GuestError(f"{qemu} does not start: {e}") from None
        finally:
            os.close(trace_w)
        self.trace_fd = trace_r
        os.set_blocking(trace_r, False)
        self._started()
        self.stderr_tail: Callable[[], list[str]] = lambda: []

    def console_tail(self, n: int = 30) -> str:
        tail = super().console_tail(n)
        other = self.stderr_tail()
        return tail + ("\nQEMU: " + "\nQEMU: ".join(other[-8:]) if other else "")

    def kill(self) -> None:
        super().kill()
        try:
            os.close(self.trace_fd)
        except OSError:
            pass


class QemuLinuxDriver(LinuxDriver):
    """:class:`LinuxDriver` with the guest in QEMU; statuses reach the device from QEMU's trace."""

    route = ROUTE

    def __init__(self, *, qemu: str, kernel: str, initrd: str, mem_mib: int = MEM_MIB,
                 extra_append: tuple[str, ...] = FAST_APPEND, **kwargs) -> None:
        super().__init__(mem_mib=mem_mib, **kwargs)
        self.qemu, self.kernel, self.initrd, self.extra_append = qemu, kernel, initrd, extra_append
        self._ram: mmap.mmap | None = None
        self.boot_seconds = 0.0

    def start(self, offered: int, device_factory: Callable[[GuestMemory], DeviceUnderTest], *,
              init_on_free: bool = False, protocol_features: int = DEFAULT_PROTOCOL_FEATURES) -> str:
        t0 = time.monotonic()
        # QEMU is the vhost-user frontend here, not the implementation under test: REPLY_ACK is always
        # offered, so QEMU waits for each SET_CONFIG's ack, which keeps config writes in order with the trace.
        protocol_features |= ProtocolFeature.REPLY_ACK
        sock = os.path.join(self.workdir, "balloon.sock")
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else self.workdir
        ram_path = os.path.join(shm, f"vc-ram-{os.getpid()}-{id(self):x}")
        size = self.mem_mib << 20
        fd = os.open(ram_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            self._ram = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._ram_path = ram_path
        mem = GuestMemory(buffer=self._ram, base=0)
        self.backend = backend = QemuVhostBackend(sock, offered, device_factory, mem,
                                                  protocol_features=protocol_features)
        try:
            self.guest = guest = QemuGuest(self.workdir, sock, ram_path, qemu=self.qemu, kernel=self.kernel,
                                           initrd=self.initrd, mem_mib=self.mem_mib, init_on_free=init_on_free,
                                           extra_append=self.extra_append)
        except GuestError as e:
            raise ImplementationError("start", str(e)) from None
        backend.trace_fd = guest.trace_fd
        guest.stderr_tail = lambda: backend.reader.other
        self._pump(lambda: guest.ready_release is not None, self.boot_timeout, "boot (QEMU guest)")
        self.boot_seconds = time.monotonic() - t0
        return guest.ready_release or ""

    def probe(self) -> bool:
        ok = super().probe()
        if ok:  # the sysfs status is the guest's; the device's DRIVER_OK comes from the trace
            assert self.backend is not None
            self._pump(lambda: self.backend.ready, 15.0, "DRIVER_OK from QEMU's trace")  # type: ignore[union-attr]
        return ok

    def close(self) -> None:
        super().close()
        if self._ram is not None:
            try:  # the guest's pages go back to /dev/shm now, even while the device still maps them
                self._ram.madvise(mmap.MADV_REMOVE)
            except (OSError, ValueError, AttributeError):
                pass
            try:
                self._ram.close()
            except BufferError:  # a view of it is still held (the device's memory): the GC unmaps it
                pass
            self._ram = None
        try:
            os.unlink(self._ram_path)
        except (AttributeError, OSError):
            pass


def kernel_build(name: str) -> tuple[Path, Path, str]:
    """(vmlinuz, modules root, release) of a provisioned kernel: a Debian release or a build's vmlinuz."""
    from conformance.provision import Kind, ProvisionError, provision

    if "/" in name:
        image = Path(name)
        root = image.parent
        release_file = root / "release"
        if not image.exists() or not release_file.exists() or not (root / "modules").is_dir():
            raise GuestError(f"{name}: not a provisioned kernel build (vmlinuz beside release and modules/)")
        return image, root / "modules", release_file.read_text().strip()
    try:
        p = provision(name, Kind.KERNEL)
    except ProvisionError as e:
        raise GuestError(str(e)) from None
    assert p.modules is not None
    return p.binary, p.modules, p.version


def qemu_build(name: str = QEMU_BUILD) -> tuple[str, str]:
    """(binary, version) of the QEMU that serves the guest."""
    if "/" in name:
        return name, "?"
    from conformance.provision import Kind, ProvisionError, provision

    try:
        p = provision(name, Kind.QEMU)
    except ProvisionError as e:
        raise GuestError(str(e)) from None
    return str(p.binary), p.version


class QemuLinuxFactory:
    """A fresh QEMU guest per example; kernel, initramfs and QEMU are prepared once, up front."""

    route = ROUTE
    #: Every example boots a TCG guest (a few seconds to the agent, more on a loaded host).
    profiles = {"dev": {"max_examples": 2, "stateful_step_count": 8},
                "ci": {"max_examples": 6, "stateful_step_count": 10},
                "nightly": {"max_examples": 30, "stateful_step_count": 20},
                "soak": {"max_examples": 80, "stateful_step_count": 25}}

    def __init__(self, kernel: str | None = None, qemu: str | None = None, *, fast_boot: bool = True) -> None:
        """``fast_boot=False`` boots as before the boot was shortened (the bzImage, without
        :data:`FAST_APPEND`), for ``bench/bench_routes.py --compare``."""
        kernel = kernel or os.environ.get("VIRTIO_CONFORMANCE_KERNEL") or DEFAULT_KERNEL
        image, modules, self.release = kernel_build(kernel)
        self.kernel = str(image)
        self.extra_append = FAST_APPEND if fast_boot else ()
        try:  # boot the unpacked kernel where it can be (pvh_kernel); the bzImage where not
            pvh = pvh_kernel(image) if fast_boot else None
        except (OSError, struct.error):
            pvh = None
        self.boot_image = str(pvh or image)
        self.qemu, qemu_version = qemu_build(qemu or QEMU_BUILD)
        try:
            self.initrd = str(build_initrd(modules, self.release))
        except (OSError, subprocess.SubprocessError, lzma.LZMAError) as e:
            raise GuestError(f"kernel {kernel}: cannot build the guest's initramfs: {e}") from None
        self.version = (f"Linux {self.release} virtio_balloon (route {ROUTE}: Debian cloud kernel {kernel} under "
                        f"QEMU {qemu_version} TCG, vhost-user-test-device-pci)")

    def __call__(self) -> QemuLinuxDriver:
        return QemuLinuxDriver(qemu=self.qemu, kernel=self.boot_image, initrd=self.initrd,
                               extra_append=self.extra_append)


def reproduce(kernel: str = DEFAULT_KERNEL) -> int:
    """INIT-DRV-5, standalone: boot the guest with the reference device offering STATS_VQ, load the driver,
    print the statuses and notifications QEMU traced, in order. Exit status 1 if a notification came
    before DRIVER_OK (the defect), 0 if not."""
    from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice

    factory = QemuLinuxFactory(kernel)
    drv = factory()
    try:
        drv.start(DEFAULT_OFFER, BalloonDevice)
        print(f"{factory.version}; booted in {drv.boot_seconds:.1f} s")
        print(f"probe: DRIVER_OK in sysfs: {drv.probe()}; driver features {drv.guest_features}")
        assert drv.backend is not None
        for line in drv.backend.trace:
            if line.startswith("<- trace"):
                print("  " + line[3:])
        early = drv.backend.early_notifies  # type: ignore[attr-defined]
        for index, status in early:
            print(f"INIT-DRV-5: queue {index} notified with device status {status:#04x}, before DRIVER_OK")
        return 1 if early else 0
    finally:
        drv.close()


def reproduce_inband_call(qemu: str | None = None, timeout: float = 20.0) -> int:
    """QEMU's vhost-user frontend acks VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS and then refuses the
    VHOST_USER_BACKEND_VRING_CALL that the feature lets a back-end send instead of writing the call fd
    (docs/interop/vhost-user.rst). No guest: QEMU starts paused with one vhost-user-test-device-pci, the
    reference backend offers the bit, and once the backend channel is up it sends one VRING_CALL for
    vring 0 with NEED_REPLY. QEMU's ``vhost_user_backend_init`` masks the offer only by the bits it knows
    (``VHOST_USER_PROTOCOL_FEATURE_MASK``); ``backend_read`` has no VRING_CALL case and answers 1. A guest
    then never hears of a used buffer: on the QEMU-guest route Linux waited forever for its stats and
    inflate acks. Exit status 1 when QEMU acks the bit and refuses the message (the defect), 0 if not."""
    import select
    import tempfile

    from refmodel.balloon.device import DEFAULT_OFFER, BalloonDevice

    from conformance.adapters.vhost_user import protocol as P

    binary, version = qemu_build() if qemu is None else (qemu, qemu)
    with tempfile.TemporaryDirectory(prefix="vc-inband-") as work:
        sock, ram_path = os.path.join(work, "balloon.sock"), os.path.join(work, "ram")
        size = MEM_MIB << 20
        with open(ram_path, "wb") as f:
            f.truncate(size)
        with open(ram_path, "r+b") as f:
            ram = mmap.mmap(f.fileno(), size)
        offer = DEFAULT_PROTOCOL_FEATURES | ProtocolFeature.REPLY_ACK | ProtocolFeature.INBAND_NOTIFICATIONS
        backend = QemuVhostBackend(sock, DEFAULT_OFFER, BalloonDevice, GuestMemory(buffer=ram, base=0),
                                   protocol_features=offer)
        args = [binary, "-nodefaults", "-no-user-config", "-display", "none", "-S", "-machine",
                "q35,memory-backend=ram0", "-accel", "tcg", "-m", f"{MEM_MIB}M", "-object",
                f"memory-backend-file,id=ram0,size={MEM_MIB}M,mem-path={ram_path},share=on",
                "-chardev", f"socket,id=vu0,path={sock}", "-device",
                f"vhost-user-test-device-pci,chardev=vu0,virtio-id=5,num_vqs={NUM_VQS},config_size=16"]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            end = time.monotonic() + timeout
            while backend.channel is None or not backend.protocol_features:
                if time.monotonic() > end or proc.poll() is not None:
                    print(f"QEMU ({version}) never set up the backend channel; trace: {list(backend.trace)[-5:]}")
                    return 2
                backend.poll(0.1)
            acked = bool(backend.protocol_features & ProtocolFeature.INBAND_NOTIFICATIONS)
            print(f"{version}: offered protocol features {int(offer):#x}, QEMU set {backend.protocol_features:#x} "
                  f"(INBAND_NOTIFICATIONS {'acked' if acked else 'not acked'})")
            channel, backend.channel = backend.channel, None  # read here: QEMU's reply must not reach the backend
            channel.sendall(P.message(P.BackendRequest.VRING_CALL, P.VRING_STATE.pack(0, 0),
                                      flags=P.VERSION | P.FLAG_NEED_REPLY))
            reply = b""
            while len(reply) < P.HEADER.size + 8 and time.monotonic() < end:
                backend.poll(0.05)  # QEMU may still be realizing the device, waiting on its messages
                if select.select([channel], [], [], 0.05)[0]:
                    try:
                        chunk = channel.recv(64)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        break
                    reply += chunk
            status = int.from_bytes(reply[P.HEADER.size:P.HEADER.size + 8], "little") \
                if len(reply) >= P.HEADER.size + 8 else None
            proc.terminate()
            try:
                err = proc.communicate(timeout=10)[1].decode(errors="replace").strip().splitlines()
            except subprocess.TimeoutExpired:
                proc.kill()
                err = []
            said = next((ln for ln in err if "unexpected" in ln.lower()), err[-1] if err else "nothing")
            refused = status != 0  # an error, or no reply at all
            print(f"VHOST_USER_BACKEND_VRING_CALL (vring 0, NEED_REPLY): "
                  f"{'reply ' + str(status) if status is not None else 'no reply'}; QEMU said: {said}")
            if acked and refused:
                print("INBAND_NOTIFICATIONS is acked but VRING_CALL is refused: a back-end that uses it is never "
                      "heard (QEMU defect)")
            return 1 if acked and refused else 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            backend.close()
            del backend  # the reference device holds a view of the RAM until it goes


if __name__ == "__main__":  # pragma: no cover
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m conformance.adapters.linux.qemu_route",
                                 description="Boot Linux on the QEMU-guest route once and show what QEMU traced.")
    ap.add_argument("--reproduce", choices=("init-drv-5", "inband-call"), default="init-drv-5",
                    help="inband-call: QEMU acks INBAND_NOTIFICATIONS and refuses VRING_CALL (no guest)")
    ap.add_argument("kernel", nargs="?", default=DEFAULT_KERNEL, help="bookworm (6.1), trixie (6.12), sid (7.2)")
    a = ap.parse_args()
    try:
        sys.exit(reproduce_inband_call() if a.reproduce == "inband-call" else reproduce(a.kernel))
    except (GuestError, ImplementationError) as e:
        print(f"qemu_route: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
