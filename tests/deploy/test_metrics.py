"""convstream.stream.metrics: what observe_label updates, and that label values stay few and
anonymous."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from convstream.stream import metrics
from tests.deploy.metrics_server import CONVERSION_TS, populate, sample_label

EMAIL = "alice@example.com"
USER_ID = "u-secret-7731"


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def fresh_window():
    metrics.MATCH_WINDOW.clear()
    yield
    metrics.MATCH_WINDOW.clear()
    metrics.set_advertiser_allowlist([])


def test_registry_is_dedicated():
    assert isinstance(metrics.REGISTRY, CollectorRegistry)
    from prometheus_client import REGISTRY as default

    assert metrics.REGISTRY is not default
    default_names = {family.name for family in default.collect()}
    assert not any(name.startswith("convstream_") for name in default_names)


def test_observe_label_updates_per_label_metrics():
    before = {
        "first": value("convstream_labels_out_total", revision_kind="first"),
        "click": value("convstream_conversions_total", match_method="deterministic:click"),
        "credit_click": value("convstream_credited_conversions_total", engagement_type="click"),
        "credit_view": value("convstream_credited_conversions_total", engagement_type="view"),
        "lag_count": value(
            "convstream_click_to_conversion_lag_seconds_count", engagement_type="click"
        ),
        "lag_sum": value("convstream_click_to_conversion_lag_seconds_sum", engagement_type="click"),
        "lag_le_1h": value(
            "convstream_click_to_conversion_lag_seconds_bucket",
            engagement_type="click",
            le="3600.0",
        ),
        "weight": value("convstream_label_weight_total"),
        "confidence": value("convstream_match_confidence_count"),
        "confidence_le": value("convstream_match_confidence_bucket", le="0.95"),
        "latency": value("convstream_processing_latency_seconds_count"),
        "latency_sum": value("convstream_processing_latency_seconds_sum"),
    }
    metrics.observe_label(sample_label(), arrival_wall_s=100.0, now_wall_s=100.25)

    assert value("convstream_labels_out_total", revision_kind="first") == before["first"] + 1
    assert (
        value("convstream_conversions_total", match_method="deterministic:click")
        == before["click"] + 1
    )
    assert value("convstream_credited_conversions_total", engagement_type="click") == pytest.approx(
        before["credit_click"] + 0.75
    )
    assert value("convstream_credited_conversions_total", engagement_type="view") == pytest.approx(
        before["credit_view"] + 0.25
    )
    lag = "convstream_click_to_conversion_lag_seconds"
    assert value(f"{lag}_count", engagement_type="click") == before["lag_count"] + 1
    assert value(f"{lag}_sum", engagement_type="click") == pytest.approx(before["lag_sum"] + 3600)
    assert value(f"{lag}_bucket", engagement_type="click", le="3600.0") == before["lag_le_1h"] + 1
    assert value("convstream_label_weight_total") == pytest.approx(before["weight"] + 0.9)
    assert value("convstream_match_confidence_count") == before["confidence"] + 1
    assert value("convstream_match_confidence_bucket", le="0.95") == before["confidence_le"]
    assert value("convstream_processing_latency_seconds_count") == before["latency"] + 1
    assert value("convstream_processing_latency_seconds_sum") == pytest.approx(
        before["latency_sum"] + 0.25
    )
    assert value("convstream_match_rate") == 1.0


def test_correction_and_unmatched_label():
    corrections = value("convstream_labels_out_total", revision_kind="correction")
    none = value("convstream_conversions_total", match_method="none")
    confidence = value("convstream_match_confidence_count")
    weight = value("convstream_label_weight_total")
    unmatched = sample_label(
        match_method="none", user_id=None, match_confidence=0.0, credits=[], label_weight=0.0
    )
    metrics.observe_label(unmatched | {"revision": 2}, arrival_wall_s=0.0, now_wall_s=1.0)

    assert value("convstream_labels_out_total", revision_kind="correction") == corrections + 1
    assert value("convstream_conversions_total", match_method="none") == none + 1
    # Unmatched labels have no match confidence to speak of, and no weight.
    assert value("convstream_match_confidence_count") == confidence
    assert value("convstream_label_weight_total") == weight
    assert value("convstream_match_rate") == 0.0


def test_match_rate_is_a_sliding_window_of_1000():
    for _ in range(1000):
        metrics.observe_label(sample_label(user_id=None), 0.0, now_wall_s=0.0)
    assert value("convstream_match_rate") == 0.0
    for _ in range(250):
        metrics.observe_label(sample_label(), 0.0, now_wall_s=0.0)
    assert value("convstream_match_rate") == pytest.approx(0.25)
    for _ in range(1000):
        metrics.observe_label(sample_label(), 0.0, now_wall_s=0.0)
    assert value("convstream_match_rate") == 1.0


def test_malformed_fields_are_skipped_not_raised():
    metrics.observe_label(
        {
            "match_method": None,
            "match_confidence": "n/a",
            "user_id": "u1",
            "credits": [
                {"engagement_type": "click", "engagement_ts": None, "credit": "x"},
                {"engagement_type": "click", "engagement_ts": CONVERSION_TS + 1, "credit": 1.0},
                {"engagement_type": "click", "credit": -1},
            ],
            "label_weight": float("nan"),
            "ts": CONVERSION_TS,
            "revision": None,
        },
        arrival_wall_s=10.0,
        now_wall_s=5.0,
    )
    assert value("convstream_conversions_total", match_method="other") >= 1


def test_advertiser_allowlist_bounds_cardinality():
    ids = [f"adv-{i}" for i in range(120)]
    metrics.set_advertiser_allowlist(ids)
    assert metrics.advertiser_label("adv-0") == "adv-0"
    assert metrics.advertiser_label("adv-49") == "adv-49"
    assert metrics.advertiser_label("adv-50") == "other"
    metrics.set_advertiser_allowlist(ids, max_n=3)
    assert [metrics.advertiser_label(i) for i in ids[:5]] == ["adv-0", "adv-1", "adv-2"] + [
        "other"
    ] * 2

    metrics.set_advertiser_allowlist(["adv-0", EMAIL, "has space"])
    assert metrics.advertiser_label(EMAIL) == "other"
    assert metrics.advertiser_label("has space") == "other"

    for i in range(200):
        metrics.set_event_quality(
            f"adv-{i}",
            f"Custom{i}",
            param_coverage={f"param_{i}": 0.5, EMAIL: 1.0},
            dedupe_rate=0.1,
            match_rate=0.5,
            score=5.0,
        )
    series = {
        name: {tuple(sorted(s.labels.items())) for s in family.samples}
        for family in metrics.REGISTRY.collect()
        if (name := family.name).startswith("convstream_eq_")
    }
    assert {dict(labels)["advertiser"] for labels in series["convstream_eq_score"]} <= {
        "adv-0",
        "adv-1",
        "adv-2",
        "other",
    }
    # Beyond the standard event and parameter names, a few newcomers each, whatever the input.
    custom_events = {dict(labels)["event_name"] for labels in series["convstream_eq_score"]}
    custom_params = {dict(labels)["param"] for labels in series["convstream_eq_param_coverage"]}
    assert len({e for e in custom_events if e.startswith("Custom")}) <= 20
    assert len({p for p in custom_params if p.startswith("param_")}) <= 16
    assert "other" in custom_events and "other" in custom_params


def test_label_values_never_carry_user_ids_or_emails():
    hostile = {
        "match_method": f"model:{USER_ID}",
        "match_confidence": 0.5,
        "user_id": EMAIL,
        "credits": [
            {"engagement_type": USER_ID, "engagement_ts": CONVERSION_TS - 1, "credit": 1.0},
            {"engagement_type": EMAIL, "engagement_ts": CONVERSION_TS - 1, "credit": 1.0},
        ],
        "label_weight": 1.0,
        "ts": CONVERSION_TS,
        "revision": EMAIL,
    }
    metrics.observe_label(hostile, 0.0, now_wall_s=1.0)
    metrics.observe_label(hostile | {"match_method": EMAIL, "user_id": USER_ID}, 0.0)
    metrics.count_dead_letter("conversions", EMAIL)
    metrics.count_dead_letter(EMAIL, "schema")
    metrics.count_dedupe(USER_ID)
    metrics.set_table_entries(EMAIL, 1)
    metrics.set_event_quality(
        EMAIL, EMAIL, param_coverage={EMAIL: 1.0}, dedupe_rate=0, match_rate=0, score=0
    )
    populate()

    values = {
        label_value
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        for label_value in sample.labels.values()
    }
    assert values
    assert not [v for v in values if "@" in v or USER_ID in v or "u-000042" in v]


def test_start_metrics_server_disabled_on_port_0():
    metrics.set_worker_up(False)
    metrics.start_metrics_server("127.0.0.1", 0)
    assert value("convstream_worker_up") == 0.0


def test_every_dead_letter_series_exists_at_zero_before_its_first_record():
    """Issue 23: increase() read 0 for a burst of 60 dead letters whose (topic, reason) series
    appeared with the burst. The worker pre-creates them (convstream/stream/app.py)."""
    topic = "fresh-input"  # a topic no other test touches

    def sample(name: str, reason: str | None = None) -> float | None:
        labels = {"topic": topic} if reason is None else {"topic": topic, "reason": reason}
        return metrics.REGISTRY.get_sample_value(name, labels)

    assert sample("convstream_dead_letter_total", "too_large") is None
    metrics.precreate([topic])
    for reason in metrics.DEAD_LETTER_REASONS:
        assert sample("convstream_dead_letter_total", reason) == 0.0
    assert sample("convstream_records_rerouted_total") == 0.0
    assert sample("convstream_events_in_total") == 0.0


def test_process_cpu_and_memory_are_exported():
    assert value("convstream_process_resident_memory_bytes") > 1 << 20
    assert value("convstream_process_cpu_seconds_total") > 0


def test_loop_lag_buckets_reach_30_seconds():
    """A stall of seconds must land in a bucket, not in +Inf."""
    metrics.observe_loop_lag(11.0, loop="main")
    assert value("convstream_event_loop_lag_seconds_bucket", loop="main", le="30.0") >= 1
    assert (
        value("convstream_event_loop_lag_seconds_bucket", loop="main", le="30.0")
        - value("convstream_event_loop_lag_seconds_bucket", loop="main", le="10.0")
    ) >= 1
