"""rust-vmm's virtio-queue (Debian trixie 0.14.0, sid 0.18.0) as a device-side split virtqueue: the
shim builds from the packaged crates (cached), a small ci-level run gives the verdicts committed in
results/, the standalone reproducer shows the one deviation, and bad input maps to the driver
requirement or to one error line. Skipped only when the Debian mirror cannot be reached."""

from __future__ import annotations

import json
import mmap
import re
from pathlib import Path

import attrs
import pytest

from conformance.adapters.rust_vmm import adapter, provision
from conformance.adapters.rust_vmm.adapter import RustVmmError
from conformance.adapters.rust_vmm.provision import ProvisionError, RegistryUnreachable
from conformance.adapters.rust_vmm.reproduce import reproduce
from conformance.registry import DutError, resolve
from conformance.runner import run
from refmodel.errors import PeerSpecViolation
from refmodel.virtio.constants import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE
from refmodel.virtio.memory import GuestMemory
from refmodel.virtio.split.driver import SplitQueueDriver
from refmodel.virtio.split.layout import AVAIL_IDX, DESC_FMT, USED_IDX, VIRTQ_DESC_SIZE, avail_ring_entry
from refmodel.virtio.virtq import QueueAddresses, u16

RESULTS = Path(__file__).resolve().parents[2] / "results"
VERSIONS = tuple(provision.RELEASES)
EXAMPLES = 100  # of the ci profile's 300: enough to meet the failure; the rest of the budget is shrinking
MEM, RING, BUF = 0x20000, 0x1000, 0x8000
#: Met by every run: a requirement no small run can miss.
CORE = {"SPLIT-DEV-1", "SPLIT-DEV-3", "SPLIT-DEV-5", "SPLIT-DEV-10", "SPLIT-DEV-14", "SPLIT-DEV-D1", "SPLIT-DEV-D2",
        "SPLIT-DEV-D3"}


