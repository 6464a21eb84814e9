"""The identifier index: user agent families on address entries, as of the conversion time."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from convstream.core.index import COALESCE_MS, HISTORY, MAX_FAMILIES, add_sighting, expire, lookup

H = 3_600_000


def _lookup(entry, ts, top_k=8):
    return lookup(entry, "ip:100.64.0.1", conversion_ts=ts, lookback_ms=30 * 24 * H, top_k=top_k)


def test_a_family_counts_only_from_when_it_was_first_seen_on_the_address():
    entry = add_sighting(None, "u1", 10 * H, families={"chrome/windows": 10 * H})
    # The same user later updates to a browser of another family on the same address.
    entry = add_sighting(entry, "u1", 20 * H, families={"safari/ios": 20 * H})
    assert _lookup(entry, 15 * H)["families"] == {"u1": ["chrome/windows"]}
    assert sorted(_lookup(entry, 25 * H)["families"]["u1"]) == ["chrome/windows", "safari/ios"]
    # A family first seen later in a batch, but earlier in event time, moves back.
    entry = add_sighting(entry, "u1", 21 * H, first_ts=5 * H, families={"safari/ios": 5 * H})
    assert sorted(_lookup(entry, 15 * H)["families"]["u1"]) == ["chrome/windows", "safari/ios"]


def test_family_degree_counts_users_in_the_window_not_only_the_returned_ones():
    entry = None
    for i in range(10):
        family = "safari/ios" if i % 2 else "chrome/android"
        entry = add_sighting(entry, f"u{i}", (i + 1) * H, families={family: (i + 1) * H})
    answer = _lookup(entry, 20 * H, top_k=3)
    assert [row[0] for row in answer["users"]] == ["u9", "u8", "u7"]
    assert set(answer["families"]) == {"u9", "u8", "u7"}
    assert answer["family_degree"] == {"chrome/android": 5, "safari/ios": 5}
    # Users past the lookback window are in neither the degree nor the families.
    late = lookup(entry, "ip:x", conversion_ts=20 * H, lookback_ms=14 * H, top_k=10)
    assert late["family_degree"] == {"chrome/android": 2, "safari/ios": 3}  # u5..u9


def test_families_per_row_are_bounded_and_survive_expiry():
    entry = None
    for i in range(MAX_FAMILIES + 3):
        entry = add_sighting(entry, "bot", H + i, families={f"f{i}/other": H + i})
    assert len(entry["u"]["bot"][4]) == MAX_FAMILIES
    entry = add_sighting(entry, "u2", 50 * H)
    kept = expire(entry, 60 * H, 20 * H)
    assert list(kept["u"]) == ["u2"]
    entry = add_sighting(kept, "u3", 55 * H, families={"safari/ios": 55 * H})
    assert _lookup(entry, 56 * H)["family_degree"] == {"safari/ios": 1}


def test_entries_without_families_answer_as_before():
    # Identifier kinds other than ip, and entries written before families existed.
    old = {"u": {"u1": [H, 2 * H, 3, [2 * H]]}, "d": 0}
    answer = _lookup(old, 3 * H)
    assert answer == {
        "key": "ip:100.64.0.1",
        "kind": "ip",
        "degree": 1,
        "users": [["u1", H, 2 * H, 3]],
    }
    mixed = add_sighting(old, "u2", 2 * H, families={"safari/ios": 2 * H})
    assert _lookup(mixed, 3 * H)["families"] == {"u2": ["safari/ios"]}


# An answer as of T depends on the sightings at or before T only, not on how many later ones
# were applied before the lookup: how far the engagement topics happened to be read when it was
# released (issue 19). Users agents batch sightings by ten-minute cell (COALESCE_MS).
MINUTE = 60_000
sightings = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.integers(min_value=0, max_value=6 * H),
        st.integers(min_value=1, max_value=3),
    ),
    min_size=1,
    max_size=40,
)


def _batched(rows):
    """Sightings summed per (user, cell), as the users agent sends them."""
    cells = {}
    for user, ts, count in rows:
        seen = cells.setdefault((user, ts // COALESCE_MS), [ts, ts, 0])
        seen[0], seen[1], seen[2] = min(seen[0], ts), max(seen[1], ts), seen[2] + count
    return [(user, *seen) for (user, _), seen in cells.items()]


def _build(rows, *, batched=False):
    entry = None
    if batched:
        for user, first, last, count in _batched(rows):
            entry = add_sighting(entry, user, last, count=count, first_ts=first)
        return entry
    for user, ts, count in rows:
        entry = add_sighting(entry, user, ts, count=count, first_ts=ts)
    return entry


@given(sightings, st.integers(min_value=0, max_value=6 * H), st.randoms())
def test_an_answer_as_of_t_ignores_the_sightings_after_t(rows, t, rnd):
    before = [r for r in rows if r[1] <= t]
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    cells_after = {
        u: len({ts // COALESCE_MS for v, ts, _ in rows if v == u and ts > t}) for u, _, _ in rows
    }
    assume(max(cells_after.values()) < HISTORY - 1)  # the bounded history still covers T
    expected = _lookup(_build(before), t)
    assert _lookup(_build(shuffled), t) == expected
    assert _lookup(_build(shuffled, batched=True), t) == expected


def test_a_count_covers_the_sightings_before_the_conversion_only():
    entry = add_sighting(None, "u1", 10 * MINUTE - 1, count=1)
    entry = add_sighting(entry, "u1", 2 * H, count=50, first_ts=2 * H - 5 * MINUTE)
    assert _lookup(entry, H)["users"] == [["u1", 10 * MINUTE - 1, 10 * MINUTE - 1, 1]]
    assert _lookup(entry, 3 * H)["users"] == [["u1", 10 * MINUTE - 1, 2 * H, 51]]


def test_a_sighting_just_before_the_conversion_stays_its_last_one_seen():
    """Before, a later sighting within ten minutes merged into the earlier one's time, and a
    conversion between the two then saw the user as last seen at their first sighting."""
    entry = add_sighting(None, "u1", 0)
    entry = add_sighting(entry, "u1", 2 * H + 30_000)
    entry = add_sighting(entry, "u1", 2 * H + 31_000)
    assert _lookup(entry, 2 * H + 30_500)["users"][0][2] == 2 * H + 30_000
    entry = add_sighting(entry, "u1", 2 * H + 9 * MINUTE)  # the same cell, after the conversion
    assert _lookup(entry, 2 * H + 30_500)["users"][0][2] == 2 * H + 30_000


def test_the_history_is_bounded_and_keeps_the_newest_cells():
    entry = None
    for i in range(HISTORY + 5):
        entry = add_sighting(entry, "u1", i * H)
    cells = entry["u"]["u1"][3]
    assert len(cells) == HISTORY
    assert cells[0] == [0, 5 * H, 6]  # the oldest merged
    assert _lookup(entry, 12 * H)["users"] == [["u1", 0, 12 * H, 13]]
