"""Judge the hinting proposals with the model: the "nothing lost" invariant of
:mod:`refmodel.system.migration`, under each hinting semantics and host policy, searched exhaustively.

Semantics: ``lock-free`` (virtio 1.4: a hinted page may be reused at any time, ``BAL-FPH-DRV-7``) and
``wait-on-ack`` (profile ``hint-wait-on-ack``: reused only after its buffer is used, ``PROP-HWA-DRV-1``).
Host policies: the safe QEMU-like host, the unsafe ones of :data:`UNSAFE_POLICIES` (``discard_hinted`` is
Firecracker's discard-at-once), and ``discard_after_used``: a discarding host that uses the buffer first
and discards afterwards (what ``PROP-HWA-DEV-1`` forbids).

:func:`judge` runs a breadth-first search over every interleaving of guest, driver, device and host
steps on the real model (each history replayed from scratch; states deduplicated by a fingerprint of
every plain attribute and the ring pages), so the first history that breaks an invariant is a shortest
one. Invariants: the source is intact, nothing is lost at switchover, hinted pages come back after the
migration ends.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import attrs

from refmodel.balloon.proposals.hint_wait_on_ack import WaitOnAckDriver
from refmodel.errors import VirtioModelError
from refmodel.system.guest import bits, range_mask
from refmodel.system.migration import SAFE, UNSAFE_POLICIES, HostPolicy, MigrationState
from refmodel.system.scenario import HintingSystem
from refmodel.virtio.split.layout import avail_ring_entry

SEMANTICS = ("lock-free", "wait-on-ack")
_DESC = struct.Struct("<QIHH")


@attrs.frozen
class JudgePolicy:
    """A host policy of :mod:`refmodel.system.migration`, and one only a discarding host gets wrong."""

    host: HostPolicy = SAFE
    #: Discard accepted hints after using their buffer, at the device's next turn (breaks PROP-HWA-DEV-1).
    discard_after_used: bool = False


POLICIES: dict[str, JudgePolicy] = {
    "safe": JudgePolicy(),
    **{name: JudgePolicy(p) for name, p in UNSAFE_POLICIES.items()},
    "discard_after_used": JudgePolicy(HostPolicy(discard_hinted=True), discard_after_used=True),
}


class JudgedSystem(HintingSystem):
    """:class:`HintingSystem` under either semantics, with the late-discarding host as an extra policy."""

    def __init__(self, n_pages: int, policy: JudgePolicy, *, wait_on_ack: bool) -> None:
        super().__init__(n_pages, policy.host)
        self.judge_policy, self.wait_on_ack = policy, wait_on_ack
        if wait_on_ack:
            self.driver = WaitOnAckDriver(lambda: self.config.get("free_page_hint_cmd_id"), self.vq_drv,
                                          self.guest, id_area=self.scratch, stop_buf=self.scratch + 64)
        self.late = 0  # accepted hints whose discard waits for the device's next turn
        self.ended_seen = False  # the driver read the config after the migration ended

    def _apply(self, pages: int) -> None:
        if not self.judge_policy.discard_after_used:
            super()._apply(pages)
            return
        self.late |= pages
        if self.migration is not None:
            self.migration.apply_hint(pages)

    def host_discard_late(self) -> None:
        self.guest.device_discard(self.late)
        self._log(f"host discards pages {bits(self.late)} after using their buffers")
        self.late = 0

    def reclaimable(self) -> int:
        hinted = self.guest.hinted & range_mask(0, self.n_pages)
        return hinted & self.driver.acked if isinstance(self.driver, WaitOnAckDriver) else hinted

    def reclaim(self, page: int) -> None:
        if isinstance(self.driver, WaitOnAckDriver):
            self.driver.reclaim(page)
            self._log(f"guest reclaims acked hinted page {page} and writes it")
        else:
            self.reclaim_hinted(page)

    def driver_reap(self) -> None:
        assert isinstance(self.driver, WaitOnAckDriver)
        n = self.driver.reap()
        self._log(f"driver collects ACKs: {n} hinted page(s) reusable")

    def driver_config_change(self) -> None:
        super().driver_config_change()
        if self.migration is not None and self.migration.state is not MigrationState.ACTIVE:
            self.ended_seen = True

    # -- invariants ---------------------------------------------------------------------------------------
    def broken(self) -> str | None:
        if bad := self.guest.corrupted():
            return f"the device changed in-use page(s) {bad} on the source"
        m = self.migration
        if m is not None and m.state is MigrationState.COMPLETED and (lost := m.lost_pages()):
            return f"page(s) {lost} arrived with the wrong contents on the destination"
        d = self.driver
        held = d.in_flight | d.release_on_ack if isinstance(d, WaitOnAckDriver) else 0
        if self.ended_seen and not held and (leaked := self.guest.hinted & range_mask(0, self.n_pages)):
            return f"hinted page(s) {bits(leaked)} never returned to the guest after migration ended"
        return None


Action = tuple[str, int]


def _actions(s: JudgedSystem) -> Iterator[Action]:
    workload = s.guest.allocated & range_mask(0, s.n_pages)
    m = s.migration
    if m is None or m.state is MigrationState.ACTIVE:
        if s.guest.free & range_mask(0, s.n_pages):
            yield "alloc_write", 0
        for p in bits(workload):
            yield "write", p
            yield "free", p
    if m is None:
        yield "migration_start", 0
        return
    yield "driver_config_change", 0
    yield "device_process", 0
    if s.late:
        yield "host_discard_late", 0
    if isinstance(s.driver, WaitOnAckDriver):
        yield "driver_reap", 0
    if m.state is MigrationState.ACTIVE:
        yield "driver_hint", 0
        for p in bits(s.reclaimable()):
            yield "reclaim", p
        yield "migration_sync", 0
        yield "migration_send", 1
        yield "switchover", 0
        yield "cancel", 0


_DO: dict[str, Callable[[JudgedSystem, int], object]] = {
    "alloc_write": lambda s, _: s.alloc_write(),
    "write": lambda s, p: s.write(p),
    "free": lambda s, p: s.free(p),
    "reclaim": lambda s, p: s.reclaim(p),
    "driver_config_change": lambda s, _: s.driver_config_change(),
    "driver_hint": lambda s, _: s.driver_hint(),
    "driver_reap": lambda s, _: s.driver_reap(),
    "device_process": lambda s, _: s.device_process(),
    "host_discard_late": lambda s, _: s.host_discard_late(),
    "migration_start": lambda s, _: s.migration_start(),
    "migration_sync": lambda s, _: s.migration_sync(),
    "migration_send": lambda s, n: s.migration_send(n),
    "switchover": lambda s, _: s.switchover(),
    "cancel": lambda s, _: s.cancel(),
}

#: History, not state: logs and counters that no step reads, and contents, which are compared normalized.
_SKIP = {"trace", "stats", "_dirtied", "_version", "ram", "expected", "dest", "sent_under", "applied_pages",
         "received_pages", "ignored_hints", "config_notifications", "part_page_hints", "whole_page_hints",
         "device_ended_rounds", "stops_after_device_end", "stops_returned", "acks"}


def _plain(v: object) -> object:
    if v is None or isinstance(v, (int, str, float)):
        return v
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    if isinstance(v, (set, frozenset)):
        return frozenset(_plain(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((repr(k), _plain(x)) for k, x in v.items()))
    return getattr(v, "value", type(v).__name__)  # enums by value; other objects are walked separately


def _token(s: JudgedSystem, token: object, descs: list[int]) -> object:
    """A chain as what it carries: an ID buffer by the ID in it, a hint by its pages."""
    if isinstance(token, tuple) and token[0] == "id":
        return "id", s.mem.read_u32(token[1])
    where = tuple(s.mem.unpack(_DESC, s.vq_drv.addrs.desc + 16 * d)[:2] for d in descs)
    return _plain(token), where


def _ring(s: JudgedSystem) -> tuple:
    """The queue as its contents: chains available, held by the device, used but not harvested. Ring
    indices and descriptor numbers are left out: they grow with history, not with state."""
    drv, dev = s.vq_drv, s.vq_dev
    chains = {h: _token(s, f.token, f.descs) for h, f in drv._in_flight.items()}
    avail = []
    i = dev.last_avail_idx
    while i != drv.avail_idx:
        avail.append(s.mem.read_u16(drv.addrs.avail + avail_ring_entry(i % drv.queue_size)))
        i = (i + 1) & 0xFFFF
    held = sorted(dev._in_flight)
    used = sorted(set(chains) - set(avail) - set(held))
    pending = tuple(("id", s.mem.read_u32(b)) if isinstance(t, tuple) else t for b, t in s.driver._pending)
    return (tuple(chains[h] for h in avail), tuple(sorted(map(repr, (chains[h] for h in held)))),
            tuple(sorted(map(repr, (chains[h] for h in used)))), pending, len(s.driver._id_free))


#: History, not state: logs and counters no step reads; contents, ring and buffers are taken apart.
_SKIP = {"trace", "stats", "_dirtied", "_version", "ram", "expected", "dest", "sent_under", "applied_pages",
         "received_pages", "ignored_hints", "config_notifications", "part_page_hints", "whole_page_hints",
         "device_ended_rounds", "stops_after_device_end", "stops_returned", "acks", "_id_free", "_pending"}


def fingerprint(s: JudgedSystem) -> tuple:
    """Two states with one fingerprint have the same futures (up to renaming versions and ring slots)."""
    # Contents are version numbers: only which pages hold equal ones matters, and 0 (a discarded page).
    dest = s.migration.dest if s.migration is not None and s.migration.dest is not None else []
    contents = [*(s.guest.ram or []), *(s.guest.expected or []), *dest]
    rank = {v: i for i, v in enumerate(sorted(set(contents) - {0}), 1)} | {0: 0}
    parts: list[object] = [_ring(s), tuple(rank[v] for v in contents)]
    for obj in (s, s.guest, s.device, s.driver, s.migration):
        if obj is not None:
            parts.append(tuple(sorted((k, _plain(v)) for k, v in vars(obj).items() if k not in _SKIP)))
    return tuple(parts)


@attrs.frozen
class Verdict:
    semantics: str
    policy: str
    safe: bool  # no history up to ``depth`` steps breaks an invariant
    depth: int
    states: int  # distinct states visited
    broken: str = ""  # what the shortest losing history breaks
    trace: tuple[str, ...] = ()  # its steps, as the system logs them

    def line(self) -> str:
        if self.safe:
            return (f"{self.semantics:11} {self.policy:19} safe up to {self.depth} steps "
                    f"({self.states} states)")
        return f"{self.semantics:11} {self.policy:19} LOSES in {len(self.trace)} steps: {self.broken}"


def _replay(history: tuple[Action, ...], n_pages: int, policy: JudgePolicy,
            wait_on_ack: bool) -> JudgedSystem:
    s = JudgedSystem(n_pages, policy, wait_on_ack=wait_on_ack)
    for name, arg in history:
        _DO[name](s, arg)
    return s


def judge(semantics: str, policy: str, *, n_pages: int = 1, depth: int = 9) -> Verdict:
    """Breadth-first search for a shortest history that breaks an invariant, up to ``depth`` steps."""
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {SEMANTICS}, not {semantics!r}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, not {policy!r}")
    pol, woa = POLICIES[policy], semantics == "wait-on-ack"
    frontier: list[tuple[Action, ...]] = [()]
    seen = {fingerprint(_replay((), n_pages, pol, woa))}
    for _ in range(depth):
        nxt = []
        for history in frontier:
            for action in _actions(_replay(history, n_pages, pol, woa)):
                child = history + (action,)
                try:
                    s = _replay(child, n_pages, pol, woa)
                except (VirtioModelError, ValueError):
                    continue  # not a legal step here
                if why := s.broken():
                    return Verdict(semantics, policy, False, depth, len(seen), why, tuple(s.trace))
                fp = fingerprint(s)
                if fp not in seen:
                    seen.add(fp)
                    nxt.append(child)
        frontier = nxt
        if not frontier:
            break
    return Verdict(semantics, policy, True, depth, len(seen))


def judge_all(*, n_pages: int = 1, depth: int = 9) -> list[Verdict]:
    return [judge(sem, pol, n_pages=n_pages, depth=depth) for pol in POLICIES for sem in SEMANTICS]


if __name__ == "__main__":  # python -m refmodel.system.proposals_judge [N_PAGES [DEPTH]]
    import sys

    n, d = ([int(a) for a in sys.argv[1:3]] + [1, 9][len(sys.argv[1:3]):])[:2]
    for v in judge_all(n_pages=n, depth=d):
        print(v.line())
        for step in v.trace:
            print(f"    {step}")
