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

from convstream.core.attribution import AttributionConfig
from convstream.core.coordinator import Policy
from convstream.core.settings_file import load_attribution_config
from convstream.core.units import DAY_MS, HOUR_MS

#: Logical topic names; the physical name is ``topic_prefix + name``.
INPUT_TOPICS = ("impressions", "clicks", "identity", "conversions", "feedback", "privacy")
ENGAGEMENT_TOPICS = ("impressions", "clicks", "identity")
INTERNAL_TOPICS = ("cs-ident", "cs-answer", "cs-probe", "cs-learn")
OUTPUT_TOPICS = ("labels", "dead-letter")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


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
    # Security: SASL (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) when a username is set, over TLS
    # when a CA file is set (TLS alone without a username).
    sasl_username: str = ""
    sasl_password: str = ""
    sasl_mechanism: str = "PLAIN"
    ssl_cafile: str = ""
    # Table writes held in memory and written once per commit (convstream/stream/writeback.py);
    # off: every write is a changelog message at once, as Faust does it.
    coalesce_writes: bool = True
    # Faust commits the input offsets after every commit_every acknowledged messages (inputs
    # and internal hops, about 1.5 per input event), and every commit_interval_s whichever
    # comes first; commit_every 0 commits by time only. Every commit first writes the cached
    # table entries to their changelogs, so the cadence sets how often a hot key is written,
    # how much input a killed worker's successor reads again, and how much is dirty in memory.
    # By count, all three are a fixed amount of work, whatever the machine's speed; by time,
    # a worker slowed by load commits more often per input and does more work for it. The
    # interval is the bound for trickling traffic (Kafka Streams' default, 30 s). Faust's
    # defaults (10,000 messages, 2.8 s: a commit about every 2 s of a backlog) wrote 0.92
    # changelog messages per input on the bench's default replay, these 0.46 (BENCHMARKS.md,
    # 2026-12-04, night).
    commit_interval_s: float = 30.0
    commit_every: int = 40_000
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
    # A forwarded engagement holds back its source partition's watermark until its own
    # partition confirms it, or for this long (the worker it went to may be gone).
    reroute_hold_s: float = 60.0
    # A new conversion waits until its partition's clock is allowed_lateness_ms past it (the
    # copies read before then are decided together), or until the partition's input has been
    # read to its end and idle for this long.
    hold_idle_s: float = 5.0
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
    # A personal identifier value (email, phone, device id, customer id) on more distinct users
    # than this in the lookback is a shared fallback: dropped from conversions, never matched.
    max_users_per_value: int = 8
    retention_ms: int = 30 * DAY_MS
    # Conversions.
    dedupe_window_ms: int = 48 * HOUR_MS
    feedback_horizon_ms: int = 7 * DAY_MS
    max_conversion_age_ms: int = 7 * DAY_MS
    # Sparse partitions can go days between conversions: only absurd jumps are rejected.
    max_future_ms: int = 30 * DAY_MS
    # Engagements and identity sightings further ahead of their partition's event-time clock
    # (convstream/core/clock.py) go to dead-letter as future_ts; older than retention_ms behind
    # it, as too_old.
    max_engagement_future_ms: int = 7 * DAY_MS
    # Any record whose event time is this far ahead of its broker timestamp is future_ts.
    max_clock_skew_ms: int = DAY_MS
    attribution_config: str = ""
    # The match model learns this far behind its decisions, in event-time order, so that label
    # confidences do not depend on the order in which topics happened to be read.
    learning_delay_ms: int = HOUR_MS
    extra: Mapping[str, Any] = field(default_factory=dict)

    def lifecycle_policy(self) -> Policy:
        """The event-time rules of a conversion's life (:mod:`convstream.core.coordinator`)."""
        return Policy(
            dedupe_window_ms=self.dedupe_window_ms,
            max_age_ms=self.max_conversion_age_ms,
            max_future_ms=self.max_future_ms,
            feedback_horizon_ms=self.feedback_horizon_ms,
            max_users_per_value=self.max_users_per_value,
        )

    def attribution(self) -> AttributionConfig:
        """The attribution config a worker with these settings starts from: the
        ``attribution_config`` file, read now, or the defaults when none is set.

        >>> Settings().attribution() == AttributionConfig()
        True
        """
        if not self.attribution_config:
            return AttributionConfig()
        return load_attribution_config(self.attribution_config)

    def offline_options(self) -> dict[str, Any]:
        """The keyword options of :class:`convstream.core.engine.OfflineEngine` that give the
        labels a worker with these settings gives (the attribution file read once)."""
        return {
            "partitions": self.partitions,
            "attribution_config": self.attribution(),
            "lookback_ms": self.lookback_ms,
            "top_k": self.top_k,
            "max_candidates": self.max_candidates,
            "max_users": self.max_users_per_identifier,
            "allowed_lateness_ms": self.allowed_lateness_ms,
            "policy": self.lifecycle_policy(),
            "learning_delay_ms": self.learning_delay_ms,
        }

    def __post_init__(self) -> None:
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"CONVSTREAM_SASL_MECHANISM={self.sasl_mechanism!r} is not one of "
                + ", ".join(SASL_MECHANISMS)
            )

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


_BOOLEANS = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return _BOOLEANS[raw.strip().lower()]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"CONVSTREAM_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
