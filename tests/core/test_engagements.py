"""A user's engagement list: the fast append path must equal a full merge, in any arrival order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from convstream.core.engagements import add_engagements, note_own_identifiers, probe

RETENTION = 1_000


def merge_everything(batches, *, clock_ts, cap):
    """The obvious definition: union by engagement id (first copy wins), prune, sort, cap."""
    merged: dict[str, list] = {}
    for rows in batches:
        for row in rows:
            merged.setdefault(row[2], list(row))
    rows = sorted(merged.values(), key=lambda r: (r[0], r[2]))
    clock = max([r[0] for r in rows] + ([clock_ts] if clock_ts is not None else []), default=None)
    if clock is not None:
        rows = [r for r in rows if r[0] >= clock - RETENTION]
    kept, counts = [], {}
    for row in reversed(rows):
        if counts.get(row[3], 0) < cap:
            counts[row[3]] = counts.get(row[3], 0) + 1
            kept.append(row)
    return kept[::-1]


# An engagement id names one event: every copy of it is the same row.
catalogue = st.dictionaries(
    st.integers(0, 30).map(lambda n: f"e{n}"),
    st.tuples(st.integers(0, 3_000), st.sampled_from(["view", "click"]), st.sampled_from("ab")),
    min_size=1,
).map(lambda d: {k: [ts, kind, k, adv, "c", "ad"] for k, (ts, kind, adv) in d.items()})


@st.composite
def arrivals(draw):
    rows = draw(catalogue)
    ids = st.sampled_from(sorted(rows))
    batches = draw(st.lists(st.lists(ids, max_size=8), max_size=8))
    return [[rows[i] for i in batch] for batch in batches]


@given(arrivals(), st.integers(1, 6), st.booleans())
def test_batches_in_any_order_equal_one_full_merge(batches, cap, with_clock):
    # Pruning and capping per batch lose nothing the end result would keep: the clock only moves
    # forward, and a row capped away has ``cap`` newer rows of its advertiser that stay newer.
    state, clock = None, None
    for batch in batches:
        if with_clock and batch:
            newest = max(r[0] for r in batch)
            clock = newest if clock is None else max(clock, newest)
        state = add_engagements(
            state, batch, retention_ms=RETENTION, clock_ts=clock, max_per_advertiser=cap
        )
    got = state["e"] if state else []
    assert got == merge_everything(batches, clock_ts=clock, cap=cap)


def test_an_out_of_order_batch_is_merged_in_place():
    state = add_engagements(None, [[100, "view", "b", "a1", "c", "ad"]], retention_ms=RETENTION)
    state = add_engagements(
        state,
        [[50, "click", "a", "a1", "c", "ad"], [150, "view", "c", "a1", "c", "ad"]],
        retention_ms=RETENTION,
    )
    assert [r[2] for r in state["e"]] == ["a", "b", "c"]
    assert probe(state, "u", "a1", conversion_ts=120, retention_ms=RETENTION)["last_click_ts"] == 50


def test_a_repeated_engagement_id_keeps_its_first_copy():
    state = add_engagements(None, [[100, "view", "x", "a1", "c", "ad"]], retention_ms=RETENTION)
    state = add_engagements(state, [[90, "click", "x", "a1", "c", "ad"]], retention_ms=RETENTION)
    assert state["e"] == [[100, "view", "x", "a1", "c", "ad"]]


def test_rows_behind_the_retention_are_dropped_when_the_clock_passes():
    state = add_engagements(None, [[100, "view", "old", "a1", "c", "ad"]], retention_ms=RETENTION)
    state = add_engagements(
        state, [[1_200, "view", "new", "a1", "c", "ad"]], retention_ms=RETENTION
    )
    assert [r[2] for r in state["e"]] == ["new"]


def test_each_advertiser_keeps_only_its_newest_rows():
    rows = [[ts, "view", f"e{ts}", "a1", "c", "ad"] for ts in (10, 20, 30)]
    state = add_engagements(None, rows, retention_ms=RETENTION, max_per_advertiser=2)
    assert [r[2] for r in state["e"]] == ["e20", "e30"]
    older = [[5, "click", "b-old", "b1", "c", "ad"]]
    state = add_engagements(state, older, retention_ms=RETENTION, max_per_advertiser=2)
    assert [r[2] for r in state["e"]] == ["b-old", "e20", "e30"]


@given(st.lists(st.tuples(st.sampled_from(["em", "ph"]), st.integers(0, 100)), max_size=8))
def test_own_identifiers_keep_their_first_time_in_any_order(sightings):
    forward, backward = None, None
    for kind, ts in sightings:
        forward = note_own_identifiers(forward, {kind: ts})
    for kind, ts in reversed(sightings):
        backward = note_own_identifiers(backward, {kind: ts})
    expected = {}
    for kind, ts in sightings:
        expected[kind] = min(ts, expected.get(kind, ts))
    assert (forward or {}).get("o", {}) == (backward or {}).get("o", {}) == expected


def test_probe_names_only_own_identifiers_known_by_the_conversion():
    state = note_own_identifiers(None, {"em": 500, "ph": 2_000})
    assert probe(state, "u1", "a", conversion_ts=1_000, retention_ms=RETENTION)["own"] == ["em"]
    assert probe(state, "u1", "a", conversion_ts=2_000, retention_ms=RETENTION)["own"] == [
        "em",
        "ph",
    ]
    assert probe(None, "u1", "a", conversion_ts=2_000, retention_ms=RETENTION)["own"] == []
