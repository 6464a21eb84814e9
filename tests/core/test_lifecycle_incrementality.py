"""The lifecycle scores labels with its incrementality replicas and shares what they learn."""

from __future__ import annotations

import random

import pytest

from convstream.core.lifecycle import EmitLabel, Lifecycle, key_for_partition
from convstream.core.matching.baseline import RuleBaseline
from convstream.core.messages import LookupAnswer, ProbeAnswer, SharedExample
from convstream.core.partitioning import partition_for
from convstream.core.units import DAY_MS, HOUR_MS, MINUTE_MS

T = 1_767_571_200_000


def _decide(life: Lifecycle, event_id: str, ts: int, units: list, **user_data) -> list:
    """A conversion matched by its click id to u1, whose probe answer carries ``units``."""
    key = f"a:Purchase:{event_id}"
    copy = {"conversion_key": key, "event_id": event_id, "event_name": "Purchase",
            "advertiser_id": "a", "ts": ts, "sources": ["capi"],
            "user_data": {"click_id": f"k-{event_id}", **user_data}}  # fmt: skip
    part = partition_for(key, life.partitions)
    commands = life.conversion(copy, partition=part)
    state = life.states[key]
    for ident in list(state["pending"]):
        users = [["u1", ts - MINUTE_MS, ts - MINUTE_MS, 1]] if ident.startswith("click:") else []
        answer = {"key": ident, "kind": ident.split(":")[0], "degree": len(users), "users": users}
        commands += life.answer(LookupAnswer(key, state["round"], answer))
    engagement = [ts - MINUTE_MS, "click", f"k-{event_id}", "a", "c", "ad"]
    probe = {"user_id": "u1", "engagements": [engagement], "units": units, "activity": 3}
    return commands + life.probed(ProbeAnswer(key, state["round"], "u1", probe))


def _label(commands: list) -> dict:
    (emit,) = [c for c in commands if isinstance(c, EmitLabel)]
    return emit.label


def _shared(life: Lifecycle, kind: str) -> list[SharedExample]:
    return [x for x in life.take_outbox() if x.example.get("t") == kind]


EXPOSED = [["c", False, T - DAY_MS, T - MINUTE_MS, 2], ["d", True, T - DAY_MS, T - DAY_MS, 1]]


def test_a_first_label_with_a_user_teaches_its_units_once():
    life = Lifecycle({}, RuleBaseline, partitions=2, broadcast=True)
    label = _label(_decide(life, "o1", T, EXPOSED))
    # Not ready: no held-out conversion learned yet (docs/contract.md).
    assert (label["incremental_probability"], label["incremental_weight"]) == (None, None)
    (shared,) = _shared(life, "inc")
    assert shared.ts == T and shared.conversion_key == "a:Purchase:o1"
    assert [held for _, held in shared.example["x"]] == [False, True]  # both arms' units
    assert "campaign=d" in shared.example["x"][1][0]
    # A copy with a new identifier revises the label: the conversion is not learned again.
    again = _decide(life, "o1", T, EXPOSED, em="e" * 64)
    assert _shared(life, "inc") == []
    assert all(c.label["revision"] == 1 for c in again if isinstance(c, EmitLabel))


def test_users_entered_go_to_every_replica_and_to_the_other_processes():
    life = Lifecycle({}, RuleBaseline, partitions=3, broadcast=True, local=lambda: [0, 2])
    life.entered({T: {"c": [4, 1]}, T + 5: {"c": [1, 0]}})
    (shared,) = _shared(life, "arms")
    assert shared.example == {"t": "arms", "n": {"c": [5, 1]}} and shared.local == [0, 2]
    assert [len(life.inc_queue(p)) for p in (0, 2)] == [1, 1]


def test_examples_from_another_process_reach_the_incrementality_replica_only():
    life = Lifecycle({}, RuleBaseline, partitions=2, learning_delay_ms=HOUR_MS)
    entry = {"t": "inc", "x": [[["campaign=c"], True]]}
    life.examples(0, life.entries([SharedExample(T, "a:Purchase:x", entry, [1])]), own=False)
    assert len(life.inc_queue(0)) == 1 and len(life.queue(0)) == 0


def _teach(life: Lifecycle, n: int, start: int) -> None:
    """``n`` conversions of another process, a fifth of them held out, and their arms."""
    rng = random.Random(1)
    shared = [SharedExample(start, "arms", {"t": "arms", "n": {"c": [900, 100]}}, [9])]
    for i in range(n):
        x = ["activity=0", "campaign=c", "campaign=c&recency=1", "frequency=0", "recency=1"]
        held = i % 5 == 0 or rng.random() < 0.02
        example = {"t": "inc", "x": [[x, held]]}
        shared.append(SharedExample(start + i * MINUTE_MS, f"a:Purchase:p{i}", example, [9]))
    for p in range(life.partitions):
        life.examples(p, life.entries(shared), own=False)


def test_a_ready_replica_scores_the_credited_campaign_as_of_the_learning_horizon():
    life = Lifecycle({}, RuleBaseline, partitions=1, learning_delay_ms=HOUR_MS)
    _teach(life, 200, T - 2 * DAY_MS)
    label = _label(_decide(life, "o1", T, EXPOSED))
    p = label["incremental_probability"]
    # Held out 1 in 5 converters against 1 in 10 users: the holdout converts more, no lift.
    assert p == 0.0
    assert label["incremental_weight"] == pytest.approx(label["label_weight"] * p)
    # A replica that learned from a holdout that converts less finds lift.
    lifted = Lifecycle({}, RuleBaseline, partitions=1, learning_delay_ms=HOUR_MS)
    shared = [SharedExample(T - 3 * DAY_MS, "arms", {"t": "arms", "n": {"c": [500, 500]}}, [9])]
    lifted.examples(0, lifted.entries(shared), own=False)
    _teach(lifted, 200, T - 2 * DAY_MS)
    assert 0.3 < _label(_decide(lifted, "o1", T, EXPOSED))["incremental_probability"] < 1.0


def test_without_a_user_or_without_credits_the_fields_say_so():
    life = Lifecycle({}, RuleBaseline, partitions=1)
    copy = {"conversion_key": "a:Purchase:n", "event_id": "n", "event_name": "Purchase",
            "advertiser_id": "a", "ts": T, "sources": ["capi"], "user_data": {}}  # fmt: skip
    label = _label(life.conversion(copy, partition=0))
    assert label["user_id"] is None
    assert (label["incremental_probability"], label["incremental_weight"]) == (None, 0.0)
    plain = Lifecycle({}, RuleBaseline, partitions=1, incrementality=False)
    assert "incremental_probability" not in _label(plain.conversion(copy, partition=0))


def test_the_replica_is_checkpointed_under_its_own_key_and_resumed():
    checkpoints: dict[str, bytes] = {}
    life = Lifecycle({}, RuleBaseline, partitions=1, checkpoints=checkpoints)
    _teach(life, 200, T - 2 * DAY_MS)
    label = _label(_decide(life, "o1", T, EXPOSED))
    life.checkpoint()  # at a commit, with the match model's
    key = key_for_partition(0, 1, "incr")
    assert key in checkpoints and key != key_for_partition(0, 1)
    resumed = Lifecycle({}, RuleBaseline, partitions=1, checkpoints=checkpoints)
    assert resumed.replica(0).learned >= 150
    again = _label(_decide(resumed, "o2", T, EXPOSED))
    assert again["incremental_probability"] == pytest.approx(label["incremental_probability"])
