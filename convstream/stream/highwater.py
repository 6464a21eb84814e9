"""Table recovery reads changelogs up to a high watermark taken from a fetch, not ListOffsets.

tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1 when that batch
holds several records, so Faust would stop recovering a changelog early and lose table entries
(or, with RocksDB, fail its consistency check). A fetch response carries the true high
watermark, so we fetch once from just below the reported end and keep the larger of the two.
Against Apache Kafka both agree and this costs one short-lived consumer per recovery.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka


async def fetch_highwaters(
    options: Mapping[str, Any], reported: Mapping[Any, int], *, timeout: float = 5.0
) -> dict[Any, int]:
    """The high watermark of each partition, from a fetch starting at its reported end - 1."""
    tps = list(reported)
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(reported[tp] - 1, 0))
        found: dict[Any, int] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(tps) and time.monotonic() < deadline:
            await consumer.getmany(*tps, timeout_ms=100, max_records=1)
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    found[tp] = highwater
        return {tp: max(reported[tp], found.get(tp, reported[tp])) for tp in tps}
    finally:
        await consumer.stop()


def install(options: Mapping[str, Any]) -> None:
    """Make Faust's aiokafka consumer thread use fetched high watermarks (idempotent)."""
    cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(cls, "_convstream_highwater", False):
        return
    original = cls._highwaters

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        try:
            return await fetch_highwaters(options, reported)
        except (TimeoutError, OSError) as exc:  # keep Faust's figure rather than stall
            self.log.warning("fetch high watermark failed, using ListOffsets: %r", exc)
            return reported

    cls._highwaters = _highwaters
    cls._convstream_highwater = True


def install_fetch_wait(fetch_max_wait_ms: int) -> None:
    """Make Faust's worker consumer wait at most ``fetch_max_wait_ms`` for a fetch (idempotent).

    Faust builds its consumer with ``fetch_max_wait_ms=1500``. Apache Kafka answers a fetch as
    soon as data arrives, but tansu 0.6 holds it for much of the wait (measured on loopback:
    a record produced to an idle partition reaches a consumer after ~615 ms at 1500, ~16 ms at
    100, ~3 ms at 10), and the lookup -> answer -> probe -> answer chain pays that once per hop.
    """
    cls = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(cls, "_convstream_create_worker_consumer", cls._create_worker_consumer)

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start()
        return consumer

    cls._convstream_create_worker_consumer = original
    cls._create_worker_consumer = _create_worker_consumer
