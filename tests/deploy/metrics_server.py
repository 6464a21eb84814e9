"""A stand-in worker for the Prometheus checks: fills every metric of convstream.stream.metrics,
serves
REGISTRY on loopback, prints `PORT <n>`, and keeps observing a label now and then.

    python -m tests.deploy.metrics_server [--max-seconds 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from convstream.core.identity import Rejection
from convstream.stream import metrics
from tests.deploy.promql import free_port

TOPICS = ("impressions", "clicks", "identity", "conversions", "feedback", "cs-ident")
TABLES = ("users", "identifiers", "conversions")
CONVERSION_TS = 1_700_000_000_000


def sample_label(**overrides: Any) -> dict[str, Any]:
    """A label record as the conversions agent emits it: a click-matched, click-credited one."""
    label = {
        "match_method": "deterministic:click",
        "match_confidence": 0.97,
        "user_id": "u-000042",
        "credits": [
            {
                "engagement_type": "click",
                "engagement_ts": CONVERSION_TS - 3_600_000,
                "credit": 0.75,
                "label_weight": 0.7,
            },
            {
                "engagement_type": "view",
                "engagement_ts": CONVERSION_TS - 86_400_000,
                "credit": 0.25,
                "label_weight": 0.2,
            },
        ],
        "label_weight": 0.9,
        "ts": CONVERSION_TS,
        "revision": 0,
    }
    label.update(overrides)
    return label


def populate() -> None:
    """Give every metric at least one series."""
    metrics.set_advertiser_allowlist(["adv-1", "adv-2"])
    for topic in TOPICS:
        metrics.count_event_in(topic, 10)
        metrics.set_watermark_lag(topic, 2.5)
        metrics.set_consumer_lag(topic, 100)
    for reason in ("invalid_json", "schema", "invalid_ip", "too_old", "future_ts"):
        metrics.count_dead_letter("conversions", reason)
    metrics.count_rerouted("clicks", 3)
    metrics.count_sent("cs-ident", 4)
    metrics.observe_batch("users", 120)
    metrics.count_identifier_rejected(
        [Rejection("em", "placeholder"), Rejection("ph", "too_short")]
    )
    for outcome in ("merged", "late_dropped", "correction"):
        metrics.count_dedupe(outcome)
    for table in TABLES:
        metrics.set_table_entries(table, 1000)
    metrics.count_rebalance()
    metrics.count_redrive()
    metrics.count_queues_not_saved()
    metrics.set_lookups_parked(watermark=120, turn=3)
    metrics.count_turns_expired(1)
    metrics.set_broker_up(True)
    for loop, lag in (("main", 0.002), ("consumer", 0.004)):
        metrics.observe_loop_lag(lag, loop=loop)
    observe_gc_pause = metrics.gc_pause_observer()
    for generation, pause in enumerate((0.0004, 0.002, 0.1)):
        observe_gc_pause(generation, pause)
    metrics.count_heap_released(1 << 20)
    metrics.count_site_event("PageView")
    metrics.set_model_quality(auc=0.91, logloss=0.31, ece=0.02)
    for advertiser in ("adv-1", "adv-2", "adv-unlisted"):
        metrics.set_event_quality(
            advertiser,
            "Purchase",
            param_coverage={"em": 0.9, "ph": 0.4, "client_ip_address": 1.0},
            dedupe_rate=0.6,
            match_rate=0.8,
            score=7.5,
        )
    now = time.time()
    metrics.observe_label(sample_label(), now - 0.05, now_wall_s=now)
    metrics.observe_label(sample_label(match_method="none", user_id=None, credits=[]), now - 0.1)
    metrics.observe_label(sample_label(match_method="model", revision=1), now - 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    populate()
    for attempt in range(5):
        port = free_port()
        try:
            metrics.start_metrics_server("127.0.0.1", port)
            break
        except OSError:
            if attempt == 4:
                raise
    print(f"PORT {port}", flush=True)
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline:
        time.sleep(0.25)
        metrics.observe_label(sample_label(), time.time() - 0.02)
        metrics.count_event_in("conversions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
