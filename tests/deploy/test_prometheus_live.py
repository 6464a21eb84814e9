"""A real Prometheus scrapes a process serving convstream.stream.metrics.REGISTRY: every metric the
dashboards and alert rules select has data, every expression runs, every rule evaluates."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.deploy.promql import (
    REPO,
    Prometheus,
    PromQLError,
    defined_metric_names,
    labelled_expressions,
    metric_names,
)

pytestmark = pytest.mark.needs("prometheus")


@pytest.fixture(scope="module")
def metrics_target() -> Iterator[str]:
    """host:port of a stand-in worker process with every metric filled in."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.deploy.metrics_server", "--max-seconds", "120"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            process.kill()
            pytest.fail(f"metrics server did not start: {line}{process.stderr.read()}")
        yield f"127.0.0.1:{int(line.split()[1])}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        process.stdout.close()
        process.stderr.close()


@pytest.fixture(scope="module")
def prometheus(metrics_target) -> Iterator[Prometheus]:
    with Prometheus(metrics_target) as server:
        server.wait_for_scrapes(2)
        yield server


def test_target_serves_only_the_convstream_registry(metrics_target):
    with urllib.request.urlopen(f"http://{metrics_target}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert "convstream_worker_up 1.0" in body
    assert "python_gc_objects_collected_total" not in body


def test_every_selected_metric_has_data(prometheus):
    selected = set().union(*(metric_names(expr) for _, expr in labelled_expressions()))
    missing = [name for name in sorted(selected) if not prometheus.query(name)]
    assert not missing, f"no data in Prometheus for {missing}"


def test_every_defined_metric_is_scraped(prometheus):
    missing = [name for name in sorted(defined_metric_names()) if not prometheus.query(name)]
    assert not missing, f"not scraped: {missing}"


def test_every_expression_runs(prometheus):
    errors = []
    for where, expr in labelled_expressions():
        try:
            prometheus.query(expr)
        except PromQLError as error:
            errors.append(f"{where}: {error}")
    assert not errors
    # A few that must have a value with the stand-in's data.
    assert prometheus.query('sum(rate(convstream_events_in_total{topic="conversions"}[1m])) > 0')
    assert prometheus.query("convstream_match_rate > 0")


def test_alert_rules_evaluate_cleanly(prometheus):
    deadline = time.monotonic() + 20
    while True:
        rules = prometheus.rules()
        if rules and all(rule["health"] != "unknown" for rule in rules):
            break
        assert time.monotonic() < deadline, f"rules not evaluated: {rules}"
        time.sleep(0.5)
    unhealthy = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not unhealthy
    assert len(rules) == 8
