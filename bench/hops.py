"""``python -m bench.hops [--events N] [--rate R] --workdir DIR``: where a label's latency goes.

Runs the paced latency stage (:func:`bench.pipeline.run_latency`), keeps the broker up, and
reads back every internal topic. Each message carries the producer's CreateTime, so for each
conversion key the first message of each step gives the time of that step:

    conv       the conversion as the replay produced it
    lookup     the conversions agent sends its first identifier lookup     (cs-ident, "l")
    answer     the identifiers agent answers it, after the watermark gate  (cs-answer, "a")
    probe      the conversions agent probes the first candidate            (cs-probe)
    probe_ans  the users agent answers the probe                           (cs-answer, "p")
    label      the conversions agent emits the label                       (labels)

Only keys that went through every step are counted (conversions with candidates to probe).
It prints one markdown row per step: p50/p95/p99/mean in ms.

>>> step_delays({"k": {"conv": 0, "lookup": 70, "answer": 300, "probe": 380,
...                    "probe_ans": 450, "label": 530}})["lookup->answer"]
[230]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.latency import percentile
from bench.pipeline import run_latency
from bench.replay import sized_replay
from stream.broker import EmbeddedBroker
from stream.settings import Settings

STEPS = ("conv", "lookup", "answer", "probe", "probe_ans", "label")


def step_delays(times: dict[str, dict[str, int]]) -> dict[str, list[int]]:
    """Delays (ms) between consecutive steps, over the keys that have every step."""
    out: dict[str, list[int]] = {f"{a}->{b}": [] for a, b in pairwise(STEPS)}
    out["total"] = []
    for steps in times.values():
        if not all(s in steps for s in STEPS):
            continue
        for a, b in pairwise(STEPS):
            out[f"{a}->{b}"].append(steps[b] - steps[a])
        out["total"].append(steps["label"] - steps["conv"])
    return out


async def _records(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        while batch := await consumer.getmany(*tps, timeout_ms=2000):
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


def _step_of(topic: str, value: dict[str, Any]) -> tuple[str, str] | None:
    if topic == "conversions":
        return "conv", "{advertiser_id}:{event_name}:{event_id}".format(**value)
    if topic == "cs-ident":
        return ("lookup", value["ck"]) if value.get("t") == "l" else None
    if topic == "cs-answer":
        return ("answer" if value["t"] == "a" else "probe_ans"), value["ck"]
    if topic == "cs-probe":
        return ("probe", value["ck"]) if "ck" in value else None
    return "label", value["conversion_key"]


def step_times(bootstrap: str, prefix: str) -> dict[str, dict[str, int]]:
    times: dict[str, dict[str, int]] = {}
    for topic in ("conversions", "cs-ident", "cs-answer", "cs-probe", "labels"):
        for record in asyncio.run(_records(bootstrap, prefix + topic)):
            step = _step_of(topic, orjson.loads(record.value))
            if step is None:
                continue
            name, key = step
            steps = times.setdefault(key, {})
            steps[name] = min(record.timestamp, steps.get(name, record.timestamp))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1578.0, help="paced input events/s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    lateness = Settings().allowed_lateness_ms
    lines, _ = sized_replay(args.events, seed=args.seed, partitions=4, lateness_ms=lateness)
    with EmbeddedBroker(log_path=args.workdir / "tansu-hops.log") as broker:
        result = run_latency(broker.url, lines, args.workdir, args.rate, partitions=4)
        times = step_times(broker.url.removeprefix("kafka://"), "latency.")
    print(f"bench latency summary: {result.summary}")
    delays = step_delays(times)
    print(f"\n{len(delays['total']):,} conversions through every step\n")
    print("| step | p50 | p95 | p99 | mean |\n|---|---:|---:|---:|---:|")
    for name, values in delays.items():
        p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
        print(f"| {name} | {p50:,} | {p95:,} | {p99:,} | {statistics.mean(values):,.0f} |")


if __name__ == "__main__":
    main()
