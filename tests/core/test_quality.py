from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convstream.core.quality import PARAMS, QualityTracker, format_table, score
from convstream.core.units import DAY_MS

_ids = itertools.count()
HASH = "a" * 64


def conv(adv="adv-1", event="Purchase", ts=1_000, sources=("capi",), key=None, **user_data):
    return {
        "conversion_key": key or f"{adv}:{event}:e{next(_ids)}",
        "advertiser_id": adv,
        "event_name": event,
        "ts": ts,
        "sources": list(sources),
        "user_data": user_data,
    }


def label(user_id=None):
    return {"user_id": user_id, "match_confidence": 0.9 if user_id else 0.0}


def only_row(tracker, **kwargs):
    rows = tracker.report(**kwargs)
    assert len(rows) == 1
    return rows[0]


def test_known_coverage_dedupe_and_match_rate():
    t = QualityTracker()
    t.observe(conv(em=HASH, ph=HASH, sources=("capi", "pixel")), label("u1"))
    t.observe(conv(em=HASH, client_ip_address="10.0.0.1", client_user_agent="UA"), label("u2"))
    t.observe(conv(em="", click_id=None, device_id=HASH, sources=("pixel",)), label())
    t.observe(conv(external_id=HASH, click_id="c1", sources=("pixel", "capi")), label())
    row = only_row(t)
    assert row.n == 4
    assert row.coverage == {
        "em": 0.5,
        "ph": 0.25,
        "external_id": 0.25,
        "click_id": 0.25,
        "ip": 0.25,
        "user_agent": 0.25,
        "device_id": 0.25,
    }
    assert row.dedupe_rate == 0.5
    assert row.match_rate == 0.5
    assert row.score == score(row.coverage, 0.5, 0.5)


def test_rows_per_advertiser_and_event_name_sorted():
    t = QualityTracker()
    for adv, event in [("b", "Lead"), ("a", "Purchase"), ("a", "AddToCart"), ("a", "Purchase")]:
        t.observe(conv(adv, event), label("u"))
    assert [(r.advertiser_id, r.event_name, r.n) for r in t.report()] == [
        ("a", "AddToCart", 1),
        ("a", "Purchase", 2),
        ("b", "Lead", 1),
    ]


def test_observing_a_key_again_replaces_it():
    t = QualityTracker()
    first = conv(key="a:Purchase:1", sources=("pixel",))
    t.observe(first, label())
    merged = {**first, "sources": ["capi", "pixel"], "user_data": {"em": HASH}}
    t.observe(merged, label("u1"))
    t.observe(merged, label("u1"))  # a re-delivered revision changes nothing
    row = only_row(t)
    assert (row.n, row.coverage["em"], row.dedupe_rate, row.match_rate) == (1, 1.0, 1.0, 1.0)


def test_window_expires_by_event_time_only():
    t = QualityTracker(window_ms=7 * DAY_MS)
    t.observe(conv(ts=0, em=HASH), label("u"))
    t.observe(conv(ts=7 * DAY_MS), label())
    row = only_row(t)
    assert row.n == 2  # exactly at the window edge: still in
    assert t.observe(conv(ts=7 * DAY_MS + 1), label())
    row = only_row(t)
    assert (row.n, row.coverage["em"], row.match_rate) == (2, 0.0, 0.0)
    # Behind the window: not counted. Ahead of a quiet period: no wall clock expires anything.
    assert not t.observe(conv(ts=0), label("u"))
    assert only_row(t).n == 2
    assert len(t) == 2


def test_group_disappears_when_its_conversions_expire():
    t = QualityTracker(window_ms=10)
    t.observe(conv("old", ts=0), label())
    t.observe(conv("new", ts=100), label())
    assert [r.advertiser_id for r in t.report()] == ["new"]


def test_max_entries_drops_the_oldest():
    t = QualityTracker(max_entries=3)
    for ts in range(5):
        t.observe(conv(ts=ts, em=HASH if ts >= 2 else None), label())
    assert len(t) == 3
    assert only_row(t).coverage["em"] == 1.0


def test_advertiser_group_pools_figures():
    t = QualityTracker()
    t.observe(conv("listed", em=HASH), label("u"))
    t.observe(conv("x", em=HASH), label("u"))
    t.observe(conv("y"), label())
    rows = t.report(lambda adv: adv if adv == "listed" else "other")
    assert [(r.advertiser_id, r.n, r.coverage["em"], r.match_rate) for r in rows] == [
        ("listed", 1, 1.0, 1.0),
        ("other", 2, 0.5, 0.5),
    ]


@st.composite
def quality(draw):
    coverage = {p: draw(st.floats(0.0, 1.0)) for p in PARAMS}
    return coverage, draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0))


