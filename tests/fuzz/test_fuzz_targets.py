"""A short run of every fuzz target (the long one is bench/bench_fuzz.py), and a regression test for
each thing fuzzing found.

Each target runs on its committed seeds, then on mutations of them and on random bytes, with a fixed
seed: nothing may end in a :class:`fuzz.harness.Finding`.
"""

import random
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the fuzz package lives at the top of the tree, beside the installed ones

from conformance.adapters.c import adapter as A  # noqa: E402
from conformance.adapters.qemu.qmp import QmpError  # noqa: E402
from conformance.adapters.qemu.qtest import QtestClient, QtestError  # noqa: E402
from conformance.cli import load_known_deviations  # noqa: E402
from conformance.registry import DutError  # noqa: E402
from fuzz import make_corpus  # noqa: E402
from fuzz.c_adapter import FakeLib  # noqa: E402
from fuzz.harness import Finding, guarded_target  # noqa: E402
from fuzz.layout import Reader, Writer  # noqa: E402
from fuzz.qemu import FakeSocket, qmp_reply  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402
from refmodel.balloon.stats import _STAT, KNOWN_STAT_TAGS  # noqa: E402
from refmodel.errors import PeerSpecViolation  # noqa: E402
from refmodel.virtio.memory import GuestMemory  # noqa: E402
from refmodel.virtio.virtq import Buffer, Chain  # noqa: E402
from spec.catalogue import CatalogueError, load  # noqa: E402

CORPUS = ROOT / "fuzz" / "corpus"
RANDOM_INPUTS = 2000  # per target, half mutated seeds and half random bytes: the file stays within seconds


def seeds(name):
    return [p.read_bytes() for p in sorted((CORPUS / name).iterdir())]


def mutate(rng, data):
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b[rng.randrange(len(b) + 1):0] = rng.randbytes(rng.randint(1, 16))
        elif b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def params():
    return list(_params())


def _params():
    for name in sorted(TARGETS):
        yield name


def test_corpus_is_what_make_corpus_writes():
    made = make_corpus.seeds()
    assert set(made) == set(TARGETS) == {p.name for p in CORPUS.iterdir()}
    for name, inputs in made.items():
        assert sorted(inputs) == sorted(seeds(name)), f"{name}: run python -m fuzz.make_corpus"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_are_valid_inputs(name):
    """Seeds are the reference's valid output: most end in a result, so fuzzing starts deep."""
    raw = TARGETS[name].__wrapped__
    results = 0
    for data in seeds(name):
        try:
            raw(data)
            results += 1
        except (PeerSpecViolation, QmpError):
            pass
    assert results >= 1


@pytest.mark.parametrize("name", params())
def test_target_short_run(name):
    target, rng = TARGETS[name], random.Random(f"fuzz-{name}")
    corpus = seeds(name)
    for data in corpus:
        target(data)
    for i in range(RANDOM_INPUTS):
        target(mutate(rng, rng.choice(corpus)) if i % 2 else rng.randbytes(rng.randrange(0, 600)))


def test_harness_flags_other_exceptions_and_super_linear_time():
    def boom(_):
        raise IndexError("list index out of range")
    with pytest.raises(Finding, match="IndexError"):
        guarded_target(boom)(b"x")
    with pytest.raises(Finding, match="not one line"):
        guarded_target(lambda _: (_ for _ in ()).throw(QtestError("two\nlines")), (QtestError,))(b"")
    guarded_target(lambda _: (_ for _ in ()).throw(QtestError("one line")), (QtestError,))(b"")


def test_harness_bounds_cpu_time_not_waiting(monkeypatch):
    """The bound is on CPU time: an input that computes past it is a finding, one whose process waits for a
    core (nice 19 on busy shared cores) is not."""
    import time

    from fuzz import harness
    monkeypatch.setattr(harness, "TIME_FIXED", 0.02)

    def spin(_):
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
    with pytest.raises(Finding, match="took"):
        guarded_target(spin)(b"")
    guarded_target(lambda _: time.sleep(0.05))(b"")


def test_layout_writer_is_read_back():
    data = Writer().int(0, 3, 2).bool(True).int(0, 2**64 - 1, 12345).pick([8, 4], 4).bytes(b"ab").done()
    rd = Reader(data)
    got = (rd.int(0, 3), rd.bool(), rd.int(0, 2**64 - 1), rd.pick([8, 4]), rd.bytes(2))
    assert got == (2, True, 12345, 4, b"ab")
    assert Reader(b"").int(5, 9) == 5  # past the end: the lowest value


# -- regressions: one per finding ---------------------------------------------------------------------------
@pytest.mark.parametrize("reply, op, match", [
    (b"OK zz\n", "readb", "not a hex value"),
    (b"OK 0x1ff\n", "readb", "does not fit 8 bits"),
    (b"OK 0x10000\n", "inw", "does not fit 16 bits"),
    (b"OK -0x1\n", "readl", "does not fit 32 bits"),
])
def test_qtest_reply_that_is_not_a_value_of_its_width(reply, op, match):
    """Found: int(reply, 16) let ValueError out, and a too-wide value through."""
    with pytest.raises(QtestError, match=match):
        getattr(QtestClient(FakeSocket([reply])), op)(0x1000)
    assert QtestClient(FakeSocket([b"IRQ raise 1\nOK 0xff\n"])).readb(0x1000) == 0xFF


