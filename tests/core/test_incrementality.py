"""Incremental probability per label: the holdout contrast, its features, label fields, Qini."""

from __future__ import annotations

import random

import pytest

from convstream.core.engine import run_offline
from convstream.core.incrementality import (
    Estimator,
    Incrementality,
    Unit,
    answer_features,
    features,
)
from convstream.core.incrementality_evaluation import ece, qini, score_incrementality
from convstream.core.logit import Logit
from convstream.core.matching.baseline import RuleBaseline
from convstream.core.units import DAY_MS, HOUR_MS, MINUTE_MS

T0 = 1_767_571_200_000


def _world(seed: int = 7, users: int = 3000, holdout: float = 0.2) -> Incrementality:
    """Two campaigns of one advertiser, each user in one. Every user converts organically at
    a random time with probability 0.3; after an exposure a user also makes an "ad-timed"
    visit 5-50 minutes later with probability 0.2 (exposed) or, held out, 0.1 for campaign
    "lift" (the ad causes half of them) and 0.2 for campaign "zero" (it causes none: the
    timing alone is no evidence). Events go in in event-time order, as a driver feeds them."""
    rng = random.Random(seed)
    events: list[tuple[int, int, str, str, bool]] = []  # ts, order, kind, user, holdout
    for i in range(users):
        user, campaign = f"u{i}", ("lift", "zero")[i % 2]
        held = rng.random() < holdout
        start = T0 + rng.randrange(0, 3 * DAY_MS)
        events.append((start, 0, f"x:{campaign}", user, held))
        if rng.random() < 0.3:
            events.append((start + rng.randrange(0, 20 * DAY_MS), 1, "c", user, held))
        rate = 0.1 if held and campaign == "lift" else 0.2
        if rng.random() < rate:
            events.append((start + rng.randrange(5, 50) * MINUTE_MS, 1, "c", user, held))
    events.sort()
    inc = Incrementality(Estimator(min_holdout=20))
    for ts, _, kind, user, held in events:
        if kind.startswith("x:"):
            inc.exposure(user, "a", kind[2:], ts, holdout=held)
        else:
            inc.learn(user, "a", ts)
    return inc


def _soon_after(inc: Incrementality, campaign: str) -> float:
    unit = Unit(campaign, T0, False, [T0], 1)
    p = inc.estimator.probability(features(unit, 1, T0 + 20 * MINUTE_MS))
    assert p is not None
    return p


def test_the_holdout_contrast_finds_the_campaign_with_lift_and_the_one_without():
    inc = _world()
    # Truth 20 minutes after an exposure: "lift" half of its ad-timed visits over all its
    # conversions then (organic ones are a handful per hour over 20 days), "zero" none.
    lift, zero = _soon_after(inc, "lift"), _soon_after(inc, "zero")
    assert 0.3 < lift < 0.65
    assert zero < 0.12
    # Days after an exposure only organic conversions happen, in both arms alike.
    unit = Unit("lift", T0, False, [T0], 1)
    late = inc.estimator.probability(features(unit, 1, T0 + 10 * DAY_MS))
    assert late is not None and late < 0.2


def test_without_a_holdout_difference_nothing_is_incremental():
    """The same world with the lift campaign's holdout behaving as its exposed users: the
    ad-timed visits are as frequent in both arms, so the model must call them organic (a model
    that read recency or exposure alone, not the contrast, would not)."""
    rng = random.Random(3)
    inc = Incrementality(Estimator(min_holdout=20))
    events = []
    for i in range(2000):
        held = rng.random() < 0.2
        start = T0 + rng.randrange(0, 3 * DAY_MS)
        events.append((start, 0, f"u{i}", held))
        if rng.random() < 0.3:
            events.append((start + rng.randrange(5, 50) * MINUTE_MS, 1, f"u{i}", held))
    for ts, kind, user, held in sorted(events):
        if kind == 0:
            inc.exposure(user, "a", "c", ts, holdout=held)
        else:
            inc.learn(user, "a", ts)
    assert _soon_after(inc, "c") < 0.12


