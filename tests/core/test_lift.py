"""Online campaign lift: windows, arms, the sums behind the variances, the intervals' coverage."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convstream.core.attribution import AttributionConfig, AttributionSettings
from convstream.core.lift import Arm, CampaignState, LiftTracker, estimate
from convstream.core.lift_evaluation import score_lift
from convstream.core.units import DAY_MS

W = 30 * DAY_MS


def test_a_conversion_counts_from_the_first_exposure_to_the_end_of_the_window():
    t = LiftTracker()
    t.exposure("u", "a", "c", 1_000, holdout=False)
    t.exposure("u", "a", "c", 5_000, holdout=False)  # a later impression moves nothing
    assert t.conversion("u", "a", 999) == 0  # before the first exposure
    assert t.conversion("u", "b", 2_000) == 0  # another advertiser
    assert t.conversion("v", "a", 2_000) == 0  # another user
    assert t.conversion("u", "a", 1_000 + W) == 1  # the window is inclusive
    assert t.conversion("u", "a", 1_001 + W) == 0
    e = t.estimate("c")
    assert (e.exposed_users, e.exposed_conversions, e.holdout_users) == (1, 1.0, 0)


def test_the_window_is_the_advertisers_longest_attribution_window():
    config = AttributionConfig(
        overrides={"short": AttributionSettings(click_window_ms=DAY_MS, view_window_ms=DAY_MS)}
    )
    t = LiftTracker(config)
    t.exposure("u", "short", "c", 0, holdout=True)
    assert t.conversion("u", "short", DAY_MS) == 1
    assert t.conversion("u", "short", DAY_MS + 1) == 0


def test_a_conversion_counts_for_every_campaign_of_the_advertiser_the_user_entered():
    t = LiftTracker()
    t.exposure("u", "a", "c1", 0, holdout=False)
    t.exposure("u", "a", "c2", 10, holdout=True)
    t.exposure("u", "b", "c3", 0, holdout=False)
    assert t.conversion("u", "a", 5) == 1  # c2 not yet entered
    assert t.conversion("u", "a", 20) == 2
    by = {e.campaign_id: e for e in t.estimates()}
    assert by["c1"].exposed_conversions == 2.0
    assert by["c2"].holdout_conversions == 1.0 and by["c2"].exposed_users == 0
    assert by["c3"].exposed_conversions == 0.0


def test_the_first_arm_wins_and_a_contradiction_is_counted():
    t = LiftTracker()
    t.exposure("u", "a", "c", 0, holdout=True)
    t.exposure("u", "a", "c", 5, holdout=False)
    t.conversion("u", "a", 6)
    e = t.estimate("c")
    assert (e.holdout_users, e.exposed_users, e.holdout_conversions, t.conflicts) == (1, 0, 1, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5_000), max_size=6), min_size=2, max_size=30))
def test_the_incremental_sums_give_the_variance_of_the_users_outcomes(conversions):
    """Outcomes built one conversion at a time, any order of users: the same mean and sample
    variance as computed from the final outcomes."""
    t = LiftTracker()
    for i in range(len(conversions)):
        t.exposure(f"u{i}", "a", "c", 0, holdout=False)
    events = sorted((ts, i) for i, times in enumerate(conversions) for ts in times)
    for ts, i in events:
        t.conversion(f"u{i}", "a", ts, weight=0.5)
    outcomes = [0.5 * len(times) for times in conversions]
    arm = t.campaigns["c"].exposed
    assert arm.mean() == pytest.approx(statistics.fmean(outcomes))
    assert arm.variance() == pytest.approx(statistics.variance(outcomes), abs=1e-9)


def test_estimate_against_the_formulas_written_out():
    ex, ho = [0, 1, 2, 0, 1, 0, 3, 1], [0, 0, 1, 0, 1, 0]

    def arm(ys):
        return Arm(len(ys), float(sum(ys)), float(sum(y * y for y in ys)))

    e = estimate("c", CampaignState("a", arm(ex), arm(ho)))
    m_e, m_h = statistics.fmean(ex), statistics.fmean(ho)
    v_e, v_h = statistics.variance(ex), statistics.variance(ho)
    se = math.sqrt(v_e / len(ex) + v_h / len(ho))
    assert e.incremental == pytest.approx(len(ex) * (m_e - m_h))
    assert e.incremental_low == pytest.approx(len(ex) * (m_e - m_h - 1.959963984540054 * se))
    se_log = math.sqrt(v_e / (len(ex) * m_e**2) + v_h / (len(ho) * m_h**2))
    assert e.lift == pytest.approx(m_e / m_h - 1)
    assert e.lift_high == pytest.approx(m_e / m_h * math.exp(1.959963984540054 * se_log) - 1)
    assert e.lift_low < e.lift < e.lift_high
    v_pool = statistics.variance(ex + ho)
    z_pool = (m_e - m_h) / math.sqrt(v_pool * (1 / len(ex) + 1 / len(ho)))
    assert e.significant == (abs(z_pool) > 1.959963984540054)


def test_undefined_figures_stay_none_and_not_significant():
    nobody = estimate("c", CampaignState("a", Arm(50, 5.0, 5.0), Arm()))
    assert nobody.incremental is None and nobody.lift is None and not nobody.significant
    no_holdout_conversion = estimate("c", CampaignState("a", Arm(300, 12.0, 12.0), Arm(30)))
    assert no_holdout_conversion.lift is None and not no_holdout_conversion.significant
    assert no_holdout_conversion.incremental == pytest.approx(12.0)


def _experiment(rng: random.Random, *, n: int, rate: float, lift: float) -> LiftTracker:
    """n users, 10 % held out, Poisson conversions: rate held out, rate * (1 + lift) exposed."""
    t = LiftTracker()
    for i in range(n):
        holdout = rng.random() < 0.1
        t.exposure(f"u{i}", "a", "c", 0, holdout=holdout)
        mean = rate if holdout else rate * (1 + lift)
        k, p, limit = 0, rng.random(), math.exp(-mean)
        while p > limit:
            k += 1
            p *= rng.random()
        for j in range(k):
            t.conversion(f"u{i}", "a", 1 + j)
    return t


def test_intervals_cover_the_true_lift_and_a_null_effect_is_rarely_significant():
    """A Monte Carlo check of the estimator itself (not the generator): 95 % intervals should
    cover about 95 % of the time; a zero effect be called significant about 5 % of the time."""
    rng = random.Random(7)
    runs = 150
    covered = sum(
        (e.lift_low or -1) <= 0.3 <= (e.lift_high or math.inf)
        for e in (_experiment(rng, n=3000, rate=0.2, lift=0.3).estimate("c") for _ in range(runs))
    )
    false_positives = sum(
        _experiment(rng, n=3000, rate=0.2, lift=0.0).estimate("c").significant for _ in range(runs)
    )
    assert 0.90 <= covered / runs <= 0.99
    assert false_positives / runs <= 0.10


def test_expire_drops_closed_windows_and_keeps_the_sums():
    t = LiftTracker()
    for i in range(5):
        t.exposure(f"u{i}", "a", "c", i * DAY_MS, holdout=i == 0)
    t.conversion("u0", "a", DAY_MS)
    assert t.expire(W + 2 * DAY_MS + 1) == 3  # u0, u1, u2 entered on days 0-2
    assert sorted(t.entries) == ["u3", "u4"]
    assert t.conversion("u0", "a", W + 3 * DAY_MS) == 0
    e = t.estimate("c")
    assert (e.holdout_users, e.exposed_users, e.holdout_conversions) == (1, 4, 1.0)


def test_score_lift_coverage_and_zero_lift_flags():
    wide = estimate("c1", CampaignState("a", Arm(100, 20.0, 20.0), Arm(100, 10.0, 10.0)))
    flat = estimate("c2", CampaignState("a", Arm(100, 10.0, 10.0), Arm(100, 10.0, 10.0)))
    empty = estimate("c3", CampaignState("a", Arm(100, 10.0, 10.0), Arm(20)))
    truth = [
        {"campaign_id": "c1", "true_lift": 5.0, "true_incremental": 10.0, "zero_lift": False},
        {"campaign_id": "c2", "true_lift": 0.0, "true_incremental": 0.0, "zero_lift": True},
        {"campaign_id": "c3", "true_lift": 0.2, "true_incremental": 2.0, "zero_lift": False},
        {"campaign_id": "c4", "true_lift": 0.2, "true_incremental": 2.0, "zero_lift": False},
    ]
    score = score_lift([wide, flat, empty], truth)
    by = {r.estimate.campaign_id: r for r in score.rows}
    assert by["c1"].covered is False and by["c2"].covered is True and by["c3"].covered is None
    assert by["c1"].incremental_covered is True
    assert (score.with_interval, score.coverage) == (2, 0.5)
    assert (score.zero_lift_campaigns, score.zero_lift_not_significant) == (1, 1.0)
    assert by["c1"].lift_error == pytest.approx(1.0 - 5.0)
    assert score.missing == ["c4"]
