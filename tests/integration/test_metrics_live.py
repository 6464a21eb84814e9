"""A real worker on tansu, scraped by a real Prometheus: every PromQL expression of the Grafana
dashboards and the alert rules runs against what the worker itself exposes.

Expressions that must come back empty on a healthy run are listed in EXPECTED_EMPTY with the
reason; any other expression without data fails the test, naming the metrics it selects."""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request
from collections.abc import Callable, Iterator

import orjson
import pytest

from convstream.core.quality import QualityTracker
from convstream.stream.kafka import produce
from convstream.stream.quality import run_quality
from convstream.stream.runner import wait_for_labels
from convstream.synth.generate import config_from_args, generate
from tests.deploy.promql import (
    Prometheus,
    PromQLError,
    free_port,
    labelled_expressions,
    metric_names,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.needs("prometheus"),
]

RULES = "alerts.yml: "
# Alert conditions are empty while all is well; each of these must stay empty on this run.
EXPECTED_EMPTY = {
    RULES + "ConvstreamWorkerDown": "up == 0: the worker is scraped fine",
    RULES + "ConvstreamWorkersAbsent": "absent(up == 1): the worker is up",
    RULES + "ConvstreamBrokerUnreachable": "convstream_broker_up == 0: the broker is up",
    RULES + "ConvstreamConsumerLagGrowing": "needs lag above 10000 records; the replay is ~1500",
    RULES + "ConvstreamDeadLetterRateHigh": "needs > 0.1 dead letters/s over 10m; we send 3",
    RULES + "ConvstreamMatchRateDrop": "compares with `offset 1h`: Prometheus is seconds old",
    RULES + "ConvstreamFileDescriptorsNearLimit": "a worker opens a few dozen of its limit",
}
# Data-dependent: ECE above 0.05 over a few dozen labels is a coin toss, so either is fine.
MAY_BE_EMPTY = {RULES + "ConvstreamCalibrationDrift": "ECE of a few dozen labels is noisy"}
# Values that show a gauge was set by the worker, not just exported at its initial 0.
SET_BY_WORKER = {
    "convstream_worker_up == 1": "the metrics server marks the worker up",
    "convstream_broker_up == 1": "the worker reports its broker connection",
    "convstream_match_rate > 0": "labels name users",
    "convstream_model_auc > 0": "the match model's progressive AUC",
    "convstream_model_logloss > 0": "the match model's progressive log loss",
    'sum(convstream_labels_out_total{revision_kind="first"}) > 0': "labels went out",
    'sum(convstream_events_in_total{topic="conversions"}) > 0': "conversions came in",
    "sum(convstream_dead_letter_total) >= 3": "the malformed records were counted",
    "sum(convstream_dedupe_total) > 0": "CAPI and pixel copies were folded",
    "convstream_heap_released_bytes_total > 0": "the heap timer gave free pages back (glibc)",
    "count(convstream_event_loop_lag_seconds_count > 0) == 2": "main and consumer loops probed",
    'convstream_gc_pause_seconds_count{generation="0"} > 0': "collections are timed",
    "convstream_process_resident_memory_bytes > 10e6": "the process's resident memory",
    "convstream_process_cpu_seconds_total > 0": "the process's CPU time",
    # 6 input topics x 9 reasons, at zero from the start: increase() sees a first burst.
    "count(convstream_dead_letter_total) >= 54": "every (topic, reason) series exists",
    "count(convstream_records_rerouted_total) >= 6": "every input topic's rerouted series",
}
TABLES = {
    "users",
    "identifiers",
    "conversion-state",
    "match-models",
    "event-clocks",
    "parked-lookups",
}
CONSUMED_TOPICS = {"impressions", "clicks", "identity", "conversions", "feedback"}
MALFORMED = [
    ("conversions", "{not json"),
    ("clicks", {"event_id": "c", "click_id": "d", "ts": 1767571200000, "user_id": "u"}),
    ("identity", {"user_id": "u", "ts": 1767571200000, "ip": "999.1.1.1"}),
]
DEADLINE_S = 45.0


