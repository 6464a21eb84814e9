"""Kafka's murmur2 partitioner in pure Python, checked against aiokafka and Kafka's own values."""

from __future__ import annotations

import random

import pytest

from convstream.core.partitioning import murmur2, partition_for

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints).
KAFKA_VALUES = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "signed"), KAFKA_VALUES.items())
def test_kafka_known_values(data, signed):
    assert murmur2(data) == signed & 0xFFFFFFFF


def test_matches_aiokafka():
    aiokafka = pytest.importorskip("aiokafka.partitioner")
    rng = random.Random(0)
    for _ in range(3_000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 48)))
        assert murmur2(data) == aiokafka.murmur2(data)
    keys = [f"adv-{i % 7}:Purchase:ord-{i}" for i in range(500)]
    default = aiokafka.DefaultPartitioner()
    for n in (1, 4, 12):
        parts = list(range(n))
        assert [partition_for(k, n) for k in keys] == [
            default(k.encode(), parts, parts) for k in keys
        ]
