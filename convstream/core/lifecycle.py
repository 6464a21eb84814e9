"""A conversion's whole life, written once: admit and dedupe, lookups, answers, probes, decision,
label and revision, identity links, learning examples, feedback, expiry.

:class:`Lifecycle` is a pure state machine: each method takes one typed event and returns the
commands it causes, in order (messages of :mod:`convstream.core.messages` to send, and the
:class:`EmitLabel`, :class:`Reject`, :class:`Admitted` and :class:`Resolved` effects). The worker's
conversions agent (``convstream/stream/agents/conversions.py``) turns Kafka records into these
calls and the commands into sends; the offline engine (:mod:`convstream.core.engine`) answers
the same commands from memory. Neither holds a rule of its own.

State lives in two mappings the driver hands in: conversion states by key (a Faust table in the
worker, so every write is a changelog message; a dict offline) and model checkpoints. The
match models, one replica per conversions partition, and their learning queues live here.

Learning is pooled: every learning example (self-supervised or feedback) is queued for every
replica this process holds and, through :meth:`Lifecycle.take_outbox`, sent to the others; each
replica learns all of them in event-time order, ``learning_delay_ms`` behind its decisions
(:mod:`convstream.core.learning_queue`). So every replica learns from all the traffic, however
many partitions split it.

>>> from convstream.core.matching.baseline import RuleBaseline
>>> life = Lifecycle({}, RuleBaseline, partitions=1)
>>> conv = {"conversion_key": "a:Purchase:1", "event_id": "1", "event_name": "Purchase",
...         "advertiser_id": "a", "ts": 1_000, "sources": ["pixel"],
...         "user_data": {"click_id": "k1"}}
>>> life.conversion(conv, partition=0)
[Admitted(conversion_key='a:Purchase:1', outcome='new'), \
Lookup(key='click:k1', conversion_key='a:Purchase:1', round=0, ts=1000)]
>>> answer = {"key": "click:k1", "kind": "click", "degree": 1, "users": [["u1", 900, 900, 1]]}
>>> life.answer(LookupAnswer("a:Purchase:1", 0, answer))
[Probe(user_id='u1', conversion_key='a:Purchase:1', round=0, advertiser_id='a', ts=1000)]
>>> probe = {"user_id": "u1", "engagements": [[900, "click", "k1", "a", "c", "ad"]]}
>>> [type(c).__name__ for c in life.probed(ProbeAnswer("a:Purchase:1", 0, "u1", probe))]
['Resolved', 'EmitLabel']
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from convstream.core import coordinator
from convstream.core.attribution import AttributionConfig
from convstream.core.clock import EventClock, consensus
from convstream.core.coordinator import ConversionState, Policy
from convstream.core.identity import Rejection, conversion_identifier_keys
from convstream.core.learning_queue import Entry, LearningQueue
from convstream.core.messages import (
    ConversionKey,
    Decided,
    IndexLink,
    Lookup,
    LookupAnswer,
    Probe,
    ProbeAnswer,
    SharedExample,
    UserId,
    UserLink,
)
from convstream.core.partitioning import partition_for
from convstream.core.quality import QualityTracker
from convstream.core.resolve import LINKED_KINDS, identity_links, resolve, select_probe_candidates
from convstream.core.shared_values import drop_shared, note_rejections
from convstream.core.units import HOUR_MS

# --- commands that are not messages -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admitted:
    """A copy was taken: ``outcome`` is new, duplicate, correction or late (dedupe metrics)."""

    conversion_key: ConversionKey
    outcome: str


@dataclass(frozen=True, slots=True)
class Reject:
    """A copy outside the event-time rules: to dead-letter with ``reason`` (and ``detail``)."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Dropped:
    """Identifier values dropped from a conversion once its lookups answered (a value shared by
    too many users): counted like the rejections at ingestion."""

    conversion_key: ConversionKey
    rejections: tuple[Rejection, ...]


@dataclass(frozen=True, slots=True)
class Resolved:
    """The model of ``partition`` decided a conversion (whether or not its label changed)."""

    conversion_key: ConversionKey
    partition: int


@dataclass(frozen=True, slots=True)
class EmitLabel:
    """A new or changed label (``label["revision"]`` set) for the labels topic."""

    label: dict[str, Any]
    partition: int


Command = (
    Admitted | Reject | Dropped | Resolved | EmitLabel
    | Lookup | Probe | IndexLink | UserLink | Decided
)  # fmt: skip