@pytest.fixture(scope="module", params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    try:
        provision.shim_library(request.param)  # cached after the first run
    except RegistryUnreachable as e:
        pytest.skip(f"the Debian mirror is unreachable and nothing is cached: {e}")
    return request.param


class _Few:
    """The adapter's factory with the ci profile cut to ``EXAMPLES`` examples (the runner reads ``profiles``)."""

    def __init__(self, make: object) -> None:
        self.make, self.profiles = make, {"ci": {"max_examples": EXAMPLES}}

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.make(*args, **kwargs)  # type: ignore[operator]


def test_ci_run_gives_the_committed_verdicts(version: str) -> None:
    name = f"conformance.adapters.rust_vmm.adapter:make_{version.replace('.', '')}"
    impl = resolve(name, "device", level="virtqueue")
    res = run(attrs.evolve(impl, factory=_Few(impl.factory)), "ci", max_failures=4)
    assert not res.errors, res.errors
    got = {v.requirement.id: v.verdict for v in res.verdicts}
    committed = json.loads((RESULTS / f"rust-vmm-virtio-queue-{version}.json").read_text(encoding="utf-8"))
    want = {r["id"]: r["verdict"] for r in committed["requirements"]}
    assert {k for k, v in got.items() if v == "fail"} == {k for k, v in want.items() if v == "fail"} == {"SPLIT-DEV-9"}
    # A shorter run may not reach every check the nightly one passed; it never disagrees otherwise.
    differ = {k: (got[k], want[k]) for k in want if got[k] != want[k] and (got[k], want[k]) != ("skipped", "pass")}
    assert differ == {}
    assert CORE <= {k for k, v in got.items() if v == "pass"}


def test_the_standalone_reproducer_shows_split_dev_9(version: str) -> None:
    hit, text = reproduce(version, "no_interrupt")
    assert hit, text
    assert "needs_notification() = true" in text and provision.RELEASES[version].crate in text


# -- the adapter on hand-written rings ----------------------------------------------------------------------
def _queue(version: str, qs: int = 8, *, start: int = 0, indirect: bool = False, buffer: object = None,
           addrs: QueueAddresses | None = None) -> tuple[GuestMemory, QueueAddresses, adapter.RustVmmQueue]:
    mem = GuestMemory(buffer=buffer) if buffer is not None else GuestMemory(MEM)
    addrs = addrs or QueueAddresses.packed_at(RING, qs)
    return mem, addrs, adapter.factory(version)(mem, addrs, qs, indirect_desc=indirect, start_idx=start)


def _offer(mem: GuestMemory, addrs: QueueAddresses, qs: int, descs: list[tuple[int, int, int, int]],
           heads: list[int], start: int = 0, *, table: int | None = None) -> None:
    """Write ``descs`` (addr, len, flags, next) at ``table`` (the descriptor table by default) and make
    ``heads`` available from ring slot ``start``."""
    base = addrs.desc if table is None else table
    for i, d in enumerate(descs):
        mem.pack(DESC_FMT, base + VIRTQ_DESC_SIZE * i, *d)
    if table is not None:
        return
    for k, head in enumerate(heads):
        mem.write_u16(addrs.avail + avail_ring_entry((start + k) % qs), head)
    mem.write_u16(addrs.avail + AVAIL_IDX, u16(start + len(heads)))


@pytest.mark.parametrize("backing", ["bytearray", "mmap"])
def test_a_round_trip_lands_in_the_suites_memory(version: str, backing: str) -> None:
    """A bytearray is not page-aligned (the shim mirrors it); an mmap is (vm-memory maps it in place)."""
    buffer = bytearray(MEM) if backing == "bytearray" else mmap.mmap(-1, MEM)
    mem, addrs, q = _queue(version, 8, start=0xFFFE, buffer=buffer)
    drv = SplitQueueDriver(mem, addrs, 8, start_idx=0xFFFE, scrub_used=True, check_device_writes=True)
    mem.write(BUF, b"hello")
    for tok in range(3):  # crosses the u16 wrap
        head = drv.add([(BUF, 5)], [(BUF + 0x100, 16)], token=tok)
        drv.publish()
        assert q.available() == 1
        chain = q.pop()
        assert chain is not None and chain.head == head and chain.read_all(mem) == b"hello"
        assert chain.writable_len == 16 and not chain.indirect
        chain.write_all(mem, b"x" * 4)
        q.add_used(head, 4)
        assert q.notify_needed()  # avail flags 0: SPLIT-DEV-10
        assert [(u.token, u.len) for u in drv.harvest()] == [(tok, 4)]
    assert q.pop() is None and q.available() == 0
    assert mem.read_u16(addrs.used + USED_IDX) == 1


def test_indirect_chains_are_followed(version: str) -> None:
    mem, addrs, q = _queue(version, 4, indirect=True)
    table = 0x6000
    _offer(mem, addrs, 4, [(BUF, 8, VIRTQ_DESC_F_NEXT, 1), (BUF + 8, 8, VIRTQ_DESC_F_WRITE, 0)], [], table=table)
    _offer(mem, addrs, 4, [(table, 32, VIRTQ_DESC_F_INDIRECT, 0)], [0])
    chain = q.pop()
    assert chain is not None and chain.indirect
    assert [(b.addr, b.len) for b in chain.readable] == [(BUF, 8)]
    assert [(b.addr, b.len) for b in chain.writable] == [(BUF + 8, 8)]


N, W, I = VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT


@pytest.mark.parametrize("descs, heads, req", [
    ([(BUF, 8, N, 9)], [0], "SPLIT-DRV-D2"),  # next beyond the table
    ([(BUF, 8, 0, 0)], [12], "SPLIT-DRV-D2"),  # head beyond the table
    ([(BUF, 8, N, 1), (BUF, 8, N, 0)], [0], "SPLIT-DRV-4"),  # a loop
    ([(0x6000, 20, I, 0)], [0], "SPLIT-DRV-D4"),  # an indirect table of 20 bytes
], ids=["next", "head", "loop", "indirect-len"])
def test_a_chain_virtio_queue_cuts_short_names_the_driver_requirement(version: str, descs: list, heads: list,
                                                                      req: str) -> None:
    mem, addrs, q = _queue(version, 8, indirect=True)
    _offer(mem, addrs, 8, descs, heads)
    with pytest.raises(PeerSpecViolation, match=req) as exc:
        q.pop()
    assert f"virtio-queue {provision.RELEASES[version].crate} ended the chain" in str(exc.value)


def test_avail_idx_errors_name_the_driver_requirement(version: str) -> None:
    mem, addrs, q = _queue(version, 4, start=100)
    mem.write_u16(addrs.avail + AVAIL_IDX, 100 + 5)  # five chains on a queue of four
    with pytest.raises(PeerSpecViolation, match="SPLIT-DRV-D3"):
        q.pop()
    mem.write_u16(addrs.avail + AVAIL_IDX, 99)  # one step back
    with pytest.raises(PeerSpecViolation, match="SPLIT-DRV-11"):
        q.available()


def test_misplaced_rings_name_the_driver_requirement(version: str) -> None:
    with pytest.raises(PeerSpecViolation, match="SPLIT-DRV-1"):
        _queue(version, 8, addrs=QueueAddresses(RING + 8, RING + 0x200, RING + 0x400))
    with pytest.raises(PeerSpecViolation, match="SPLIT-DRV-D5"):
        _queue(version, 8, addrs=QueueAddresses(RING, RING + 0x200, MEM - 8))


def test_caller_errors_are_one_line(version: str) -> None:
    _, _, q = _queue(version, 8)
    with pytest.raises(RustVmmError, match="vq_add_used: virtio-queue error: InvalidDescriptorIndex"):
        q.add_used(8, 0)  # virtio-queue's own check: head >= queue size
    with pytest.raises(ValueError, match="head=70000 does not fit 16 bits"):
        q.add_used(70000, 0)


# -- lookup and provisioning errors ----------------------------------------------------------------------------
def test_factories_are_looked_up_by_name(version: str) -> None:
    make = getattr(adapter, f"make_{version.replace('.', '')}")
    assert callable(make) and provision.RELEASES[version].crate in (make.__doc__ or "")
    with pytest.raises(AttributeError):
        adapter.make_099  # noqa: B018


def test_provisioning_failures_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(provision, "mirror", lambda sources=None: "http://127.0.0.1:9/debian")
    with pytest.raises(RegistryUnreachable) as exc:
        provision.fetch(provision.RELEASES["0.18"])
    assert str(exc.value).startswith("rust-vmm virtio-queue 0.18.0 (Debian sid): apt-get update")
    assert "\n" not in str(exc.value)
    monkeypatch.setattr(adapter, "factory", lambda v: (_ for _ in ()).throw(ProvisionError("no build")))
    monkeypatch.delitem(vars(adapter), "make_014", raising=False)
    with pytest.raises(DutError, match="^no build$"):
        resolve("conformance.adapters.rust_vmm.adapter:make_014", "device", level="virtqueue")


def test_a_version_debian_does_not_ship_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        provision.fetch(provision.Release("9.9", "sid", "9.9.9", check_valid_until=False))
    except RegistryUnreachable as e:
        pytest.skip(f"the Debian mirror is unreachable: {e}")
    except ProvisionError as e:
        assert re.fullmatch(rf"rust-vmm virtio-queue 9\.9\.9 \(Debian sid\): Debian sid has {provision.PACKAGE} "
                            r"\S+, this build pins 9\.9\.9 \(update RELEASES in provision\.py\)", str(e)), str(e)
    else:
        pytest.fail("fetch accepted a version Debian does not ship")
