"""A replica resumed from its checkpoint decides as the one that never stopped (issue 23 item 3).

A worker killed between two commits restarts from its tables: the conversion states, and one
checkpoint per match-model replica. Here the offline engine plays the worker: half a replay,
a checkpoint (what the worker writes at a commit), then a "restart" that keeps every table but
drops what the process held in memory, and the second half fed to both.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from convstream.core.clock import EventClock
from convstream.core.engine import OfflineEngine
from convstream.core.lifecycle import (
    Lifecycle,
    Replica,
    decode_replica,
    encode_replica,
    key_for_partition,
)
from convstream.core.matching.model import MatchModel
from convstream.core.units import DAY_MS
from convstream.synth.generate import config_from_args, generate
from tests.core.test_lifecycle import T, _copy

PARTITIONS = 4


@pytest.fixture(scope="module")
def replay():
    lines, _ = generate(config_from_args("heavy-sharing", seed=23, users=1500, days=4))
    return lines


def _engine(checkpoints: dict[str, bytes], **options: Any) -> OfflineEngine:
    options.setdefault("incrementality", False)
    engine = OfflineEngine(MatchModel, partitions=PARTITIONS, **options)
    life = engine.lifecycle
    life.checkpoints = checkpoints
    life.compact_examples = True  # examples queued as JSON, as in the worker
    life.queues.clear()
    engine.queues = [life.queue(p) for p in range(PARTITIONS)]
    return engine


def _restart(
    engine: OfflineEngine, *, keep_queue: bool = True, keep_estimator_queue: bool = True
) -> OfflineEngine:
    """The same tables (states, index, users, checkpoints) with nothing the process held in
    memory: replicas, queues and clocks come back from the checkpoints alone."""
    # What a process holds in memory is not copied (and is dropped below); the rest is.
    memory = [*engine.lifecycle.models.values(), *engine.lifecycle.queues.values(), engine.config]
    restarted = copy.deepcopy(engine, {id(x): x for x in memory})
    life = restarted.lifecycle
    life.config = lambda: restarted.config
    life.emitted_at = lambda: restarted.watermark
    if not keep_queue:
        for key, blob in life.checkpoints.items():
            saved = decode_replica(blob)
            life.checkpoints[key], _ = encode_replica(
                saved.model,
                [],
                decided=saved.decided,
                learned=saved.learned,
                clock=bytes(str(saved.clock), "ascii").replace(b" ", b""),
            )
    if not keep_estimator_queue:
        for p in range(PARTITIONS):
            key = key_for_partition(p, PARTITIONS, "incr")
            if key in life.checkpoints:
                saved = orjson.loads(life.checkpoints[key])
                life.checkpoints[key] = orjson.dumps({**saved, "queue": None})
    for held in (life.models, life.queues, life.clocks, life.decided, life.learned, life._held):
        held.clear()
    # The incrementality estimators, their queues and clocks, and the fits they shared.
    for held in (life.replicas, life.inc_queues, life.inc_decided, life.inc_learned, life._fits):
        held.clear()
    life._resumed.clear()
    restarted.matchers = [life.model(p) for p in range(PARTITIONS)]
    restarted.queues = [life.queue(p) for p in range(PARTITIONS)]
    return restarted


def _run_with_restart(
    lines, *, keep_queue: bool = True, keep_estimator_queue: bool = True, **options: Any
):
    """Labels of a run that never stopped, and of one restarted from its checkpoints halfway
    (``options``: the engine's)."""
    engine = _engine({}, **options)
    half = len(lines) // 2
    for line in lines[:half]:
        engine.feed(line)
    assert engine.lifecycle.checkpoint() == PARTITIONS
    assert engine.lifecycle.queues_not_saved == 0
    before = len(engine.labels)
    restarted = _restart(engine, keep_queue=keep_queue, keep_estimator_queue=keep_estimator_queue)
    for run in (engine, restarted):
        for line in lines[half:]:
            run.feed(line)
        run.finish()
    return engine.labels[before:], restarted.labels[before:]


def test_a_restarted_replica_gives_the_labels_of_one_that_never_stopped(replay):
    kept, restarted = _run_with_restart(replay)
    assert len(kept) > 150
    assert restarted == kept


def test_the_saved_learning_queue_is_what_makes_them_equal(replay):
    """The control: the same restart with the queues left out (what checkpoints held before)
    gives other confidences, because the examples waiting out the learning delay are lost."""
    kept, restarted = _run_with_restart(replay, keep_queue=False)
    assert len(kept) == len(restarted)
    differ = [
        (a["conversion_key"], a["match_confidence"], b["match_confidence"])
        for a, b in zip(kept, restarted, strict=True)
        if a["match_confidence"] != b["match_confidence"]
    ]
    assert differ


@pytest.fixture(scope="module")
def long_replay():
    """Two weeks: the estimators see enough held-out conversions to score labels."""
    lines, _ = generate(config_from_args("default", seed=11, users=800, days=14))
    return lines


#: A day of learning delay: a restart halfway finds a day of examples and arm counts waiting.
ESTIMATOR = {"incrementality": True, "learning_delay_ms": DAY_MS}


def _incremental(labels: list[dict[str, Any]]) -> list[tuple[str, float | None]]:
    return [(x["conversion_key"], x["incremental_probability"]) for x in labels]


def test_a_restarted_estimator_gives_the_incremental_fields_of_one_that_never_stopped(
    long_replay,
):
    kept, restarted = _run_with_restart(long_replay, **ESTIMATOR)
    scored = [p for _, p in _incremental(kept) if p is not None]
    assert len(scored) > 50
    assert _incremental(restarted) == _incremental(kept)
    assert restarted == kept


def test_the_estimators_saved_queue_is_what_makes_them_equal(long_replay):
    kept, restarted = _run_with_restart(long_replay, keep_estimator_queue=False, **ESTIMATOR)
    assert len(kept) == len(restarted)
    assert _incremental(restarted) != _incremental(kept)


def test_only_replicas_changed_since_their_checkpoint_are_written():
    checkpoints: dict[str, bytes] = {}
    life = Lifecycle({}, MatchModel, partitions=PARTITIONS, checkpoints=checkpoints)
    for p in range(PARTITIONS):
        life.conversion(_copy(f"o{p}", T), partition=p)  # a round starts: no decision
    assert life.checkpoint() == PARTITIONS
    assert life.checkpoint() == 0  # nothing happened since
    written = dict(checkpoints)
    life.conversion(_copy("o9", T + 1_000), partition=2)  # moves one partition's clock
    assert life.checkpoint() == 1
    changed = {k for k, blob in checkpoints.items() if written[k] != blob}
    assert changed == {key_for_partition(2, PARTITIONS)}
    assert decode_replica(checkpoints[key_for_partition(2, PARTITIONS)]).clock == [T, T + 1_000]


def test_a_queue_too_large_for_one_message_is_left_out_whole(replay):
    engine = _engine({})
    engine.lifecycle.max_checkpoint_bytes = 2_000
    for line in replay[: len(replay) // 2]:
        engine.feed(line)
    engine.lifecycle.checkpoint()
    assert engine.lifecycle.queues_not_saved == PARTITIONS
    saved = [decode_replica(b) for b in engine.lifecycle.checkpoints.values()]
    assert all(s.queue is None and s.model for s in saved)
    # Its replica resumes with an empty queue, not with a part of it.
    restarted = _restart(engine)
    assert all(len(q) == 0 for q in restarted.queues)


def test_a_checkpoint_from_before_replicas_were_saved_whole_still_resumes():
    model, clock = MatchModel(), EventClock(max_future_ms=30 * DAY_MS, max_age_ms=7 * DAY_MS)
    for i in range(20):
        clock.observe(T + i * 1_000)
    checkpoints = {
        key_for_partition(0, 2): model.dumps(),
        key_for_partition(0, 2, "clock"): clock.dumps(),
    }
    engine = OfflineEngine(MatchModel, partitions=2, incrementality=False)
    life = engine.lifecycle
    life.checkpoints = checkpoints
    for held in (life.models, life.queues, life.clocks):
        held.clear()
    assert isinstance(life.model(0), MatchModel)
    assert life.clock(0).now() == clock.now() is not None
    assert decode_replica(checkpoints[key_for_partition(0, 2)]) == Replica(
        model.dumps(), [], None, 0, None
    )
