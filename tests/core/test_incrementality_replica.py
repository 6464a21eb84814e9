"""The lifecycle's incrementality replicas: scores as of event time, arm counts as the offset."""

from __future__ import annotations

import random

import pytest

from convstream.core.incrementality_replica import Replica, arms_entries
from convstream.core.units import HOUR_MS

X = {"campaign=c": 1.0, "recency=0": 1.0}


def _entries(hours: int, seed: int = 3) -> list[tuple[int, dict]]:
    """Per hour: 50 users entered (10 % held out), and a few converters' examples in which
    held-out users are rarer than their share (the campaign has lift)."""
    rng = random.Random(seed)
    out: list[tuple[int, dict]] = []
    for h in range(hours):
        out += arms_entries({h * HOUR_MS: {"c": [45, 5]}})
        for k in range(12):
            held = rng.random() < 0.05
            out.append((h * HOUR_MS + 60_000 * k, {"t": "inc", "x": [[sorted(X), held]]}))
    return sorted(out, key=_ts)


def _ts(entry: tuple[int, dict]) -> int:
    return entry[0]


def _replica(entries: list[tuple[int, dict]], **options) -> Replica:
    r = Replica(min_holdout=5, **options)
    for ts, entry in entries:
        r.learn(ts, entry)
    return r


def test_a_score_does_not_depend_on_how_far_the_replica_has_learned():
    entries = _entries(30)
    as_of = 12 * HOUR_MS + 30 * 60_000
    behind = _replica([e for e in entries if e[0] <= as_of])
    ahead = _replica(entries)  # learned 18 more hours before it scored
    p = behind.probability(X, as_of=as_of)
    assert p is not None and 0.0 < p < 1.0
    assert ahead.probability(X, as_of=as_of) == p
    # Only the cells that ended by as_of count: the entries of its own hour do not.
    upto_11 = _replica([e for e in entries if e[0] < 12 * HOUR_MS])
    assert upto_11.probability(X, as_of=as_of) == p
    assert ahead.probability(X, as_of=30 * HOUR_MS) != p


def test_the_arm_counts_summed_over_entries_are_the_offset():
    examples = [e for e in _entries(10) if e[1]["t"] == "inc"]
    as_of = 11 * HOUR_MS
    # The same converters: with a holdout of 10 % they show lift, with one of 3 % (a third as
    # many held-out users entered) they show none.
    ten = _replica(sorted(examples + arms_entries({0: {"c": [450, 50]}}), key=_ts))
    three = _replica(
        sorted(
            examples + arms_entries({0: {"c": [225, 7]}}) + arms_entries({5: {"c": [260, 8]}}),
            key=_ts,
        )
    )
    assert three.arms == {"c": [485, 15]}
    assert ten.probability(X, as_of=as_of) > 0.3
    assert three.probability(X, as_of=as_of) < 0.05


def test_no_estimate_before_enough_held_out_conversions():
    r = Replica(min_holdout=2)
    r.learn(0, {"t": "inc", "x": [[sorted(X), True]]})
    r.learn(HOUR_MS, {"t": "inc", "x": [[sorted(X), False]]})
    assert r.probability(X, as_of=3 * HOUR_MS) is None
    r.learn(HOUR_MS + 1, {"t": "inc", "x": [[sorted(X), True]]})
    assert r.probability(X, as_of=3 * HOUR_MS) is not None
    assert r.probability(X, as_of=HOUR_MS + 10) is None  # as of cell 0, which had one


def test_a_checkpoint_resumes_the_same_scores():
    entries = _entries(8)
    r = _replica(entries)
    back = Replica.loads(r.dumps(), min_holdout=5)
    assert back.probability(X, as_of=9 * HOUR_MS) == pytest.approx(
        r.probability(X, as_of=9 * HOUR_MS), abs=1e-12
    )
    back.learn(9 * HOUR_MS, {"t": "inc", "x": [[sorted(X), True]]})
    r.learn(9 * HOUR_MS, {"t": "inc", "x": [[sorted(X), True]]})
    assert back.probability(X, as_of=11 * HOUR_MS) == pytest.approx(
        r.probability(X, as_of=11 * HOUR_MS), abs=1e-12
    )


def test_replicas_that_learned_the_same_entries_share_one_fit():
    fits: dict = {}
    entries = _entries(16)
    # The same entries, interleaved otherwise within each hour (as late ones would be).
    mixed = sorted(entries, key=lambda e: (e[0] // HOUR_MS, -e[0]))
    a, b = _replica(entries, fits=fits), _replica(mixed, fits=fits)
    assert a.digest == b.digest
    p = a.probability(X, as_of=17 * HOUR_MS)
    assert p is not None and b.probability(X, as_of=17 * HOUR_MS) == p
    before = len(fits)
    _replica(entries, fits=fits).probability(X, as_of=17 * HOUR_MS)
    assert len(fits) == before > 0
    other = _replica(entries[:-1], fits=fits)  # one entry fewer: a fit of its own
    other.probability(X, as_of=17 * HOUR_MS)
    assert len(fits) == before + 1