@pytest.fixture
def prometheus_for() -> Iterator[Callable[[str], Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        server = Prometheus(target).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def replay() -> tuple[list[dict], list[dict]]:
    """About 2000 events, 34 conversions. The seed is one whose conversions have no day-long
    gap on any of the 4 partitions: the worker dead-letters a conversion more than a day ahead
    of its partition's event-time clock (`future_ts`), and such a key would get no label."""
    lines, truth = generate(config_from_args("default", seed=0, users=250, days=3))
    step = len(lines) // (len(MALFORMED) + 1)
    for n, (topic, value) in enumerate(MALFORMED, start=1):
        lines.insert(n * step, {"topic": topic, "value": value})
    return lines, truth


def wait_for_metrics_server(port: int, worker, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.alive(), worker.log_path.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"worker metrics server not up on :{port} after {timeout}s")


def run_all(prometheus: Prometheus, exprs: dict[str, str]) -> dict[str, list | PromQLError]:
    results: dict[str, list | PromQLError] = {}
    for where, expr in exprs.items():
        try:
            results[where] = prometheus.query(expr)
        except PromQLError as error:
            results[where] = error
    return results


def missing_data(results: dict[str, list | PromQLError]) -> list[str]:
    return [
        where
        for where, result in results.items()
        if where not in EXPECTED_EMPTY and where not in MAY_BE_EMPTY and not result
    ]


def label_values(prometheus: Prometheus, expr: str, label: str) -> set[str]:
    return {series["metric"].get(label, "") for series in prometheus.query(expr)}


def test_dashboards_and_alerts_against_a_real_worker(settings, start_worker, prometheus_for):
    port = free_port()
    settings = settings.replace(metrics_port=port, metrics_host="127.0.0.1")
    worker = start_worker(settings)
    wait_for_metrics_server(port, worker)
    # Up from the first scrape: the worker fetched metadata before it served metrics (it read
    # 0 for ~20 s, until the first health tick, before issue 23).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
        assert "\nconvstream_broker_up 1.0\n" in page.read().decode()
    prometheus = prometheus_for(f"127.0.0.1:{port}")
    prometheus.wait_for_scrapes(1)

    lines, truth = replay()
    asyncio.run(produce(settings, lines))
    expected = {row["conversion_key"] for row in truth}
    labels = wait_for_labels(settings, expected, timeout=60, settle=2.0)
    assert expected <= {label["conversion_key"] for label in labels}, worker.log_path.read_text()
    assert worker.alive()

    exprs = dict(labelled_expressions())
    checks = {f"set by the worker: {expr}": expr for expr in SET_BY_WORKER}
    queries = {**exprs, **checks}
    # Gauges come from timers (seconds apart) and scrapes (1 s): poll until all is in.
    deadline = time.monotonic() + DEADLINE_S
    while True:
        results = run_all(prometheus, queries)
        tables = label_values(prometheus, "convstream_table_entries", "table")
        topics = label_values(prometheus, "convstream_consumer_lag", "topic")
        done = not missing_data(results) and TABLES <= tables and CONSUMED_TOPICS <= topics
        if done or time.monotonic() > deadline:
            break
        time.sleep(1.0)

    errors = {where: str(r) for where, r in results.items() if isinstance(r, PromQLError)}
    assert not errors
    problems = [
        f"no data: {where} -> selects {sorted(metric_names(queries[where]))}"
        for where in missing_data(results)
    ]
    if not TABLES <= tables:
        problems.append(f"table sizes never set for {sorted(TABLES - tables)}")
    if not CONSUMED_TOPICS <= topics:
        problems.append(f"consumer lag never set for {sorted(CONSUMED_TOPICS - topics)}")
    assert not problems, "\n".join(problems)

    firing = {where: results[where] for where in EXPECTED_EMPTY if results[where]}
    assert not firing, f"alert conditions true on a healthy run: {firing}"
    for where in EXPECTED_EMPTY:
        # Empty, but not for want of input: every metric the condition reads has data.
        for name in metric_names(exprs[where]):
            assert prometheus.query(name), f"{where}: {name} has no data"

    rules = prometheus.rules()
    assert len(rules) == len([w for w in exprs if w.startswith(RULES)])
    unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] == "err"}
    assert not unhealthy


