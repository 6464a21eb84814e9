"""Prometheus config, alert rules and the Grafana dashboard: valid, and only about metrics that
convstream/stream/metrics.py defines."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.deploy.promql import (
    ALERT_RULE_TESTS,
    ALERT_RULES,
    DASHBOARDS,
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    dashboard_expressions,
    defined_metric_names,
    labelled_expressions,
    metric_names,
    rule_expressions,
)

needs_promtool = pytest.mark.needs("promtool")


def promtool(*args: str) -> None:
    result = subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, cwd=ALERT_RULES.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_rules():
    promtool("check", "rules", str(ALERT_RULES))


@needs_promtool
def test_promtool_check_config():
    promtool("check", "config", str(PROMETHEUS_CONFIG))


@needs_promtool
def test_promtool_rule_unit_tests():
    promtool("test", "rules", str(ALERT_RULE_TESTS))


def test_expressions_use_only_defined_metrics():
    defined = defined_metric_names() | {"up"}
    expressions = labelled_expressions()
    assert len(expressions) > 20
    for where, expr in expressions:
        names = metric_names(expr)
        assert names, f"{where}: selects no known metric: {expr}"
        assert names <= defined, f"{where}: undefined {sorted(names - defined)}"


def test_dashboards_and_rules_cover_every_metric():
    used = set().union(*(metric_names(expr) for _, expr in labelled_expressions()))
    defined = defined_metric_names()
    # A histogram counts as used when any of its series is.
    used |= {name.rsplit("_", 1)[0] + suffix for name in used for suffix in ("_sum", "_count")}
    assert defined - used == set()


def test_required_alerts():
    alerts = {where.split(": ")[1]: expr for where, expr in rule_expressions()}
    assert "up{" in alerts["ConvstreamWorkerDown"]
    assert "absent(" in alerts["ConvstreamWorkersAbsent"]
    assert "deriv(convstream_consumer_lag[10m])" in alerts["ConvstreamConsumerLagGrowing"]
    assert "convstream_dead_letter_total" in alerts["ConvstreamDeadLetterRateHigh"]
    assert "offset 1h" in alerts["ConvstreamMatchRateDrop"]
    assert "convstream_calibration_ece > 0.05" in alerts["ConvstreamCalibrationDrift"]
    assert "convstream_process_open_fds" in alerts["ConvstreamFileDescriptorsNearLimit"]
    for group in yaml.safe_load(ALERT_RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert {"summary", "description"} <= rule["annotations"].keys()


def test_dashboard_is_valid_grafana_json():
    assert DASHBOARDS, "no dashboard under deploy/grafana/dashboards"
    datasource = yaml.safe_load(
        (GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and len(dashboard["uid"]) <= 40
        assert 36 <= dashboard["schemaVersion"] <= 41
        assert dashboard.get("id") is None
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == datasource["uid"]
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
                assert panel["targets"], panel["title"]


def test_dashboard_panels_cover_the_brief():
    text = " ".join(expr for _, expr in dashboard_expressions(resolved=False))
    for needle in (
        "rate(convstream_events_in_total",
        "rate(convstream_labels_out_total",
        "by (topic, reason) (rate(convstream_dead_letter_total",
        "convstream_watermark_lag_seconds",
        "convstream_consumer_lag",
        "convstream_match_rate",
        "histogram_quantile(0.9, sum by (le) (rate(convstream_match_confidence_bucket",
        "convstream_model_auc",
        "convstream_model_logloss",
        "convstream_calibration_ece",
        "rate(convstream_click_to_conversion_lag_seconds_bucket",
        "rate(convstream_label_weight_total",
        "rate(convstream_processing_latency_seconds_bucket",
        "by (advertiser, event_name) (convstream_eq_score",
    ):
        assert needle in text, needle