def key_for_partition(partition: int, partitions: int, what: str = "model") -> str:
    """A table key that Kafka's partitioner sends to ``partition``: where its model (or its
    ``what``) lives.

    >>> [partition_for(key_for_partition(3, 8, what), 8) for what in ("model", "clock")]
    [3, 3]
    """
    i = 0
    while partition_for(f"{what}-{partition}-{i}", partitions) != partition:
        i += 1
    return f"{what}-{partition}-{i}"


class Lifecycle:
    """Conversions of the partitions one process owns; see the module docstring.

    ``states`` holds each key's :data:`ConversionState`; ``checkpoints`` (optional) the models'
    ``dumps()`` by :func:`key_for_partition`, written every ``checkpoint_every`` learning steps
    and read when a replica first starts. ``local`` says which conversions partitions this
    process owns (all of them by default); ``config`` gives the attribution settings in force,
    ``emitted_at`` a label's ``emitted_at`` and ``wall`` the wall time a round starts (read only by
    :meth:`redrive`, never by an event-time rule). ``compact_examples`` queues examples as JSON
    bytes, a quarter of their size as objects (a worker's queues hold an hour of traffic).
    ``broadcast`` puts every pooled example in the outbox for the other processes (a worker:
    which partitions another worker owns changes with every rebalance).

    ``hold_ms`` (the allowed lateness) holds a new conversion until its partition's clock has
    passed its event time by that much, or until the partition's input is idle
    (:meth:`release_idle`). The copies of a conversion read on its partition before then are
    decided together, and those read after revise the label: which ones, depends on the order
    of the partition, not on how fast the worker read which topic.
    """

    def __init__(
        self,
        states: MutableMapping[ConversionKey, ConversionState],
        matcher_factory: Any,
        *,
        partitions: int,
        policy: Policy | None = None,
        config: Callable[[], AttributionConfig] | None = None,
        max_candidates: int = 12,
        learning_delay_ms: int = HOUR_MS,
        pooled_learning: bool = True,
        checkpoints: MutableMapping[str, bytes] | None = None,
        checkpoint_every: int = 200,
        local: Callable[[], Iterable[int]] | None = None,
        emitted_at: Callable[[], int] | None = None,
        wall: Callable[[], float] = time.time,
        compact_examples: bool = False,
        on_model_start: Callable[[int, Any, bool], None] | None = None,
        broadcast: bool = False,
        hold_ms: int = 0,
    ) -> None:
        self.states = states
        self.matcher_factory = matcher_factory
        self.partitions = partitions
        self.policy = policy or Policy()
        default = AttributionConfig()
        self.config = config or (lambda: default)
        self.max_candidates = max_candidates
        self.learning_delay_ms = learning_delay_ms
        self.pooled_learning = pooled_learning
        self.checkpoints = checkpoints
        self.checkpoint_every = checkpoint_every
        self.local = local or (lambda: range(partitions))
        self.emitted_at = emitted_at or (lambda: int(time.time() * 1000))
        self.wall = wall
        self.compact_examples = compact_examples
        self.on_model_start = on_model_start
        self.broadcast = broadcast
        self.hold_ms = hold_ms
        self.quality = QualityTracker()
        self.models: dict[int, Any] = {}
        self.queues: dict[int, LearningQueue] = {}
        self.learned: dict[int, int] = {}
        # Newest event time each replica decided at: how far its learning may go.
        self.decided: dict[int, int] = {}
        # Each partition's event-time clock, which one outlying conversion cannot move.
        self.clocks: dict[int, EventClock] = {}
        # New conversions waiting, per partition, for its clock to pass ts + hold_ms.
        self._held: dict[int, list[tuple[int, ConversionKey]]] = {}
        self._outbox: list[SharedExample] = []

    # --- replicas ------------------------------------------------------------------------------

    def model(self, partition: int) -> Any:
        """The partition's replica, resumed from its checkpoint when there is one."""
        model = self.models.get(partition)
        if model is None:
            blob = None
            if self.checkpoints is not None:
                blob = self.checkpoints.get(key_for_partition(partition, self.partitions))
            model = self.matcher_factory.loads(blob) if blob else self.matcher_factory()
            if self.on_model_start is not None:
                self.on_model_start(partition, model, bool(blob))
            self.models[partition] = model
        return model

    def queue(self, partition: int) -> LearningQueue:
        queue = self.queues.get(partition)
        if queue is None:
            model = self.model(partition)
            apply = _json_learner(model) if self.compact_examples else model.learn_example
            queue = self.queues[partition] = LearningQueue(self.learning_delay_ms, apply)
        return queue

    def clock(self, partition: int) -> EventClock:
        """The partition's conversion clock, resumed from its last checkpoint."""
        clock = self.clocks.get(partition)
        if clock is None:
            blob = None
            if self.checkpoints is not None:
                blob = self.checkpoints.get(key_for_partition(partition, self.partitions, "clock"))
            clock = self.clocks[partition] = EventClock.loads(
                blob, max_future_ms=self.policy.max_future_ms, max_age_ms=self.policy.max_age_ms
            )
            # After a restart or a rebalance the held conversions are in the states table only.
            heap = self._held[partition] = []
            for key, state in self.states.items():
                if (
                    state.get("phase") == "held"
                    and partition_for(key, self.partitions) == partition
                ):
                    heap.append((state["conv"]["ts"], key))
            heapq.heapify(heap)
        return clock

    def forget_partition(self, partition: int) -> None:
        """A partition moved away takes its replica along; it reloads if it comes back."""
        self.clocks.pop(partition, None)
        self._held.pop(partition, None)
        self.models.pop(partition, None)
        self.queues.pop(partition, None)
        self.decided.pop(partition, None)
        self.learned.pop(partition, None)

    def _learn_until(self, partition: int, ts: int) -> None:
        steps = self.queue(partition).flush(ts)
        if not steps:
            return
        before = self.learned.get(partition, 0)
        self.learned[partition] = before + steps
        if self.checkpoints is None or not hasattr(self.models[partition], "dumps"):
            return
        if self.learned[partition] // self.checkpoint_every > before // self.checkpoint_every:
            key = key_for_partition(partition, self.partitions)
            self.checkpoints[key] = self.models[partition].dumps()
            if partition in self.clocks:
                key = key_for_partition(partition, self.partitions, "clock")
                self.checkpoints[key] = self.clocks[partition].dumps()

    def _entry(self, ts: int, key: ConversionKey, example: dict[str, Any]) -> Entry:
        return (
            Entry.as_json(ts, key, example)
            if self.compact_examples
            else Entry.make(ts, key, example)
        )

    def _share(self, partition: int, ts: int, key: ConversionKey, example: Any) -> None:
        """Queue an example for the replicas here now, and for the others via the outbox.

        The replicas here do not wait for a round trip: during a replay at full speed one burst
        of decisions can span hours of event time, and replicas that got the examples back only
        after the burst learned hours late (measured: worse labels, and labels that differed
        more between one worker and three).
        """
        if example is None:
            return
        if not self.pooled_learning:
            self.queue(partition).push(self._entry(ts, key, example))
            return
        local = sorted(set(self.local()) | {partition})
        entry = self._entry(ts, key, example)
        for target in local:
            self.queue(target).push(entry)
        if self.broadcast:
            self._outbox.append(SharedExample(ts, key, example, local))

    def take_outbox(self) -> list[SharedExample]:
        """Examples made here since the last call, for the replicas of other processes."""
        out, self._outbox = self._outbox, []
        return out

    def entries(self, shared: Iterable[SharedExample]) -> list[tuple[Entry, list[int]]]:
        """Queue entries for examples another process made: built once, shared by every
        replica here that queues them."""
        return [(self._entry(x.ts, x.conversion_key, x.example), x.local) for x in shared]

    def examples(
        self, partition: int, entries: Iterable[tuple[Entry, list[int]]], *, own: bool
    ) -> None:
        """Examples (from :meth:`entries`) for the replica of ``partition``; with ``own`` they
        were made here, and those this replica queued when they were made are skipped.

        The replica learns what is already due by its newest decision (what its next decision
        would learn first anyway), so that a replica between decisions does not sit on a growing
        queue; one that has decided nothing yet goes by the others here.
        """
        queue = self.queue(partition)
        for entry, local in entries:
            if not (own and partition in local):
                queue.push(entry)
        clock = self.decided.get(partition, max(self.decided.values(), default=None))
        if clock is not None:
            self._learn_until(partition, clock)

    # --- events --------------------------------------------------------------------------------

    def conversion(
        self, copy: dict[str, Any], partition: int, *, broker_ts: int | None = None
    ) -> list[Command]:
        """A CAPI or pixel copy read on ``partition`` (first copy wins; later copies fill in
        missing identifiers, and one that adds some starts a new round).

        A new conversion is judged "future" or "too old" against the partition's clock
        (:class:`~convstream.core.clock.EventClock`, which one outlier cannot move) and against
        its broker timestamp (``broker_ts``, epoch ms), and rejected copies leave the clock
        where it was.
        """
        key = copy["conversion_key"]
        clock = self.clock(partition)
        existing = self.states.get(key)
        # Every copy, new or not: a copy far off the clock is junk even under a known key (a
        # reused event id). A cold clock (a partition's first few conversions) goes by the
        # warm ones here.
        fallback = None if clock.warm() else consensus(self.clocks.values())
        verdict = clock.judge(copy["ts"], broker_ts=broker_ts, fallback=fallback)
        if verdict is not None:
            detail = clock.explain(copy["ts"], broker_ts=broker_ts, fallback=fallback)
            return [Reject(verdict, detail)]
        state, outcome = coordinator.admit(
            existing, copy, clock_ts=clock.now() if clock.warm() else None, policy=self.policy
        )
        if outcome in ("too_old", "future"):
            return [Reject("too_old" if outcome == "too_old" else "future_ts")]
        clock.observe(copy["ts"])
        out: list[Command] = [Admitted(key, outcome)]
        if state is None:
            return out
        if outcome == "new" and self.hold_ms > 0:
            state["phase"] = "held"
            self.states[key] = state
            heapq.heappush(self._held_on(partition), (copy["ts"], key))
        elif outcome == "correction" and state["phase"] in ("lookup", "probe"):
            # The round in flight keeps the identifiers it started with; a new one follows it.
            # Cancelling it would make the revision count depend on how fast answers come.
            state["again"] = True
            self.states[key] = state
        elif outcome == "correction" and state["phase"] == "held":
            self.states[key] = state  # merged into the copy it waits with
        elif outcome in ("new", "correction"):
            out += self._start_round(key, state)
        else:
            self.states[key] = state
            if outcome == "duplicate" and state["label"] is not None:
                self.quality.observe(state["conv"], state["label"])
        if self.hold_ms > 0:
            now = clock.now()
            if now is not None:
                out += self._release_held(partition, now - self.hold_ms)
        return out

    def release_idle(self, partition: int) -> list[Command]:
        """Start every conversion held on ``partition``: its input is idle (read to its end,
        nothing new for a while), so no copy and no later conversion is on its way."""
        self.clock(partition)  # after a restart: finds the held states of the partition
        return self._release_held(partition, None)

    def held(self, partition: int) -> int:
        """How many conversions of ``partition`` wait for its clock."""
        return len(self._held.get(partition, ()))

    def _held_on(self, partition: int) -> list[tuple[int, ConversionKey]]:
        return self._held.setdefault(partition, [])

    def _release_held(self, partition: int, upto: int | None) -> list[Command]:
        """Start the rounds of the conversions held at or before ``upto`` (all: None)."""
        heap = self._held.get(partition)
        out: list[Command] = []
        while heap and (upto is None or heap[0][0] <= upto):
            _, key = heapq.heappop(heap)
            state = self.states.get(key)
            if state is not None and state["phase"] == "held":
                out += self._start_round(key, state)
        return out

    def feedback(self, key: ConversionKey, user_id: UserId | None, ts: int) -> list[Command]:
        """Delayed truth for ``key``: taught at once if decided, else when it is."""
        state = self.states.get(key)
        if state is None or state["phase"] == "feedback_first":
            self.states[key] = coordinator.feedback_first(user_id, ts)
            return []
        done = state["phase"] == "done" and state["snapshot"] is not None
        state["feedback"] = {"user_id": user_id, "ts": ts, "learned": done}
        self.states[key] = state
        if done:
            part = partition_for(key, self.partitions)
            self._share(
                part, ts, key, self.model(part).feedback_example(state["snapshot"], user_id)
            )
        return []

    def answer(self, msg: LookupAnswer) -> list[Command]:
        """The index's answer to one of the round's lookups."""
        key = msg.conversion_key
        state = self.states.get(key)
        if state is None:
            return []
        answer = drop_shared(msg.answer, limit=self.policy.max_users_per_value)
        if coordinator.on_answer(state, msg.round, answer["key"], answer):
            return self._probe_or_finish(key, state)
        self.states[key] = state
        return []

    def probed(self, msg: ProbeAnswer) -> list[Command]:
        """A candidate's engagements for the round."""
        key = msg.conversion_key
        state = self.states.get(key)
        if state is None:
            return []
        if coordinator.on_probe(state, msg.round, msg.user_id, msg.answer):
            return self._finish(key, state)
        self.states[key] = state
        return []

    def expire(self, active: Iterable[int]) -> int:
        """Drop the states of ``active`` partitions past the dedupe and feedback horizons
        (event time, the partition's clock); returns how many went."""
        owned = set(active)
        stale = []
        clocks = {p: c.now() for p, c in self.clocks.items() if p in owned}
        for key, state in self.states.items():
            clock = clocks.get(partition_for(key, self.partitions))
            if clock is not None and coordinator.expired(state, clock, self.policy):
                stale.append(key)
        for key in stale:
            del self.states[key]
        return len(stale)

    def redrive(
        self, active: Iterable[int], *, since: float, now: float, after_s: float
    ) -> list[Command]:
        """Start again every round in flight since before ``since`` (the last rebalance), once
        ``after_s`` have passed since then.

        Lookups are parked in the memory of the identifiers agent; a worker that dies or loses
        the partition after committing their offsets takes them along, and nothing else would
        ever answer. A needless restart costs messages only: the old round's answers are
        ignored.
        """
        if now - since < after_s:
            return []
        owned = set(active)
        cut = [
            key
            for key, state in self.states.items()
            if state["phase"] in ("lookup", "probe")
            and state.get("round_at", 0) < since
            and partition_for(key, self.partitions) in owned
        ]
        out: list[Command] = []
        for key in cut:
            out += self._start_round(key, self.states[key])
        return out

    # --- steps ---------------------------------------------------------------------------------

    def _start_round(self, key: ConversionKey, state: ConversionState) -> list[Command]:
        conv = state["conv"]
        keys = conversion_identifier_keys(conv["advertiser_id"], conv["user_data"])
        state, lookups = coordinator.start_round(state, (ident for _, ident in keys))
        state["round_at"] = self.wall()  # for redrive() only: never for event time
        self.states[key] = state
        if not lookups:
            return self._probe_or_finish(key, state)
        return [Lookup(ident, key, state["round"], conv["ts"]) for ident in lookups]

    def _probe_or_finish(self, key: ConversionKey, state: ConversionState) -> list[Command]:
        conv = state["conv"]
        targets = coordinator.begin_probes(
            state, select_probe_candidates(conv, state["answers"], self.max_candidates)
        )
        self.states[key] = state
        if not targets:
            return self._finish(key, state)
        return [
            Probe(user, key, state["round"], conv["advertiser_id"], conv["ts"]) for user in targets
        ]

    def _finish(self, key: ConversionKey, state: ConversionState) -> list[Command]:
        conv = state["conv"]
        part = partition_for(key, self.partitions)
        model = self.model(part)
        self.decided[part] = max(self.decided.get(part, conv["ts"]), conv["ts"])
        self._learn_until(part, conv["ts"])
        answers, probes = state["answers"], state["probes"]
        dropped = note_rejections(conv, answers)
        label, decision = resolve(
            conv,
            answers,
            probes,
            model,
            self.config().for_advertiser(conv["advertiser_id"]),
            revision=0,
            emitted_at=self.emitted_at(),
        )
        self._share(
            part, conv["ts"], key, model.self_supervised_example(conv, answers, probes, decision)
        )
        truth = state.get("feedback")
        if truth is not None and not truth.get("learned"):
            truth["learned"] = True
            self._share(
                part, truth["ts"], key, model.feedback_example(decision.snapshot, truth["user_id"])
            )
        emitted = coordinator.settle(state, label, decision.snapshot)
        again = state.pop("again", False)
        self.states[key] = state
        if state["label"] is not None:
            self.quality.observe(conv, state["label"])
        out: list[Command] = [Resolved(key, part)]
        if dropped:
            out.append(Dropped(key, tuple(dropped)))
        if emitted is not None:
            out.append(EmitLabel(emitted, part))
        # Every deterministic decision refreshes its links whether or not the label changed:
        # their recency is a feature of later matches on those keys.
        for link_key, user in identity_links(conv, decision, answers):
            out += [IndexLink(link_key, user, conv["ts"]), UserLink(link_key, user, conv["ts"])]
        # After its links: the key's next ordered lookup may go out (every value of a field).
        keys = conversion_identifier_keys(conv["advertiser_id"], conv["user_data"])
        out += [Decided(ident, key) for kind, ident in dict.fromkeys(keys) if kind in LINKED_KINDS]
        if again:  # a copy with new identifiers came during the round
            out += self._start_round(key, state)
        return out


def _json_learner(model: Any) -> Callable[[bytes], None]:
    def learn(example: bytes) -> None:
        model.learn_example(orjson.loads(example))

    return learn
