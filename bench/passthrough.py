"""Stage 1, the Python ceiling: raw aiokafka consume -> orjson decode/encode -> produce.

One process, one event loop, no framework: every input record of the replay is decoded and
re-encoded with orjson and produced to an output topic with its key, to the same partition
number. Timed from the first fetched record to the last produced one acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from convstream.stream.kafka import client_options
from convstream.stream.settings import INPUT_TOPICS, Settings

OUTPUT = "bench-out"


@dataclass(frozen=True)
class PassResult:
    events: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.events / max(self.seconds, 1e-9)


async def raw_passthrough(
    settings: Settings, expected: int, *, timeout: float = 600.0
) -> PassResult:
    """Drain ``expected`` records from the input topics into ``OUTPUT``; returns the timing."""
    options = client_options(settings)
    consumer = AIOKafkaConsumer(
        **options,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=64 << 20,
    )
    producer = AIOKafkaProducer(**options, linger_ms=20, max_batch_size=262144)
    await consumer.start()
    await producer.start()
    try:
        tps = [
            TopicPartition(settings.topic(t), p)
            for t in INPUT_TOPICS
            for p in range(settings.partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out = settings.topic(OUTPUT)
        loads, dumps, send = orjson.loads, orjson.dumps, producer.send
        done, started, cpu, pending = 0, None, 0.0, []
        deadline = time.monotonic() + timeout
        while done < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            if batch and started is None:
                started, cpu = time.monotonic(), time.process_time()
            for tp, records in batch.items():
                for r in records:
                    pending.append(
                        await send(out, dumps(loads(r.value)), key=r.key, partition=tp.partition)
                    )
                done += len(records)
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await producer.flush()
        if done < expected:
            raise TimeoutError(f"raw passthrough read {done}/{expected} records")
        return PassResult(done, time.monotonic() - started, time.process_time() - cpu)
    finally:
        await consumer.stop()
        await producer.stop()
