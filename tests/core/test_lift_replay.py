"""Lift over a replay: exposures read as the worker reads them, converters from labels."""

from __future__ import annotations

from convstream.core.lift_replay import (
    conversions_from_labels,
    conversions_from_truth,
    exposures,
    track,
)
from convstream.synth.generate import GeneratorConfig, generate_all

T = 1_767_571_200_000


def _impression(event_id: str, user: str, ts: int, **extra) -> dict:
    value = {"event_id": event_id, "ts": ts, "user_id": user, "advertiser_id": "a",
             "campaign_id": "c", "ad_id": "ad", **extra}  # fmt: skip
    return {"topic": "impressions", "value": value}


def test_perfect_converters_count_exactly_what_the_campaign_truth_counts():
    """With the truth's converters, users and conversions per arm are the generator's own
    counts for every campaign: the estimator and the truth define the outcome alike."""
    g = generate_all(GeneratorConfig(seed=6, users=500, days=6))
    estimates = track(exposures(g.lines), conversions_from_truth(g.truth)).estimates()
    truth = {c["campaign_id"]: c for c in g.campaigns}
    assert {e.campaign_id for e in estimates} == {c for c, t in truth.items() if t["exposed_users"]
                                                  or t["holdout_users"]}  # fmt: skip
    for e in estimates:
        t = truth[e.campaign_id]
        assert (e.exposed_users, e.holdout_users) == (t["exposed_users"], t["holdout_users"])
        assert e.exposed_conversions == t["exposed_conversions"]
        assert e.holdout_conversions == t["holdout_conversions"]
    assert sum(e.holdout_users for e in estimates) > 0


def test_labels_count_for_the_user_of_their_highest_revision_and_invalid_lines_are_skipped():
    lines = [
        _impression("g1", "u1", T, holdout=True),
        _impression("i2", "u2", T),
        _impression("bad", "u3", T, holdout="yes"),  # dead-lettered by the worker
        {"topic": "identity", "value": {"user_id": "u1", "ts": T}},
    ]
    labels = [
        {"conversion_key": "a:P:1", "advertiser_id": "a", "ts": T + 1, "user_id": "u2",
         "revision": 0},
        {"conversion_key": "a:P:1", "advertiser_id": "a", "ts": T + 1, "user_id": "u1",
         "revision": 1},
        {"conversion_key": "a:P:2", "advertiser_id": "a", "ts": T + 1, "user_id": None,
         "revision": 0},
    ]  # fmt: skip
    assert [c.user_id for c in conversions_from_labels(labels)] == ["u1"]
    e = track(exposures(lines), conversions_from_labels(labels)).estimate("c")
    assert (e.exposed_users, e.holdout_users) == (1, 1)
    assert (e.exposed_conversions, e.holdout_conversions) == (0.0, 1.0)


def test_an_exposure_and_a_conversion_of_the_same_millisecond_count():
    lines = [_impression("i1", "u1", T)]
    labels = [{"conversion_key": "a:P:1", "advertiser_id": "a", "ts": T, "user_id": "u1",
               "revision": 0}]  # fmt: skip
    # Given conversion first: the tracker still sees the exposure first.
    e = track(exposures(lines), conversions_from_labels(labels)).estimate("c")
    assert e.exposed_conversions == 1.0
