"""Pooled learning through a worker: every match-model replica learns every partition's examples."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson
import pytest

from convstream.core.incrementality_replica import Replica
from convstream.core.lifecycle import decode_replica
from convstream.core.matching.model import MatchModel
from convstream.core.partitioning import partition_for
from convstream.stream.kafka import produce, read_topic
from convstream.stream.runner import wait_for_labels
from convstream.synth.generate import config_from_args, generate

pytestmark = pytest.mark.integration


async def _records(settings, topic: str) -> list[dict]:
    return [r async for r in read_topic(settings, topic, raw=True)]


def test_every_replica_learns_the_examples_of_every_partition(settings, start_worker):
    # Each replica is checkpointed at every commit, the last one at the worker's stop.
    lines, truth = generate(config_from_args("default", seed=41, users=800, days=6))
    worker = start_worker(settings)
    asyncio.run(produce(settings, lines))
    wait_for_labels(settings, {row["conversion_key"] for row in truth}, timeout=180, settle=15)
    worker.stop()

    # Each chunk of examples went to every partition of cs-learn, in the same order.
    chunks = defaultdict(list)
    for record in asyncio.run(_records(settings, "cs-learn")):
        chunks[record["partition"]].append(record["value"])
    assert sorted(chunks) == list(range(settings.partitions))
    assert all(chunks[p] == chunks[0] for p in chunks)
    examples = [ex for raw in chunks[0] for ex in orjson.loads(raw)["e"]]
    origins = {partition_for(key, settings.partitions) for _, key, _, _ in examples}
    assert origins == set(range(settings.partitions))
    labelled_pairs = sum(len(ex.get("c", ())) for _, _, ex, _ in examples)
    feedback = sum(ex["t"] == "fb" for _, _, ex, _ in examples)
    assert labelled_pairs > 100 and feedback > 0

    # Every replica learned (nearly) all of them, not only its own partition's quarter; the
    # rest are the examples still waiting out the learning delay at its last decision.
    latest = {}
    changelogs = settings.replace(topic_prefix="")
    for record in asyncio.run(_records(changelogs, f"{settings.app_id}-match-models-changelog")):
        latest[record["key"]] = record["value"]
    # One entry per replica: model, learning queue and clock together; beside them, each
    # partition's incrementality estimator ("incr-...", written with it at every commit).
    incr = {k: b for k, b in latest.items() if k.startswith("incr-")}
    replicas = [
        MatchModel.loads(decode_replica(b).model) for k, b in latest.items() if k not in incr
    ]
    assert len(replicas) == settings.partitions
    assert incr and all(Replica.loads(b).learned > 0 for b in incr.values())
    for replica in replicas:
        assert replica.pair.n > 0.6 * labelled_pairs, (replica.pair.n, labelled_pairs)