def test_the_arms_ratio_is_the_offset_of_the_contrast():
    inc = Incrementality(Estimator(min_holdout=1, l2=0.0))
    for i in range(10):
        inc.exposure(f"u{i}", "a", "c", 0, holdout=i == 0)
    assert inc.arms["c"] == [9, 1]
    # One held-out and nine exposed conversions: as often in both arms, nothing incremental.
    assert [inc.learn(f"u{i}", "a", 5) for i in range(10)] == [1] * 10
    assert inc.learn("nobody", "a", 5) == 0
    (unit,) = inc.answer("u1", "a", 5)["units"]
    p = inc.estimator.probability(answer_features(unit, 10, 5))
    assert p == pytest.approx(0.0, abs=1e-3)


def test_features_use_only_exposures_up_to_the_moment():
    u = Unit("c", 0, False)
    for ts in (0, HOUR_MS, 5 * DAY_MS):
        u.seen(ts, max_times=32)
    x = features(u, 3, 2 * HOUR_MS)  # the exposure at 5 days is in the future
    assert x == {"campaign=c": 1.0, "campaign=c&recency=1": 1.0, "recency=1": 1.0,
                 "frequency=1": 1.0, "activity=0": 1.0}  # fmt: skip


def test_state_is_bounded_and_expires_in_event_time():
    inc = Incrementality(max_times=4, max_recent=8)
    for k in range(20):
        inc.exposure("u", "a", "c", k * HOUR_MS, holdout=False)
    (unit,) = inc.users["u"]["x"]["a"]
    assert len(unit[3]) == 4 and unit[4] == 20  # the newest 4 exposure times, 20 in all
    assert len(inc.users["u"]["r"]) == 8
    assert inc.expire(31 * DAY_MS) == 1
    assert inc.users == {}


def test_label_fields_before_the_model_is_ready_and_without_credit():
    inc = Incrementality(Estimator(min_holdout=1))
    credit = {"campaign_id": "c", "credit": 1.0, "label_weight": 0.5, "engagement_ts": 0}
    label = {"conversion_key": "k", "advertiser_id": "a", "ts": 10, "user_id": "u"}
    out = inc.annotate({**label, "credits": [credit]})
    assert (out["incremental_probability"], out["incremental_weight"]) == (None, None)
    out = inc.annotate({**label, "credits": []})
    assert (out["incremental_probability"], out["incremental_weight"]) == (None, 0.0)
    assert out["conversion_key"] == "k"  # existing fields unchanged


def test_incremental_weight_is_label_weight_times_probability_over_credits():
    inc = _world(users=1000)
    credits = [
        {"campaign_id": "lift", "credit": 0.5, "label_weight": 0.4, "engagement_ts": T0},
        {"campaign_id": "zero", "credit": 0.5, "label_weight": 0.4, "engagement_ts": T0},
    ]
    p, w = inc.score("nobody", "a", T0 + 20 * MINUTE_MS, credits)
    assert p is not None and w is not None
    assert w == pytest.approx(0.8 * p)
    assert p == pytest.approx((_soon_after(inc, "lift") + _soon_after(inc, "zero")) / 2)


def test_offline_labels_carry_the_incremental_fields():
    lines = [
        {"topic": "clicks", "value": {"event_id": "k1", "click_id": "k1", "ts": T0,
         "user_id": "u1", "advertiser_id": "a", "campaign_id": "c", "ad_id": "ad",
         "ip": "10.0.0.1", "user_agent": "UA", "device_id": None}},
        {"topic": "conversions", "value": {"event_id": "o1", "event_name": "Purchase",
         "source": "pixel", "ts": T0 + 60_000, "advertiser_id": "a", "value": 5.0,
         "currency": "USD", "user_data": {"click_id": "k1"}}},
    ]  # fmt: skip
    (label,) = run_offline(lines, RuleBaseline)
    assert label["label_weight"] > 0
    # The first label: no held-out conversion learned yet, so no estimate (docs/contract.md).
    assert label["incremental_probability"] is None and label["incremental_weight"] is None
    (plain,) = run_offline(lines, RuleBaseline, incrementality=False)
    assert "incremental_probability" not in plain


