"""The replays the bench feeds every stage: generated traffic sized by event count, plus ticks.

A replay ends with *ticks*: one impression, click and identity event per partition, stamped just
past the newest event time plus the allowed lateness. They stand in for the traffic that keeps
flowing in production, so the last conversions are released by the watermark rather than by the
bounded wait, and "last label" measures processing, not ``max_wait_s``.

>>> lines, truth = sized_replay(3_000, seed=1)
>>> 2_000 < len(lines) < 4_500 and lines[-1]["value"]["user_id"].startswith("bench-tick")
True
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from convstream.core.attribution import AttributionConfig
from convstream.core.partitioning import partition_for
from convstream.stream.kafka import client_options, encode_value, message_key
from convstream.stream.settings import ENGAGEMENT_TOPICS, Settings
from convstream.synth.generate import config_from_args, generate

#: Input events per generated user over the default 14 days (measured: 103.5k events, 3000 users).
EVENTS_PER_USER = 34.5
DAYS = 14
TICK_PREFIX = "bench-tick"


def users_for(events: int, days: int = DAYS) -> int:
    """How many users make about ``events`` input events over ``days`` days.

    >>> users_for(250_000)
    7246
    """
    return max(10, round(events / EVENTS_PER_USER * DAYS / days))


def key_on_partition(prefix: str, partition: int, partitions: int) -> str:
    """A key that Kafka's default partitioner sends to ``partition``.

    >>> partition_for(key_on_partition("x", 2, 4), 4)
    2
    """
    i = 0
    while partition_for(f"{prefix}-{partition}-{i}", partitions) != partition:
        i += 1
    return f"{prefix}-{partition}-{i}"


def ticks(after_ts: int, partitions: int) -> list[dict[str, Any]]:
    """End-of-replay engagement events on every (engagement topic, partition), at ``after_ts``."""
    lines = []
    for p in range(partitions):
        user = key_on_partition(TICK_PREFIX, p, partitions)
        base = {"ts": after_ts, "user_id": user}
        ad = {"advertiser_id": "bench", "campaign_id": "bench", "ad_id": "bench"}
        lines.append({"topic": "impressions", "value": {**base, **ad, "event_id": f"ti-{p}"}})
        lines.append(
            {
                "topic": "clicks",
                "value": {**base, **ad, "event_id": f"tc-{p}", "click_id": f"tc-{p}"},
            }
        )
        lines.append({"topic": "identity", "value": base})
    return lines


def sized_replay(
    events: int,
    *,
    seed: int = 7,
    partitions: int = 4,
    lateness_ms: int | None = None,
    traffic: str = "default",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A replay of about ``events`` input events of the generator's ``traffic`` profile (users
    sized on the default profile's rate), ticks appended, and its truth.

    ``lateness_ms`` must be the workers' ``allowed_lateness_ms`` (default: the Settings default).
    """
    if lateness_ms is None:
        lateness_ms = Settings().allowed_lateness_ms
    lines, truth = generate(
        config_from_args(traffic, seed=seed, users=users_for(events), days=DAYS)
    )
    newest = max(line["value"]["ts"] for line in lines)
    return lines + ticks(newest + lateness_ms + 1_000, partitions), truth


def conversion_keys(lines: Sequence[dict[str, Any]]) -> set[str]:
    """Every conversion key the replay carries (what the labels topic must end up covering):
    site events (not conversions under the default settings) get no label."""
    config = AttributionConfig()
    return {
        message_key("conversions", line["value"]).decode()
        for line in lines
        if line["topic"] == "conversions"
        and config.is_conversion(line["value"]["advertiser_id"], line["value"]["event_name"])
    }


def canary(lines: Sequence[dict[str, Any]], n: int = 0) -> dict[str, Any]:
    """A conversion without identifiers: labelled at once, it proves the worker is consuming.

    Its ts is the replay's first conversion ts, so the partition's event-time clock it sets
    neither rejects nor admits anything the replay would not.
    """
    first = next(line["value"] for line in lines if line["topic"] == "conversions")
    return {
        "topic": "conversions",
        "value": {
            "event_id": f"canary-{n}",
            "event_name": "BenchCanary",
            "source": "capi",
            "ts": first["ts"],
            "advertiser_id": first["advertiser_id"],
            "user_data": {},
        },
    }


@dataclass
class Produced:
    """Wall time (``time.time()``) of every line's send, in replay order."""

    sent_at: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.sent_at) / max(self.finished - self.started, 1e-9)


async def produce_timed(
    settings: Settings, lines: Sequence[dict[str, Any]], *, rate: float = 0.0
) -> Produced:
    """``convstream.stream.kafka.produce`` with the same keys, encoding and pacing, recording send
    times."""
    producer = AIOKafkaProducer(**client_options(settings), linger_ms=20, max_batch_size=262144)
    await producer.start()
    out = Produced()
    out.started = time.time()
    started = time.monotonic()
    try:
        pending = []
        for sent, line in enumerate(lines, start=1):
            topic, value = line["topic"], line["value"]
            out.sent_at.append(time.time())
            pending.append(
                await producer.send(
                    settings.topic(topic), encode_value(value), key=message_key(topic, value)
                )
            )
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    out.finished = time.time()
    return out


def engagement_partition(line: dict[str, Any], partitions: int) -> int | None:
    """The partition an engagement line lands on (None for other topics)."""
    if line["topic"] not in ENGAGEMENT_TOPICS:
        return None
    key = message_key(line["topic"], line["value"])
    return partition_for(key, partitions) if key is not None else None