@pytest.mark.parametrize("line, match", [
    (b'{"return": "\xff"}', "not UTF-8"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"error": 1}', "malformed"),
])
def test_qmp_reply_garbage_is_one_line_of_qmp_error(line, match):
    """Found: UnicodeDecodeError and RecursionError came out of qemu.qmp's parsing; BadReplyError's text
    ran over several lines."""
    with pytest.raises(QmpError, match=match) as exc:
        qmp_reply(line)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("call, args, value", [
    ("read_status", (), 0x100), ("hint_start", (), 1 << 32), ("queue_max_size", (0,), 1 << 16),
    ("read_config", (0, 1), 0x100),
])
def test_c_result_outside_its_width_is_a_cdevice_error(call, args, value):
    """Found: a C library's status, command ID, queue size or config byte went through unchecked."""
    data = Writer().int(0, 2**64 - 1, value).int(0, 2**64 - 1, value).done()
    lib = FakeLib(Reader(data))
    lib._value = lambda restype: value  # every call answers ``value``
    dev = A.CDevice(lib, GuestMemory(buffer=bytearray(4096)))
    with pytest.raises(A.CDeviceError, match="does not fit"):
        getattr(dev, call)(*args)
    lib._value = lambda restype: value - 1  # the widest valid value is still a result
    assert getattr(dev, call)(*args) == value - 1


def test_catalogue_not_utf8_is_a_catalogue_error(tmp_path):
    """Found: Path.read_text let UnicodeDecodeError out of the loader."""
    p = tmp_path / "requirements.toml"
    p.write_bytes(b"[[requirement]]\nid = \"\xff\"\n")
    with pytest.raises(CatalogueError, match="not UTF-8"):
        load(p)


def test_known_deviations_not_utf8_is_a_dut_error(tmp_path):
    """Found: conformance/cli.py known_deviations_text let UnicodeDecodeError out of read_text (all
    144,455 of the first bench_fuzz run's other exceptions)."""
    p = tmp_path / "deviations.txt"
    p.write_bytes(b"SPLIT-DRV-1\n\xff\n")
    with pytest.raises(DutError, match=re.escape(f"{p}: not UTF-8 text (byte 12)")) as exc:
        load_known_deviations(str(p))
    assert "\n" not in str(exc.value)
    TARGETS["known_deviations"](p.read_bytes())


class CountingMemory(GuestMemory):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.reads = 0

    def read(self, addr, length):
        self.reads += 1
        return super().read(addr, length)


def test_stats_buffer_is_read_once_not_once_per_entry():
    """Found: on_statsq re-read the whole chain for each 10-byte entry, quadratic in the buffer's length
    (a 1 MiB stats buffer is ~100,000 reads of 1 MiB)."""
    from refmodel.balloon.device import BalloonDevice
    mem = CountingMemory(buffer=bytearray(1 << 16))
    dev = BalloonDevice(mem)
    entries = b"".join(_STAT.pack(t, t * 1000) for t in range(300))
    mem.write(0x1000, entries)
    half = 1500
    chain = Chain(0, (Buffer(0x1000, half), Buffer(0x1000 + half, len(entries) - half)), ())
    dev._stats_requested = True
    mem.reads = 0
    assert dev.on_statsq(chain) == 0
    assert mem.reads <= len(chain.readable)
    assert dev.stats == {t: t * 1000 for t in KNOWN_STAT_TAGS} and dev.stats_tags == frozenset(range(300))


class ContainsCountingMemory(GuestMemory):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.contains_calls = 0

    def contains(self, addr, length):
        self.contains_calls += 1
        return super().contains(addr, length)


@pytest.mark.parametrize("queue, ballooned, pfns, req, named", [
    ("inflateq", 0, [3, 3, 3], None, None),  # a page twice in one buffer is not a page already ballooned
    ("inflateq", 1 << 7, [3, 7, 9, 7], "BAL-OP-DRV-6", 7),
    ("inflateq", 0, [3, 40, 2, 99], "BAL-OP-D1", 40),
    ("deflateq", 0b11101, [2, 3, 3], None, None),
    ("deflateq", 0b11101, [2, 5, 1], "BAL-OP-DRV-10", 5),
    ("deflateq", 0b11101, [2, 0x10000, 5], "BAL-OP-D1", 0x10000),
])
def test_pfn_array_is_checked_at_once_and_names_its_first_bad_pfn(queue, ballooned, pfns, req, named):
    """Found: inflate/deflate checked a PFN array one PFN at a time (~2 ms a 4-page buffer, instrumented),
    the slowest targets. Now a few calls per array; an error still names the first offending PFN."""
    from refmodel.balloon.device import BalloonDevice
    mem = ContainsCountingMemory(buffer=bytearray(32 * 4096))
    dev = BalloonDevice(mem)
    dev.ballooned = ballooned
    data = b"".join(p.to_bytes(4, "little") for p in pfns) + bytes(4 * 4096)  # 4096 zero PFNs follow
    mem.write(0x8000, data)
    chain = Chain(0, (Buffer(0x8000, len(data)),), ())
    handler = dev.on_inflateq if queue == "inflateq" else dev.on_deflateq
    if req is None:
        assert handler(chain) == 0
        pages = sum(1 << p for p in {0, *pfns})
        assert dev.ballooned == (ballooned | pages if queue == "inflateq" else ballooned & ~pages)
        assert mem.contains_calls <= 2 + 2 * len(chain.readable)  # not one per PFN
    else:
        with pytest.raises(PeerSpecViolation, match=f"{queue} PFN {named:#x}|of PFN {named:#x}") as exc:
            handler(chain)
        assert exc.value.req_id == req
