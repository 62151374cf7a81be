"""The guest page lifecycle table (refmodel.system.guest.PAGE_TRANSITIONS) drives the page allocator: every
state change goes through it, and an illegal one names the state and the event."""

import pytest

from refmodel.system.guest import DEVICE_MAY_DISCARD, PAGE_TRANSITIONS, GuestPages, PageEvent, PageState


def test_each_event_leaves_exactly_one_state():
    sources = {}
    for (src, event) in PAGE_TRANSITIONS:
        assert sources.setdefault(event, src) is src, event
    assert set(sources) == set(PageEvent)


def test_every_state_is_reachable_and_left():
    assert {dst for dst in PAGE_TRANSITIONS.values()} == set(PageState)
    assert {src for src, _ in PAGE_TRANSITIONS} == set(PageState)


def test_the_two_semantics_are_the_two_states_the_device_may_discard():
    assert set(DEVICE_MAY_DISCARD) == {PageState.HINTED, PageState.ISOLATED}


@pytest.mark.verifies("BAL-FPR-DRV-3")
def test_a_reported_page_is_not_reused_before_the_device_used_the_buffer():
    g = GuestPages(4)
    g.isolate(0b0011)
    assert g.alloc() == 2  # the isolated pages are not handed out
    with pytest.raises(ValueError, match="page 0 is not allocated: cannot 'guest frees'"):
        g.free_page(0)
    g.unisolate(0b0011)
    assert g.in_state(PageState.FREE) == 0b1011


def test_a_hinted_page_may_be_reused_before_done_and_is_written():
    g = GuestPages(4)
    start = g.take_free_block(1)
    assert start == 0 and g.hinted == 0b11
    g.reuse_hinted(1)
    assert g.allocated == 0b10 and g.hinted == 0b01 and g.expected[1] > 0
    with pytest.raises(ValueError, match="page 3 is not hinted"):
        g.reuse_hinted(3)
