from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convstream.core.dedupe import (
    DEFAULT_DEDUPE_WINDOW_MS,
    classify_copy,
    conversion_key,
    expired,
    first_copy_state,
    identifier_gain,
    merge_user_data,
)

W = 1_000


def test_conversion_key():
    assert conversion_key("adv-7", "Purchase", "ord-42") == "adv-7:Purchase:ord-42"


def test_default_window_is_48h():
    assert DEFAULT_DEDUPE_WINDOW_MS == 48 * 3600 * 1000


def test_merge_first_copy_wins():
    first = {"em": "h-capi", "ph": None, "click_id": "", "client_ip_address": "1.1.1.1"}
    later = {
        "em": "h-pixel",
        "ph": "h-ph",
        "click_id": "c1",
        "client_ip_address": "2.2.2.2",
        "client_user_agent": "UA",
    }
    merged = merge_user_data(first, later)
    assert merged == {
        "em": "h-capi",
        "ph": "h-ph",
        "click_id": "c1",
        "client_ip_address": "1.1.1.1",
        "client_user_agent": "UA",
    }


def test_merge_is_pure():
    first, later = {"em": None}, {"em": "h"}
    merged = merge_user_data(first, later)
    assert first == {"em": None} and later == {"em": "h"}
    assert merged is not first and merged == {"em": "h"}


def test_merge_later_none_does_not_erase():
    assert merge_user_data({"em": "h"}, {"em": None, "ph": None}) == {"em": "h"}


ud_values = st.dictionaries(
    st.sampled_from(["em", "ph", "click_id", "device_id"]), st.one_of(st.none(), st.text())
)


@given(st.lists(ud_values, min_size=1, max_size=4))
def test_merge_fold_keeps_first_nonempty(copies):
    merged: dict = {}
    for ud in copies:
        merged = merge_user_data(merged, ud)
    for field in ("em", "ph", "click_id", "device_id"):
        firsts = [ud[field] for ud in copies if ud.get(field) not in (None, "")]
        if firsts:
            assert merged[field] == firsts[0]


def test_identifier_gain():
    before = {"em": "h", "ph": None, "click_id": ""}
    after = {"em": "h", "ph": "p", "click_id": "c", "device_id": None}
    assert identifier_gain(before, after) == ["ph", "click_id"]
    assert identifier_gain(after, after) == []
    assert identifier_gain({}, {"em": "h"}) == ["em"]


def test_merge_then_gain_detects_new_identifiers():
    first = {"em": "h", "ph": None}
    merged = merge_user_data(first, {"em": "other", "ph": "p"})
    assert identifier_gain(first, merged) == ["ph"]


# --- classify_copy ---------------------------------------------------------------------------


def test_first_copy_is_new():
    assert classify_copy(None, copy_ts=10_000, clock_ts=10_000, window_ms=W) == "new"


@pytest.mark.parametrize(("copy_ts", "decision"), [(9_000, "new"), (8_999, "late")])
def test_late_edge_without_state(copy_ts, decision):
    assert classify_copy(None, copy_ts, clock_ts=10_000, window_ms=W) == decision


@pytest.mark.parametrize(
    ("copy_ts", "decision"),
    [(11_000, "duplicate"), (9_000, "duplicate"), (11_001, "new"), (8_999, "late")],
)
def test_duplicate_edges_with_live_state(copy_ts, decision):
    state = first_copy_state(10_000, clock_ts=10_000)
    clock = max(10_000, copy_ts)
    assert classify_copy(state, copy_ts, clock_ts=clock, window_ms=W) == decision


def test_expired_edges():
    state = first_copy_state(10_000, clock_ts=10_500)
    assert not expired(state, 11_500, W)
    assert expired(state, 11_501, W)
    assert expired(None, 0, W)


def test_expired_state_is_ignored():
    state = first_copy_state(10_000, clock_ts=10_000)
    # Clock moved past the window: state is gone, an in-window copy counts as new again...
    assert classify_copy(state, copy_ts=10_500, clock_ts=11_001, window_ms=W) == "new"
    # ...and one older than the horizon is late.
    assert classify_copy(state, copy_ts=10_000, clock_ts=11_001, window_ms=W) == "late"


def test_late_first_copy_still_dedupes_followers():
    """A first copy that arrived late anchors its window at the clock when it was seen."""
    state = first_copy_state(10_000, clock_ts=10_900)
    assert classify_copy(state, copy_ts=10_100, clock_ts=11_800, window_ms=W) == "duplicate"


def test_event_time_only_the_clock_is_what_we_pass():
    state = first_copy_state(0, clock_ts=0)
    # Same inputs, same answer: no hidden wall clock.
    answers = {classify_copy(state, 500, clock_ts=600, window_ms=W) for _ in range(3)}
    assert answers == {"duplicate"}


@given(
    st.lists(st.integers(min_value=0, max_value=5_000), min_size=2, max_size=4),
)
def test_capi_pixel_copies_within_window_dedupe_in_any_order(times):
    """Copies within the window of each other give exactly one "new", whatever the order."""
    span = max(times) - min(times)
    for order in itertools.permutations(times):
        state, clock, decisions = None, 0, []
        for ts in order:
            clock = max(clock, ts)
            d = classify_copy(state, ts, clock_ts=clock, window_ms=span + 1)
            decisions.append(d)
            if d == "new":
                state = first_copy_state(ts, clock)
        assert decisions.count("new") == 1 and decisions[0] == "new"
        assert decisions.count("late") == 0
