"""The proposals judged with the model (refmodel.system.proposals_judge): a breadth-first search over every
interleaving, so each losing trace is a shortest one. Small bounds keep this quick; ``python -m
refmodel.system.proposals_judge`` runs the full table (docs/proposals/hint-wait-on-ack.rst)."""

import pytest

from refmodel.system.proposals_judge import POLICIES, SEMANTICS, JudgedSystem, fingerprint, judge


def _steps(v):
    return [" ".join(step.split()[:3]) for step in v.trace]


def test_a_discarding_host_loses_a_reused_page_without_wait_on_ack():
    """Firecracker's discard-at-once (PR #5491) with a 1.4 driver: the race e2b-dev/infra PR #3001 hit."""
    v = judge("lock-free", "discard_hinted", n_pages=1, depth=6)
    assert not v.safe and len(v.trace) == 5 and "on the source" in v.broken
    assert _steps(v)[3:] == ["guest reclaims hinted", "device consumes 2"]


def test_wait_on_ack_makes_the_discarding_host_safe():
    # As deep as the longest losing trace below; the docs' table goes to 9 steps and 2 pages.
    for policy, depth in (("discard_hinted", 7), ("apply_stale_hints", 6), ("safe", 6)):
        v = judge("wait-on-ack", policy, n_pages=1, depth=depth)
        assert v.safe and v.states > 1000, v.line()


@pytest.mark.parametrize("policy, length, broken", [
    ("discard_after_used", 7, "on the source"),  # PROP-HWA-DEV-1
    ("clear_after_sync", 7, "on the destination"),
    ("skip_done_on_cancel", 6, "never returned"),
])
def test_what_wait_on_ack_does_not_fix(policy, length, broken):
    v = judge("wait-on-ack", policy, n_pages=1, depth=length)
    assert not v.safe and len(v.trace) == length and broken in v.broken, v.line()
    assert "driver collects ACKs" in " ".join(v.trace) or policy == "skip_done_on_cancel"


def test_lock_free_stale_hints_lose_as_the_1_4_tests_say():
    v = judge("lock-free", "apply_stale_hints", n_pages=1, depth=7)
    assert not v.safe and len(v.trace) == 7


def test_the_fingerprint_ignores_history_but_not_state():
    a, b = (JudgedSystem(2, POLICIES["safe"], wait_on_ack=True) for _ in range(2))
    for s in (a, b):
        s.migration_start()
    a.alloc_write(), a.free(0), a.alloc_write()  # page 0 rewritten: a later version, the same state
    b.alloc_write()
    assert fingerprint(a) == fingerprint(b)
    b.driver_config_change()
    assert fingerprint(a) != fingerprint(b)


def test_bad_arguments_are_one_line_errors():
    for sem, pol, msg in (("locked", "safe", "semantics must be one of"),
                          (SEMANTICS[0], "nope", "policy must")):
        with pytest.raises(ValueError, match=msg):
            judge(sem, pol)


def test_the_worst_bit6_collision_is_the_judges_five_step_loss():
    """A host that reads bit 6 as HINT_WAIT_ON_ACK and a driver that reads it as #242 or #244: the driver
    hints lock-free, the host discards at once (refmodel.balloon.proposals.bits)."""
    from refmodel.balloon.proposals.bits import Harm, Proposal, collision

    assert collision(Proposal.HINT_WAIT_ON_ACK, Proposal.DEVICE_INIT_ON_INFLATE).harm is Harm.DATA_LOSS
    lock_free, locked = (judge(sem, "discard_hinted", n_pages=1, depth=5) for sem in SEMANTICS)
    assert not lock_free.safe and locked.safe
