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
It prints one markdown row per step: p50/p95/p99/mean in ms. A round moves on only once every
answer is in (lookups go to several identifier partitions, probes to several user partitions),
so the answer and probe-answer steps are also split into the wait from the first answer to the
last and the reaction to the last. With them it prints the worker's event-loop lag and garbage
collections over the paced run (its ``convstream_event_loop_lag_seconds`` and
``convstream_gc_pause_seconds``). ``--worker-env NAME=VALUE`` changes a worker setting.

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
from convstream.stream.broker import EmbeddedBroker
from convstream.stream.settings import Settings

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


def step_times(bootstrap: str, prefix: str) -> dict[str, dict[str, list[int]]]:
    """Every message's CreateTime (ms), per conversion key and step."""
    times: dict[str, dict[str, list[int]]] = {}
    for topic in ("conversions", "cs-ident", "cs-answer", "cs-probe", "labels"):
        for record in asyncio.run(_records(bootstrap, prefix + topic)):
            step = _step_of(topic, orjson.loads(record.value))
            if step is None:
                continue
            name, key = step
            times.setdefault(key, {}).setdefault(name, []).append(record.timestamp)
    return times


def first_times(times: dict[str, dict[str, list[int]]]) -> dict[str, dict[str, int]]:
    """The first message of each step, per key."""
    return {key: {name: min(ts) for name, ts in steps.items()} for key, steps in times.items()}


def fan_in_delays(times: dict[str, dict[str, list[int]]]) -> dict[str, list[int]]:
    """A round waits for every answer before it moves on. Split the answer and probe-answer
    steps into the wait for the last answer and the reaction to it (ms), over keys with every
    step.

    >>> fan_in_delays({"k": {"conv": [0], "lookup": [70], "answer": [300, 520, 900],
    ...                      "probe": [580], "probe_ans": [650, 700], "label": [760]}})
    {'answer: first->last': [220], 'last answer->probe': [60], \
'probe_ans: first->last': [50], 'last probe_ans->label': [60]}
    """
    out: dict[str, list[int]] = {
        "answer: first->last": [],
        "last answer->probe": [],
        "probe_ans: first->last": [],
        "last probe_ans->label": [],
    }
    for steps in times.values():
        if not all(s in steps for s in STEPS):
            continue
        for answers, after in (("answer", "probe"), ("probe_ans", "label")):
            moved = min(steps[after])
            before = [t for t in steps[answers] if t <= moved] or [min(steps[answers])]
            out[f"{answers}: first->last"].append(max(before) - min(before))
            out[f"last {answers}->{after}"].append(moved - max(before))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1578.0, help="paced input events/s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument(
        "--worker-env", action="append", default=[], metavar="NAME=VALUE", help="worker setting"
    )
    args = parser.parse_args()
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    args.workdir.mkdir(parents=True, exist_ok=True)
    lateness = Settings().allowed_lateness_ms
    lines, _ = sized_replay(args.events, seed=args.seed, partitions=4, lateness_ms=lateness)
    with EmbeddedBroker(log_path=args.workdir / "tansu-hops.log") as broker:
        result = run_latency(
            broker.url, lines, args.workdir, args.rate, partitions=4, worker_env=worker_env
        )
        times = step_times(broker.url.removeprefix("kafka://"), "latency.")
    print(f"bench latency summary: {result.summary}")
    for loop, lag in result.loop_lag.items():
        print(f"event-loop lag while paced, {loop} loop (ms): {lag}")
    for generation, pauses in result.gc_pauses.items():
        print(f"GC pauses while paced, generation {generation} (ms): {pauses}")
    delays = step_delays(first_times(times))
    print(f"\n{len(delays['total']):,} conversions through every step\n")
    print("| step | p50 | p95 | p99 | mean |\n|---|---:|---:|---:|---:|")
    for name, values in {**delays, **fan_in_delays(times)}.items():
        p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
        print(f"| {name} | {p50:,} | {p95:,} | {p99:,} | {statistics.mean(values):,.0f} |")


if __name__ == "__main__":
    main()
