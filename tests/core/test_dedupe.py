from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from convstream.core.coordinator import Policy, admit
from convstream.core.dedupe import conversion_key, identifier_gain, merge_user_data

W = 1_000


def test_conversion_key():
    assert conversion_key("adv-7", "Purchase", "ord-42") == "adv-7:Purchase:ord-42"


def test_default_window_is_48h():
    assert Policy().dedupe_window_ms == 48 * 3600 * 1000


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


# --- admission (convstream.core.coordinator.admit) -------------------------------------------


def _copy(ts: int, source: str, **user_data: str) -> dict:
    return {
        "conversion_key": "a:Purchase:o1",
        "ts": ts,
        "sources": [source],
        "user_data": user_data,
    }


COPIES = [
    _copy(10_000, "pixel", client_ip_address="10.0.0.1"),
    _copy(10_000, "capi", em="h-em"),
    _copy(10_400, "capi", ph="h-ph", em="h-other"),
    _copy(10_900, "pixel"),
]


@given(st.permutations(COPIES))
def test_copies_within_the_window_are_one_conversion_in_any_order(copies):
    policy = Policy(dedupe_window_ms=W)
    state, outcomes = None, []
    for copy in copies:
        state, outcome = admit(state, copy, clock_ts=max(c["ts"] for c in copies), policy=policy)
        outcomes.append(outcome)
    assert outcomes[0] == "new" and set(outcomes[1:]) <= {"duplicate", "correction"}
    assert set(state["conv"]["user_data"]) == {"client_ip_address", "em", "ph"}
    assert state["conv"]["sources"] == ["capi", "pixel"]
    # The first copy that carried an email is the one whose email stays.
    first_em = next(c["user_data"]["em"] for c in copies if "em" in c["user_data"])
    assert state["conv"]["user_data"]["em"] == first_em


def test_a_copy_past_the_window_is_late_and_one_older_than_the_max_age_too_old():
    policy = Policy(dedupe_window_ms=W, max_age_ms=10 * W)
    state, _ = admit(None, _copy(10_000, "pixel"), clock_ts=10_000, policy=policy)
    assert admit(state, _copy(10_000, "capi", em="h"), clock_ts=10_000 + W, policy=policy)[1] == (
        "correction"
    )
    assert admit(state, _copy(10_000, "capi"), clock_ts=10_001 + W, policy=policy)[1] == "late"
    assert admit(None, _copy(10_000, "capi"), clock_ts=10_001 + 10 * W, policy=policy)[1] == (
        "too_old"
    )
