"""convstream.stream.quality.publish: event-quality gauges, with unlisted advertisers pooled as
"other"."""

from __future__ import annotations

import pytest

from convstream.core.quality import QualityTracker
from convstream.stream import metrics
from convstream.stream.quality import publish


def value(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def _clear() -> None:
    metrics.set_advertiser_allowlist([])
    for gauge in (metrics.EQ_PARAM_COVERAGE, metrics.EQ_DEDUPE_RATE, metrics.EQ_MATCH_RATE):
        gauge.clear()
    metrics.EQ_SCORE.clear()


@pytest.fixture(autouse=True)
def clean_gauges():
    """Before as well as after: another file's tests in this process (the metrics server's
    ``populate``, in the same pytest-xdist worker) set these gauges directly, not through
    ``publish``, so ``publish`` does not know to clear them."""
    _clear()
    yield
    _clear()


def observe(tracker, adv, n, *, em, matched, ts=1_000):
    for i in range(n):
        conv = {
            "conversion_key": f"{adv}:Purchase:{ts}-{i}",
            "advertiser_id": adv,
            "event_name": "Purchase",
            "ts": ts,
            "sources": ["capi", "pixel"] if i == 0 else ["capi"],
            "user_data": {"em": "e" * 64 if i < em else None, "client_ip_address": "10.0.0.1"},
        }
        tracker.observe(conv, {"user_id": "u" if i < matched else None})


def test_publish_sets_gauges_and_pools_unlisted_advertisers():
    metrics.set_advertiser_allowlist(["adv-1"])
    tracker = QualityTracker()
    observe(tracker, "adv-1", 4, em=4, matched=4)
    observe(tracker, "adv-2", 2, em=2, matched=0)
    observe(tracker, "adv-3", 2, em=0, matched=2)

    rows = publish(tracker)

    assert [(r.advertiser_id, r.n) for r in rows] == [("adv-1", 4), ("other", 4)]
    labels = {"advertiser": "other", "event_name": "Purchase"}
    assert value("convstream_eq_match_rate", **labels) == 0.5
    assert value("convstream_eq_param_coverage", **labels, param="em") == 0.5
    assert value("convstream_eq_param_coverage", **labels, param="client_ip_address") == 1.0
    assert value("convstream_eq_dedupe_rate", **labels) == 0.5
    assert value("convstream_eq_score", **labels) == rows[1].score
    listed = {"advertiser": "adv-1", "event_name": "Purchase"}
    assert value("convstream_eq_match_rate", **listed) == 1.0
    assert value("convstream_eq_dedupe_rate", **listed) == 0.25
    assert value("convstream_eq_score", advertiser="adv-2", event_name="Purchase") is None


def test_rows_that_leave_the_window_lose_their_series():
    metrics.set_advertiser_allowlist(["adv-1", "adv-2"])
    tracker = QualityTracker(window_ms=10)
    observe(tracker, "adv-1", 1, em=1, matched=1, ts=0)
    publish(tracker)
    assert value("convstream_eq_score", advertiser="adv-1", event_name="Purchase") is not None
    observe(tracker, "adv-2", 1, em=1, matched=1, ts=100)
    publish(tracker)
    assert value("convstream_eq_score", advertiser="adv-1", event_name="Purchase") is None
    assert value("convstream_eq_score", advertiser="adv-2", event_name="Purchase") is not None
