"""One settings object for the whole worker: environment (``CONVSTREAM_*``), then CLI overrides.

>>> s = Settings.from_env({"CONVSTREAM_PARTITIONS": "8", "CONVSTREAM_TOPIC_PREFIX": "t1."})
>>> s.partitions, s.topic("labels")
(8, 't1.labels')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000

#: Logical topic names; the physical name is ``topic_prefix + name``.
INPUT_TOPICS = ("impressions", "clicks", "identity", "conversions", "feedback", "privacy")
ENGAGEMENT_TOPICS = ("impressions", "clicks", "identity")
INTERNAL_TOPICS = ("cs-ident", "cs-answer", "cs-probe", "cs-learn")
OUTPUT_TOPICS = ("labels", "dead-letter")


@dataclass(frozen=True)
class Settings:
    """Every knob of a worker, with its environment variable ``CONVSTREAM_<NAME>``."""

    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "convstream"
    topic_prefix: str = ""
    partitions: int = 4
    store: str = "memory://"
    # rocksdb:// only: memtable size per table partition (two of them), one block cache in all.
    rocksdb_write_buffer_mb: int = 4
    rocksdb_cache_mb: int = 64
    # Seconds between handing the C heap's free pages back to the kernel
    # (convstream/stream/heap.py); 0: off.
    heap_trim_s: float = 10.0
    data_dir: str = "./convstream-data"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    # Security (SASL/PLAIN over plaintext or TLS).
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    # Batching.
    batch_size: int = 1000
    # Every hop through an internal topic (lookup, answer, probe, answer) waits up to
    # batch_within_s + producer_linger_ms + fetch_max_wait_ms: these three set the latency.
    batch_within_s: float = 0.02
    producer_linger_ms: int = 10
    # Bytes per partition batch; Faust's 16 KiB default fills after a few changelog entries and
    # turns every few table writes into a produce request of its own.
    producer_max_batch_size: int = 262_144
    # Longest a fetch may wait for data. Faust hardcodes 1500 ms, and tansu holds a fetch for
    # much of it even when data arrives, which every internal hop (lookup, answer, probe,
    # answer) pays.
    fetch_max_wait_ms: int = 50
    # Completeness: a conversion at T is looked up once every engagement partition has been read
    # past T + allowed_lateness, however long that takes (convstream/core/lookup_gate.py).
    allowed_lateness_ms: int = 300_000
    # The one wall-clock release: engagement partitions read to the broker's end offset with
    # nothing new for max_wait_s are idle (the end of a replay, traffic that stopped), and
    # lookups short of their watermark may go. A report of idleness holds idle_report_valid_s.
    max_wait_s: float = 10.0
    idle_report_valid_s: float = 5.0
    # How long an answered lookup of an email, phone or external id holds the key's later
    # lookups when its decision never comes (normally a redrive ends it sooner).
    key_turn_timeout_s: float = 600.0
    # A conversion still waiting for answers this long after a rebalance or restart started its
    # round again: the worker that held its parked lookups may have died with them.
    redrive_after_s: float = 120.0
    # Matching and state bounds (event time).
    # Identifier index rows are kept at least lookback_ms + max_conversion_age_ms.
    identifier_ttl_ms: int = 30 * DAY_MS
    lookback_ms: int = 30 * DAY_MS
    top_k: int = 8
    max_users_per_identifier: int = 64
    max_candidates: int = 12
    retention_ms: int = 30 * DAY_MS
    # Conversions.
    dedupe_window_ms: int = 48 * HOUR_MS
    feedback_horizon_ms: int = 7 * DAY_MS
    max_conversion_age_ms: int = 7 * DAY_MS
    # Sparse partitions can go days between conversions: only absurd jumps are rejected.
    max_future_ms: int = 30 * DAY_MS
    attribution_config: str = ""
    checkpoint_every: int = 200
    # The match model learns this far behind its decisions, in event-time order, so that label
    # confidences do not depend on the order in which topics happened to be read.
    learning_delay_ms: int = 3_600_000
    extra: Mapping[str, Any] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def bootstrap(self) -> str:
        """``host:port`` list for raw aiokafka clients."""
        return ",".join(u.split("://", 1)[-1] for u in self.broker.split(";"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``CONVSTREAM_*`` variables, then apply non-None keyword overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(f"CONVSTREAM_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.type, raw, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"CONVSTREAM_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