@given(quality(), st.sampled_from(PARAMS), st.floats(0.0, 1.0))
def test_score_is_monotone_and_bounded(q, param, step):
    coverage, match_rate, dedupe_rate = q
    base = score(coverage, match_rate, dedupe_rate)
    assert 0.0 <= base <= 10.0
    more_coverage = {**coverage, param: min(1.0, coverage[param] + step)}
    assert score(more_coverage, match_rate, dedupe_rate) >= base
    assert score(coverage, min(1.0, match_rate + step), dedupe_rate) >= base
    assert score(coverage, match_rate, min(1.0, dedupe_rate + step)) >= base


def test_score_grows_with_observed_coverage_and_matches():
    def tracked(n_em, n_matched, n=10):
        t = QualityTracker()
        for i in range(n):
            t.observe(conv(em=HASH if i < n_em else None), label("u" if i < n_matched else None))
        return only_row(t).score

    assert tracked(0, 5) < tracked(5, 5) < tracked(10, 5)
    assert tracked(5, 0) < tracked(5, 5) < tracked(5, 10)


def feed(t, adv, n_with, matched_with, n_without, matched_without, param="em"):
    """n_with conversions carrying `param` (matched_with of them matched), and n_without."""
    for i in range(n_with):
        t.observe(conv(adv, **{param: HASH}), label("u" if i < matched_with else None))
    for i in range(n_without):
        t.observe(conv(adv), label("u" if i < matched_without else None))


def test_advice_estimates_gain_from_the_advertisers_own_traffic():
    t = QualityTracker(min_samples=30, max_gain=0.5)
    feed(t, "a", 60, 54, 40, 16)  # em: 90% matched with, 40% without -> lift 0.5
    (row,) = t.report()
    advice = {a.param: a for a in row.advice}
    assert set(advice) == {"em"}  # no other parameter has both sides sampled
    em = advice["em"]
    assert em.basis == "advertiser"
    assert (em.n_with, em.n_without) == (60, 40)
    assert em.lift == pytest.approx(0.5)
    assert em.gain == pytest.approx(0.2)  # the 40% without em, times the lift
    assert "add hashed email (em): +20% match rate on your traffic" in em.text


def test_advice_sign_no_advice_when_the_parameter_does_not_help():
    t = QualityTracker(min_samples=30)
    feed(t, "a", 50, 10, 50, 40)  # matched less often with em than without
    assert t.report()[0].advice == []
    t = QualityTracker(min_samples=30)
    feed(t, "a", 50, 25, 50, 25)  # no difference
    assert t.report()[0].advice == []


def test_advice_is_capped_and_never_promises_more_than_is_left():
    t = QualityTracker(min_samples=30, max_gain=0.1)
    feed(t, "a", 30, 30, 70, 0)  # lift 1.0 on 70% without: capped at 10 points
    assert t.report()[0].advice[0].gain == pytest.approx(0.1)
    t = QualityTracker(min_samples=30, max_gain=1.0)
    feed(t, "a", 30, 30, 30, 0)  # lift 1.0 on 50% without: exactly what is left to match
    assert t.report()[0].advice[0].gain == pytest.approx(0.5)


def test_advice_falls_back_to_all_traffic_for_small_advertisers():
    t = QualityTracker(min_samples=30)
    feed(t, "big", 40, 36, 40, 8)  # lift 0.7
    feed(t, "small", 2, 2, 3, 0)
    small = next(r for r in t.report() if r.advertiser_id == "small")
    (em,) = small.advice
    assert em.basis == "all traffic"
    assert (em.n_with, em.n_without) == (42, 43)
    assert "all advertisers' traffic" in em.text


def test_no_advice_without_enough_samples_anywhere():
    t = QualityTracker(min_samples=30)
    feed(t, "a", 5, 5, 5, 0)
    assert t.report()[0].advice == []


def test_format_table_lists_rows_and_advice():
    t = QualityTracker(min_samples=30)
    feed(t, "adv-01", 60, 54, 40, 16)
    t.observe(conv("adv-02", "Lead", click_id="c"), label("u"))
    text = format_table(t.report())
    lines = text.splitlines()
    assert lines[0].split() == [
        "advertiser", "event", "n", "score", "match", "dedupe",
        "em", "ph", "ext", "click", "ip", "ua", "dev",
    ]  # fmt: skip
    assert lines[1].split()[:6] == ["adv-01", "Purchase", "100", "3.5", "70%", "0%"]
    assert lines[2].startswith("  -> add hashed email (em): +20% match rate")
    assert lines[3].split()[:3] == ["adv-02", "Lead", "1"]
    assert "observational" in text
    assert "no conversions" in format_table([])
