"""State size of a worker's tables, read back from their changelog topics after a run.

Method: a changelog holds every write of a table; the last record per key is the live entry
(a null value is a deletion). We count live entries and their serialized bytes (key + value, the
orjson that Faust stores), and decode a sample of values to estimate their size as Python objects
in the worker's memory (deep ``sys.getsizeof``, without Faust's own per-key overhead).

>>> deep_size({"e": [[1, "view"]]}) > deep_size({})
True
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.topics import wait_for_topic
from convstream.stream.kafka import client_options
from convstream.stream.settings import Settings

TABLES = (
    "users",
    "identifiers",
    "conversion-state",
    "match-models",
    "event-clocks",
    "parked-lookups",
)


def deep_size(obj: Any, _seen: set[int] | None = None) -> int:
    """Bytes of ``obj`` and everything it holds (dicts, lists, strings, numbers)."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        size += sum(deep_size(v, seen) for v in obj)
    return size


@dataclass(frozen=True)
class TableSize:
    table: str
    writes: int
    entries: int
    bytes: int
    python_bytes_per_entry: float | None

    @property
    def bytes_per_entry(self) -> float:
        return self.bytes / self.entries if self.entries else 0.0


async def changelog_size(settings: Settings, table: str, *, sample: int = 500) -> TableSize:
    """Live entries and bytes of one table, from ``<app_id>-<table>-changelog``."""
    topic = f"{settings.app_id}-{table}-changelog"
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    try:
        try:
            parts = await wait_for_topic(consumer, topic, timeout=5.0)
        except RuntimeError:
            return TableSize(table, 0, 0, 0, None)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        live: dict[bytes, bytes | None] = {}
        writes = 0
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=300, max_records=50_000)
            if not batch:
                ends = [consumer.highwater(tp) for tp in tps]
                positions = [await consumer.position(tp) for tp in tps]
                if all(h is None or p >= h for h, p in zip(ends, positions, strict=True)):
                    idle += 1
                continue
            for records in batch.values():
                for r in records:
                    writes += 1
                    live[r.key] = r.value
    finally:
        await consumer.stop()
    entries = {k: v for k, v in live.items() if v is not None}
    total = sum(len(k or b"") + len(v) for k, v in entries.items())
    python = None
    if entries and table not in ("match-models", "event-clocks"):
        picked = random.Random(0).sample(list(entries.values()), min(sample, len(entries)))
        python = sum(deep_size(orjson.loads(v)) for v in picked) / len(picked)
    return TableSize(table, writes, len(entries), total, python)


async def state_sizes(settings: Settings) -> dict[str, TableSize]:
    return {t: await changelog_size(settings, t) for t in TABLES}
