"""``python -m bench.broker_hop``: what one Kafka hop costs on the embedded broker, no Faust.

A plain aiokafka producer sends a timestamp every 10 ms; a plain consumer on the same topic
reads it back. The delay from send to read is the broker's share of every hop the worker makes
(plus the producer's linger), for each ``fetch_max_wait_ms`` tried. A consumer whose fetch finds
no data waits that long on the broker unless data arrives, so the figure also shows whether the
broker answers a waiting fetch when data arrives. About 6 s per setting.

>>> quantiles([5.0, 1.0, 3.0, 2.0, 4.0])
(3.0, 5.0, 5.0)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.latency import percentile
from convstream.stream.broker import EmbeddedBroker

SETTINGS = ((50, 0), (50, 10), (10, 0), (5, 0), (500, 0))  # (fetch_max_wait_ms, linger_ms)


def quantiles(delays_ms: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 (nearest rank)."""
    p50, p95, p99 = (percentile(delays_ms, q) for q in (50, 95, 99))
    return p50, p95, p99


async def hop_delays(
    bootstrap: str, fetch_max_wait_ms: int, linger_ms: int, *, messages: int, interval_s: float
) -> list[float]:
    """Send-to-read delays (ms) of ``messages`` sends, ``interval_s`` apart, on a fresh topic."""
    topic = f"hop-{fetch_max_wait_ms}-{linger_ms}-{time.monotonic_ns()}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    await producer.start()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    try:
        await producer.send_and_wait(topic, b"0")  # creates the topic
        consumer.subscribe([topic])
        await consumer.start()
        await consumer.getmany(timeout_ms=1000)  # joined and positioned at the end
        delays: list[float] = []

        async def read() -> None:
            while len(delays) < messages:
                batch = await consumer.getmany(timeout_ms=1000)
                now_ms = time.time() * 1000
                delays.extend(now_ms - float(r.value) for rs in batch.values() for r in rs)

        reader = asyncio.create_task(read())
        for _ in range(messages):
            await producer.send(topic, str(time.time() * 1000).encode())
            await asyncio.sleep(interval_s)
        await asyncio.wait_for(reader, 30)
        return delays
    finally:
        await consumer.stop()
        await producer.stop()


async def _run(bootstrap: str, messages: int, interval_s: float) -> None:
    print("| fetch_max_wait_ms | linger_ms | p50 ms | p95 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|")
    for wait_ms, linger_ms in SETTINGS:
        delays = await hop_delays(
            bootstrap, wait_ms, linger_ms, messages=messages, interval_s=interval_s
        )
        p50, p95, p99 = quantiles(delays)
        print(f"| {wait_ms} | {linger_ms} | {p50:.1f} | {p95:.1f} | {p99:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_hop", description=__doc__)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between sends")
    parser.add_argument("--workdir", type=Path, default=Path("."), help="for the broker's log")
    args = parser.parse_args()
    with EmbeddedBroker(log_path=args.workdir / "tansu-broker-hop.log") as broker:
        asyncio.run(_run(broker.url.removeprefix("kafka://"), args.messages, args.interval))


if __name__ == "__main__":
    main()
