"""Units in the user state: what the users agent keeps and a probe answer carries."""

from __future__ import annotations

from convstream.core.engagements import add_engagements, probe
from convstream.core.exposures import note_exposures, units_answer
from convstream.core.incrementality import Incrementality, Unit, answer_features, features
from convstream.core.units import DAY_MS, HOUR_MS

WINDOW = 30 * DAY_MS


def window(advertiser_id: str) -> int:
    return WINDOW


def test_a_unit_as_of_a_conversion_ignores_the_exposures_after_it():
    state: dict = {}
    times = [k * HOUR_MS for k in range(40)]  # more than the 32 kept times
    note_exposures(state, [(ts, "a", "c", False) for ts in times], window)
    (unit,) = units_answer(state, "a", 10 * HOUR_MS + 5, window_ms=WINDOW)["units"]
    # The oldest 8 times were dropped, yet the count up to the conversion is right.
    assert unit == ["c", False, 0, 10 * HOUR_MS, 11]
    assert units_answer(state, "a", 10 * HOUR_MS + 5, window_ms=WINDOW)["activity"] == 11


def test_the_answer_gives_the_features_of_the_whole_unit():
    inc = Incrementality()
    for ts in (0, HOUR_MS, 3 * DAY_MS):
        inc.exposure("u", "a", "c", ts, holdout=False)
    ts = 2 * HOUR_MS
    (unit,) = inc.answer("u", "a", ts)["units"]
    (row,) = inc.users["u"]["x"]["a"]
    whole = Unit(row[0], row[1], row[2], list(row[3]), row[4])
    assert answer_features(unit, 2, ts) == features(whole, 2, ts)


def test_entries_count_users_entered_by_arm_and_a_window_later_again():
    state: dict = {}
    entered = note_exposures(
        state,
        [(0, "a", "c", True), (HOUR_MS, "a", "c", True), (WINDOW + 1, "a", "c", True)],
        window,
    )
    assert entered == {0: {"c": [0, 1]}, WINDOW + 1: {"c": [0, 1]}}
    other: dict = {}
    assert note_exposures(other, [(5, "a", "c", False)], window, entered) is entered
    assert entered[5] == {"c": [1, 0]}


def test_units_expire_a_grace_after_their_window_and_only_then():
    state: dict = {}
    note_exposures(state, [(0, "a", "c", False), (0, "b", "d", False)], window)
    note_exposures(state, [(WINDOW + 6 * DAY_MS, "b", "e", False)], window)
    assert sorted(state["x"]) == ["a", "b"]  # closed 6 days ago: a late conversion may ask
    note_exposures(state, [(WINDOW + 8 * DAY_MS, "b", "e", False)], window)
    assert list(state["x"]) == ["b"] and [u[0] for u in state["x"]["b"]] == ["e"]


def test_a_probe_answer_carries_the_advertisers_units_ghosts_included():
    state = add_engagements(None, [[10, "view", "i1", "a", "c", "ad"]], retention_ms=WINDOW)
    note_exposures(state, [(10, "a", "c", False), (20, "a", "g", True), (30, "b", "z", False)],
                   window)  # fmt: skip
    answer = probe(state, "u", "a", conversion_ts=40, retention_ms=WINDOW, unit_window_ms=WINDOW)
    assert answer["units"] == [["c", False, 10, 10, 1], ["g", True, 20, 20, 1]]
    assert answer["activity"] == 3  # every advertiser's exposures count
    assert [r[2] for r in answer["engagements"]] == ["i1"]  # the ghost is no engagement
    plain = probe(state, "u", "a", conversion_ts=40, retention_ms=WINDOW)
    assert "units" not in plain
