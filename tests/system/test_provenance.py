"""Page provenance: the requirement charged for a change follows how the page got where it is."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from refmodel.system.provenance import Origin, PageHistory

O = Origin


def history(*events: Origin | tuple[Origin, int]) -> PageHistory:
    h = PageHistory()
    for e in events:
        origin, rnd = e if isinstance(e, tuple) else (e, None)
        h.tick()
        h.record([7], origin, round=rnd)
    return h


@pytest.mark.parametrize("events, expected", [
    # The case: hinted, DONE, then written by the guest: still a previously hinted page.
    (((O.HINTED, 5), (O.HINT_RELEASED, 5), O.WRITTEN), "BAL-FPH-DEV-5"),
    (((O.HINTED, 5), (O.HINT_RELEASED, 5)), "BAL-FPH-DEV-5"),
    # Written while hinted: the device must preserve the write.
    (((O.HINTED, 5), O.HINT_REUSED), "BAL-FPH-D4"),
    (((O.HINTED, 5), O.HINT_REUSED, O.WRITTEN), "BAL-FPH-D4"),
    # Hinted and untouched: the device may discard it (lock-free semantics).
    (((O.HINTED, 5),), None),
    # A newer round governs an older release.
    (((O.HINTED, 3), (O.HINT_RELEASED, 3), (O.HINTED, 5)), None),
    ((O.REPORTED,), None),
    ((O.REPORTED, O.REPORT_ACKED), "BAL-FPR-DEV-D1"),
    ((O.REPORTED, O.REPORT_ACKED, O.WRITTEN, O.FREED), "BAL-FPR-DEV-D1"),
    ((O.INFLATED,), None),
    ((O.INFLATED, O.DEFLATED), "BAL-OP-DEV-D1"),
    ((O.WRITTEN,), "BAL-OP-DEV-D1"),
    ((), "BAL-OP-DEV-D1"),
])
def test_protector_follows_the_history(events, expected):
    assert history(*events).protector(7) == expected


def test_untouched_since_deflate_ends_with_a_guest_write():
    h = history(O.INFLATED, O.DEFLATED)
    assert h.untouched_since(7, O.DEFLATED)
    h.record([7], O.WRITTEN)
    assert not h.untouched_since(7, O.DEFLATED)


def test_description_names_rounds_and_steps():
    text = history((O.HINTED, 5), (O.HINT_RELEASED, 5), O.WRITTEN).describe(7)
    assert text == ("hinted (command ID 5) at step 1; released after DONE (command ID 5) at step 2; "
                    "written by the guest at step 3")


@given(st.lists(st.sampled_from(list(Origin)), max_size=40), st.integers(2, 6))
def test_history_is_bounded_and_keeps_the_latest(events, depth):
    h = PageHistory(depth)
    for e in events:
        h.record([1], e)
    assert len(h.history(1)) == min(len(events), depth)
    assert [m.origin for m in h.history(1)] == events[-depth:] if events else h.history(1) == ()


def test_depth_below_two_is_refused():
    with pytest.raises(ValueError, match="depth"):
        PageHistory(1)