# --- convstream quality ------------------------------------------------------------------------

TS = 1_767_571_200_000
DAY = 86_400_000
EM = "e" * 64


def conversion(event_id, source, ts=TS, adv="adv-1", **user_data):
    return {
        "event_id": event_id,
        "event_name": "Purchase",
        "source": source,
        "ts": ts,
        "advertiser_id": adv,
        "value": 10.0,
        "currency": "EUR",
        "user_data": user_data,
    }


def label(event_id, user_id, revision=0, adv="adv-1", explanation=()):
    return {
        "match_explanation": list(explanation),
        "conversion_key": f"{adv}:Purchase:{event_id}",
        "advertiser_id": adv,
        "event_name": "Purchase",
        "event_id": event_id,
        "user_id": user_id,
        "match_confidence": 0.9 if user_id else 0.0,
        "revision": revision,
    }


def test_quality_command_reads_the_topics(settings, capsys):
    conversions = [
        conversion("1", "pixel", client_ip_address="10.0.0.1"),
        "{not json",
        conversion("1", "capi", em=EM),  # merged into 1: both sources, em and ip
        conversion("2", "capi", em=EM),
        # A junk IP is dropped alone (issue 21): the conversion is kept, and has no label here.
        conversion("3", "pixel", client_ip_address="not-an-ip"),
        conversion("4", "capi", ts=TS - 8 * DAY),  # more than 7 days behind: outside the window
        conversion("5", "capi", adv="adv-2", click_id="k"),  # no label yet: left out
    ]
    # Conversion 2's email was dropped once answered: shared by too many users (issue 21).
    shared = label("2", None, explanation=["no candidate", "dropped em: shared"])
    labels = [label("1", None), label("1", "u1", revision=1), shared, label("4", "u4")]
    lines = [{"topic": "conversions", "value": v} for v in conversions]
    lines += [{"topic": "labels", "value": v} for v in labels]
    asyncio.run(produce(settings, lines))

    args = argparse.Namespace(
        broker=settings.broker, topic_prefix=settings.topic_prefix, window_days=7.0, json=True
    )
    assert run_quality(args) == 0
    (row,) = orjson.loads(capsys.readouterr().out)
    assert (row["advertiser_id"], row["event_name"], row["n"]) == ("adv-1", "Purchase", 2)
    assert row["coverage"]["em"] == 1.0 and row["coverage"]["ip"] == 0.5
    assert (row["dedupe_rate"], row["match_rate"]) == (0.5, 0.5)
    expected = QualityTracker()
    merged = {**conversion("1", "capi", em=EM, client_ip_address="10.0.0.1")}
    expected.observe({**merged, "sources": ["capi", "pixel"]}, label("1", "u1"))
    expected.observe({**conversion("2", "capi", em=EM), "sources": ["capi"]}, shared)
    assert row["score"] == expected.report()[0].score

    args.json = False
    assert run_quality(args) == 0
    text = capsys.readouterr().out
    assert "adv-1" in text and "Purchase" in text and "2 conversions without a label" in text
    rejected = [line.split() for line in text.splitlines() if line.startswith("adv-1 ")]
    # adv-1 sent two emails (1's capi copy, 2), one dropped as shared; two IPs, one junk.
    assert ["adv-1", "emails", "shared", "1", "50.0%"] in rejected
    assert ["adv-1", "IP", "addresses", "invalid_ip", "1", "50.0%"] in rejected
    assert "adv-1: 50 % of your emails are shared by more users than one household" in text