def test_logit_is_exact_and_does_not_depend_on_order():
    data = [({"a": 1.0}, 1.0, 0.0)] * 3 + [({"a": 1.0}, 0.0, 1.0)] + [({"b": 1.0}, 0.0, 1.0)] * 2
    data += [({"b": 1.0}, 1.0, 0.0)]
    one, two = Logit(l2=0.0), Logit(l2=0.0)
    for x, pos, neg in data:
        one.add(x, positive=pos, negative=neg)
    for x, pos, neg in reversed(data):
        two.add(x, positive=pos, negative=neg)
    assert one.predict({"a": 1.0}) == pytest.approx(0.75, abs=1e-6)
    assert one.predict({"b": 1.0}) == pytest.approx(1 / 3, abs=1e-6)
    assert one.predict({"a": 1.0}) == pytest.approx(two.predict({"a": 1.0}), abs=1e-9)


def test_qini_of_known_rankings():
    truths = [0.5, 0.0, 0.2, 0.0, 0.1]
    perfect = qini(truths, truths)
    assert perfect.normalized == pytest.approx(1.0)
    # G(k) = 0.5, 0.7, 0.8, 0.8, 0.8; random line k * 0.8 / 5; q = sum(Q) / (n T).
    assert perfect.q == pytest.approx((0.34 + 0.38 + 0.32 + 0.16 + 0.0) / (5 * 0.8))
    assert qini([1.0] * 5, truths).q == pytest.approx(0.0)  # all tied: random
    # Only the order counts.
    scores = [0.9, 0.1, 0.5, 0.3, 0.2]
    assert qini(scores, truths).q == pytest.approx(qini([s**3 for s in scores], truths).q)
    assert qini([], []).q is None and qini([0.1], [0.0]).q is None
    curve = perfect.curve
    assert curve[0] == (0.0, 0.0) and curve[-1] == pytest.approx((1.0, 1.0))


def test_ece_and_captured_truth():
    assert ece([0.2, 0.2], [0.2, 0.2]) == 0.0
    truth = [
        {"conversion_key": "a", "incremental_probability": 0.6},
        {"conversion_key": "b", "incremental_probability": 0.0},
        {"conversion_key": "c", "incremental_probability": 0.4},  # unlabelled
    ]
    labels = [
        {"conversion_key": "a", "revision": 0, "credits": [{}], "label_weight": 1.0,
         "incremental_probability": 0.5, "incremental_weight": 0.5},
        {"conversion_key": "b", "revision": 0, "credits": [{}], "label_weight": 1.0,
         "incremental_probability": None, "incremental_weight": None},
        {"conversion_key": "d", "revision": 0, "credits": [], "label_weight": 0.0,
         "incremental_probability": None, "incremental_weight": 0.0},
    ]  # fmt: skip
    s = score_incrementality(labels, truth, oracle={"a": 0.6, "b": 0.1})
    assert (s.attributed, s.scored, s.unscored) == (2, 1, 1)
    assert s.true_incremental == pytest.approx(1.0)
    assert s.incremental_weight_ratio == pytest.approx(0.5)
    assert s.label_weight_ratio == pytest.approx(2.0)
    assert s.ece == pytest.approx(0.1) and s.oracle_ece == pytest.approx(0.0)


def test_the_same_replay_gives_the_same_incremental_fields():
    from convstream.core.matching.model import MatchModel
    from convstream.synth.generate import config_from_args, generate

    lines, _ = generate(config_from_args("default", users=1500, days=10, seed=4))
    runs = [
        [
            (x["conversion_key"], x["incremental_probability"])
            for x in run_offline(lines, MatchModel)
        ]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert any(p is not None for _, p in runs[0])  # the estimator got ready in 10 days
