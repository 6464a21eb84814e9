"""Records on the wrong partition for their key are forwarded once, unchanged, and counted."""

from __future__ import annotations

import asyncio
import zlib
from types import SimpleNamespace
from typing import Any

from convstream.core.partitioning import partition_for
from convstream.stream import metrics, routing
from convstream.stream.settings import Settings


class FakeTopic:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **kwargs: Any) -> None:
        self.sent.append(kwargs)


def runtime(partitions: int = 4) -> Any:
    topic = FakeTopic()
    return SimpleNamespace(settings=Settings(partitions=partitions), topics={"clicks": topic})


def event(partition: int, offset: int = 7, headers: Any = None) -> Any:
    message = SimpleNamespace(
        partition=partition, offset=offset, value=b'{"user_id":"u"}', timestamp=1767571200.5,
        headers=headers,
    )  # fmt: skip
    return SimpleNamespace(message=message)


def rerouted(topic: str) -> float:
    return metrics.REGISTRY.get_sample_value("convstream_records_rerouted_total", {"topic": topic})


def test_a_record_on_its_partition_stays():
    rt = runtime()
    right = partition_for("user-1", 4)
    assert asyncio.run(routing.reroute(rt, event(right), "clicks", "user-1")) is False
    assert rt.topics["clicks"].sent == []


def test_a_crc32_partitioned_record_goes_to_its_murmur2_partition_once():
    """librdkafka's default partitioner (CRC32) disagrees with murmur2 for most keys."""
    rt = runtime()
    keys = [f"user-{i}" for i in range(200)]
    moved = [k for k in keys if zlib.crc32(k.encode()) % 4 != partition_for(k, 4)]
    assert len(moved) > 100
    before = rerouted("clicks") or 0.0
    for i, key in enumerate(moved):
        crc = zlib.crc32(key.encode()) % 4
        assert asyncio.run(routing.reroute(rt, event(crc, offset=i), "clicks", key)) is True
    sent = rt.topics["clicks"].sent
    assert [s["partition"] for s in sent] == [partition_for(k, 4) for k in moved]
    assert [s["key"] for s in sent] == moved
    assert all(s["value"] == b'{"user_id":"u"}' and s["timestamp"] == 1767571200.5 for s in sent)
    assert rerouted("clicks") == before + len(moved)
    # The copy names where it came from; read on its own partition, it stays there.
    copy = event(sent[0]["partition"], headers=sent[0]["headers"])
    crc = zlib.crc32(moved[0].encode()) % 4
    assert routing.origin(copy) == (crc, f"clicks:{crc}:0")
    assert asyncio.run(routing.reroute(rt, copy, "clicks", moved[0])) is False


def test_origin_ignores_other_headers_and_junk():
    assert routing.origin(event(0)) is None
    assert routing.origin(event(0, headers=[("traceparent", b"00-ab")])) is None
    assert routing.origin(event(0, headers=[(routing.HEADER, b"x:y")])) is None


def test_broker_timestamp_in_milliseconds():
    assert routing.broker_ms(event(0)) == 1767571200500
    assert routing.broker_ms(SimpleNamespace(message=SimpleNamespace(timestamp=0))) is None
