"""Small raw-client helpers of the bench: extra topics, following the labels topic cheaply."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from convstream.stream.kafka import client_options
from convstream.stream.settings import Settings


async def create_topics(settings: Settings, names: Iterable[str]) -> None:
    """Create physical topics with the settings' partition count (idempotent)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(n, num_partitions=settings.partitions, replication_factor=1)
            for n in names
            if n not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def wait_for_topic(
    consumer: AIOKafkaConsumer, topic: str, timeout: float = 30.0
) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if topic in await consumer.topics():
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return sorted(parts)
        await asyncio.sleep(0.2)
    raise RuntimeError(f"topic {topic!r} does not exist on the broker")


@dataclass
class LabelFollower:
    """One consumer on the labels topic that keeps reading: no full re-read per poll.

    ``first`` maps each conversion key to the ``emitted_at`` of its revision-0 label;
    ``last_emitted`` is the newest ``emitted_at`` of any label.
    """

    settings: Settings
    first: dict[str, int] = field(default_factory=dict)
    labels: int = 0
    last_emitted: int = 0
    last_arrival: float = 0.0
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task | None = None

    async def start(self) -> LabelFollower:
        self._consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await self._consumer.start()
        topic = self.settings.topic("labels")
        parts = await wait_for_topic(self._consumer, topic)
        tps = [TopicPartition(topic, p) for p in parts]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=10_000)
            for records in batch.values():
                for r in records:
                    self._add(orjson.loads(r.value))

    def _add(self, label: dict[str, Any]) -> None:
        self.labels += 1
        self.last_arrival = time.monotonic()
        emitted = int(label.get("emitted_at") or 0)
        self.last_emitted = max(self.last_emitted, emitted)
        key = label.get("conversion_key")
        if key is not None and (label.get("revision") == 0 or key not in self.first):
            self.first.setdefault(key, emitted)

    def covered(self, keys: set[str]) -> int:
        return sum(1 for k in keys if k in self.first)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
