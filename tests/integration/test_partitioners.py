"""Records produced with another partitioner than murmur2 (librdkafka's CRC32 default): with two
workers, every conversion is labelled, and labelled as when every producer uses murmur2."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from convstream.core.evaluation import latest_labels
from convstream.core.partitioning import partition_for
from convstream.stream.kafka import (
    client_options,
    encode_value,
    ensure_topics,
    message_key,
    produce,
    read_topic,
)
from convstream.stream.runner import wait_for_labels
from convstream.stream.settings import INPUT_TOPICS, Settings
from convstream.synth.generate import config_from_args, generate

pytestmark = pytest.mark.integration

SETTLE_S = 20  # two workers join one after the other: replay once the group has settled
# As in test_scale_out: labels identical across runs need learning slower than a replay's steps.
LEARNING_DELAY_MS = 3 * 24 * 3600 * 1000
MAX_CONFIDENCE_GAP = 0.1


def crc32_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """librdkafka's default (``consistent_random``): CRC32 of the key, modulo the partitions."""
    if key is None:
        return all_partitions[0]
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


async def produce_crc32(
    settings: Settings, lines: Iterable[dict[str, Any]], topics: set[str]
) -> dict[str, int]:
    """Produce ``lines`` in order: ``topics`` partitioned by CRC32, the others by murmur2.
    Returns, per topic, how many records landed off their murmur2 partition."""
    producer = AIOKafkaProducer(**client_options(settings), partitioner=crc32_partitioner)
    await producer.start()
    off: dict[str, int] = dict.fromkeys(INPUT_TOPICS, 0)
    try:
        pending = []
        for line in lines:
            topic, value = line["topic"], line["value"]
            key = message_key(topic, value)
            partition = None
            if topic not in topics and key is not None:
                partition = partition_for(key, settings.partitions)
            elif key is not None and crc32_partitioner(
                key, list(range(settings.partitions)), []
            ) != partition_for(key, settings.partitions):
                off[topic] += 1
            pending.append(
                await producer.send(
                    settings.topic(topic), encode_value(value), key=key, partition=partition
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return off


async def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return [r["value"] async for r in read_topic(settings, "dead-letter")]


def _gist(label: dict[str, Any]) -> tuple[Any, ...]:
    return label["user_id"], label["match_method"]


@pytest.mark.parametrize(
    "crc32_topics",
    [
        pytest.param(set(INPUT_TOPICS), id="every-input-topic"),
        pytest.param({"impressions", "clicks", "identity"}, id="engagement-topics"),
    ],
)
def test_two_workers_label_every_conversion_whatever_the_partitioner(
    settings, start_worker, crc32_topics
):
    lines, truth = generate(config_from_args("default", seed=23, users=100, days=3))
    expected = {row["conversion_key"] for row in truth}
    results, parked = {}, {}
    for name in ("murmur2", "crc32"):
        s = settings.replace(
            topic_prefix=f"{settings.topic_prefix}{name}.",
            app_id=f"{settings.app_id}-{name}",
            max_wait_s=30.0,
            learning_delay_ms=LEARNING_DELAY_MS,
        )
        asyncio.run(ensure_topics(s))
        workers = [start_worker(s, f"{name}-{i}") for i in range(2)]
        time.sleep(SETTLE_S)
        if name == "murmur2":
            asyncio.run(produce(s, lines))
        else:
            off = asyncio.run(produce_crc32(s, lines, crc32_topics))
            # Most keys land elsewhere under CRC32: the test is about them.
            assert all(off[t] > 0 for t in crc32_topics & {"impressions", "conversions"}), off
        results[name] = latest_labels(wait_for_labels(s, expected, timeout=240))[0]
        assert all(w.alive() for w in workers)
        for w in workers:
            w.stop()
        parked[name] = sorted((r["topic"], r["reason"]) for r in asyncio.run(dead_letters(s)))

    # A rerouted record is judged once, where it belongs: the same dead letters, no more.
    assert parked["crc32"] == parked["murmur2"]
    control, crc32 = results["murmur2"], results["crc32"]
    assert set(crc32) == expected, f"{len(expected - set(crc32))} conversions never labelled"
    assert set(control) == expected
    differ = [k for k in expected if _gist(control[k]) != _gist(crc32[k])]
    assert len(differ) <= max(1, len(expected) // 50), differ
    gaps = [
        abs(control[k]["match_confidence"] - crc32[k]["match_confidence"])
        for k in expected
        if k not in differ
    ]
    assert max(gaps) <= MAX_CONFIDENCE_GAP
