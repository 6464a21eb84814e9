"""One worker or three in one consumer group: the same labels."""

from __future__ import annotations

import asyncio
import time

import pytest

from convstream.core.evaluation import latest_labels
from convstream.stream.kafka import ensure_topics, produce
from convstream.stream.runner import wait_for_labels
from convstream.synth.generate import config_from_args, generate

pytestmark = pytest.mark.integration

# Workers join the group one after the other; each join is a rebalance. Replay only once the
# group has settled, so that no partition moves while conversions are being resolved.
SETTLE_S = 20
# A replay at full speed moves the watermark in steps of many hours of this sparse test traffic
# (a batch of 1000 events), and partitions resolve up to two and a half days of event time
# apart; the model's learning delay must exceed both for labels to be identical across runs:
# every replica learns every partition's examples (live traffic moves in seconds, hence the
# 1 h default).
LEARNING_DELAY_MS = 3 * 24 * 3600 * 1000
MAX_CONFIDENCE_GAP = 0.1


def test_three_workers_give_the_labels_of_one(settings, start_worker):
    lines, truth = generate(config_from_args("default", seed=21, users=150, days=4))
    expected = {row["conversion_key"] for row in truth}
    results = {}
    for n in (1, 3):
        s = settings.replace(
            topic_prefix=f"{settings.topic_prefix}w{n}.",
            app_id=f"{settings.app_id}-w{n}",
            max_wait_s=30.0,
            learning_delay_ms=LEARNING_DELAY_MS,
        )
        asyncio.run(ensure_topics(s))
        workers = [start_worker(s, f"w{n}-{i}") for i in range(n)]
        time.sleep(SETTLE_S)
        asyncio.run(produce(s, lines))
        results[n] = latest_labels(wait_for_labels(s, expected, timeout=240))[0]
        assert all(w.alive() for w in workers)
        for w in workers:
            w.stop()

    one, three = results[1], results[3]
    assert set(one) == set(three) == expected
    # The online model is the one bounded difference: a rebalance while a slow machine is
    # still settling the group moves a partition's replica, which resumes from its last
    # checkpoint and relearns the steps since. Users, methods and credits stay identical,
    # except for a rare match whose confidence sits at the threshold on one side.
    flips = 0
    for k in expected:
        a, b = one[k], three[k]
        if _threshold_flip(a, b):
            flips += 1
            continue
        assert (a["user_id"], a["match_method"]) == (b["user_id"], b["match_method"]), k
        gap = abs(a["match_confidence"] - b["match_confidence"])
        assert gap <= MAX_CONFIDENCE_GAP, k
        assert [(c["engagement_id"], c["credit"]) for c in a["credits"]] == [
            (c["engagement_id"], c["credit"]) for c in b["credits"]
        ], k
        for c in b["credits"]:
            assert abs(c["label_weight"] - b["match_confidence"] * c["credit"]) <= 1e-9, k
    assert flips <= max(1, len(expected) // 50)


def _threshold_flip(a: dict, b: dict) -> bool:
    """A model match on one side and "none" on the other, within the bounded confidence
    difference of the 0.5 threshold: the same decision, nudged across the line."""
    pair = {a["match_method"], b["match_method"]}
    if pair != {"model", "none"}:
        return False
    matched = a if a["match_method"] == "model" else b
    return matched["match_confidence"] <= 0.5 + MAX_CONFIDENCE_GAP
