"""Worker health on timers: table sizes, consumer lag per topic, broker reachability; and the
C heap's free pages handed back to the kernel (:mod:`stream.heap`)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from aiokafka.client import AIOKafkaClient

from stream import heap, metrics
from stream.kafka import client_options

HEALTH_INTERVAL_S = 5.0
BROKER_TIMEOUT_S = 5.0


async def consumer_lag(app: Any, logical: dict[str, str]) -> dict[str, int]:
    """Records between what this worker has read and the high watermark of the last fetch, per
    logical topic, over its assigned partitions (changelogs and foreign topics left out)."""
    lag: dict[str, int] = defaultdict(int)
    for tp in app.consumer.assignment():
        topic = logical.get(tp.topic)
        if topic is None:
            continue
        try:
            highwater = app.consumer.highwater(tp)
            read = app.monitor.tp_read_offsets.get(tp)
            position = read + 1 if read is not None else await app.consumer.position(tp)
        except Exception:  # noqa: BLE001 - revoked since assignment() was read; next tick
            continue
        if highwater is not None and position is not None:
            lag[topic] += max(highwater - position, 0)
    return lag


def register(rt: Any) -> None:
    """Add the health timer to the app of ``rt`` (a stream.app.Runtime)."""
    app = rt.app
    clients: list[AIOKafkaClient] = []  # made on the worker's loop, at the first tick
    lag_topics: set[str] = set()

    async def broker_reachable() -> bool:
        try:
            if not clients:
                client = AIOKafkaClient(**client_options(rt.settings))
                try:
                    await asyncio.wait_for(client.bootstrap(), BROKER_TIMEOUT_S)
                except BaseException:
                    await client.close()
                    raise
                clients.append(client)
            await asyncio.wait_for(clients[0].fetch_all_metadata(), BROKER_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - any failure means "not reachable now"
            return False
        return True

    @app.timer(interval=HEALTH_INTERVAL_S)
    async def report_health() -> None:
        metrics.set_broker_up(await broker_reachable())
        for table in rt.tables.values():
            metrics.set_table_entries(table.name, len(table))
        lag = await consumer_lag(app, rt.logical)
        for topic in lag_topics - set(lag):  # partitions moved away in a rebalance
            metrics.set_consumer_lag(topic, 0)
        for topic, records in lag.items():
            metrics.set_consumer_lag(topic, records)
        lag_topics.update(lag)

    if rt.settings.heap_trim_s > 0 and heap.available():

        @app.timer(interval=rt.settings.heap_trim_s)
        async def release_free_heap() -> None:
            loop = asyncio.get_running_loop()
            metrics.count_heap_released(await loop.run_in_executor(None, heap.release_free_heap))
