"""A conversion's whole life, written once: admit and dedupe, lookups, answers, probes, decision,
label and revision, identity links, learning examples, feedback, expiry.

:class:`Lifecycle` is a pure state machine: each method takes one typed event and returns the
commands it causes, in order (messages of :mod:`convstream.core.messages` to send, and the
:class:`EmitLabel`, :class:`Reject`, :class:`Admitted` and :class:`Resolved` effects). The worker's
conversions agent (``convstream/stream/agents/conversions.py``) turns Kafka records into these
calls and the commands into sends; the offline engine (:mod:`convstream.core.engine`) answers
the same commands from memory. Neither holds a rule of its own.

State lives in two mappings the driver hands in: conversion states by key (a Faust table in the
worker, so every write is a changelog message; a dict offline) and replica checkpoints. The
match models, one replica per conversions partition, and their learning queues live here.
:meth:`Lifecycle.checkpoint` saves each replica whole (model, learning queue, clock) in one
entry; the worker calls it at every Faust commit, before the offsets are chosen.

Learning is pooled: every learning example (self-supervised or feedback) is queued for every
replica this process holds and, through :meth:`Lifecycle.take_outbox`, sent to the others; each
replica learns all of them in event-time order, ``learning_delay_ms`` behind its decisions
(:mod:`convstream.core.learning_queue`). So every replica learns from all the traffic, however
many partitions split it.

Incrementality rides the same path: each partition also has an incrementality estimator
replica (:mod:`convstream.core.incrementality_replica`) that scores an emitted label from its
user's units in the probe answer, a first label with a user shares its conversion's examples,
and the users entered per campaign come in through :meth:`Lifecycle.entered` (from the users
agent, or the offline engine's user states).

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
from convstream.core.incrementality import conversion_examples, score_credits
from convstream.core.incrementality_replica import (
    ARMS,
    EXAMPLES,
    arms_entries,
    entry_digest,
    saved_fields,
)
from convstream.core.incrementality_replica import Replica as EstimatorReplica
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
class Incremental:
    """An incrementality entry in a learning queue (examples or arm counts): learned by the
    partition's :class:`~convstream.core.incrementality_replica.Replica`, not its match model."""

    ts: int
    entry: dict[str, Any]
    digest: int  # of the entry, for the replicas' fingerprints (computed once)


@dataclass(frozen=True, slots=True)
class EmitLabel:
    """A new or changed label (``label["revision"]`` set) for the labels topic; ``seq`` numbers
    the labels of ``partition`` in the order they were decided (:meth:`Lifecycle.sent`)."""

    label: dict[str, Any]
    partition: int
    seq: int = 0


Command = (
    Admitted | Reject | Dropped | Resolved | EmitLabel
    | Lookup | Probe | IndexLink | UserLink | Decided
)  # fmt: skip


#: The first bytes of a replica checkpoint (:func:`encode_replica`).
REPLICA_MAGIC = b"csreplica1"
#: A replica checkpoint is one changelog message: below Kafka's 1 MB default message size.
MAX_CHECKPOINT_BYTES = 900_000


@dataclass(frozen=True, slots=True)
class Replica:
    """What a replica resumes from: its model's ``dumps()``, the learning examples waiting in its
    queue as ``(ts, key, example)`` (None: too many to save, see :func:`encode_replica`), the
    newest event time it decided at, how many examples it learned, its conversion clock's
    recent event times (None: a checkpoint from before replicas were saved whole, whose clock
    has an entry of its own), and the ``seq`` of the last of its partition's labels handed to
    the producer before the checkpoint (:meth:`Lifecycle.sent`)."""

    model: bytes
    queue: list[tuple[int, str, Any]] | None
    decided: int | None
    learned: int
    clock: list[int] | None
    sent: int = 0


def encode_replica(
    model: bytes,
    entries: Iterable[Entry],
    *,
    decided: int | None,
    learned: int,
    clock: bytes,
    sent: int = 0,
    limit: int = MAX_CHECKPOINT_BYTES,
) -> tuple[bytes, bool]:
    """One checkpoint entry for a replica; returns it and whether its queue fits in ``limit``
    bytes with the rest. A queue that does not fit is left out whole (its replica resumes with
    an empty queue: those examples are never learned), never cut: a cut queue would resume as
    if its missing examples had been learned.

    >>> blob, whole = encode_replica(b"M", [Entry.make(5, "k", {"t": "ss"})], decided=9,
    ...                              learned=3, clock=b"[7,9]")
    >>> whole, decode_replica(blob)  # doctest: +NORMALIZE_WHITESPACE
    (True, Replica(model=b'M', queue=[(5, 'k', {'t': 'ss'})], decided=9, learned=3,
                   clock=[7, 9], sent=0))
    >>> blob, whole = encode_replica(b"M", [Entry.make(5, "k", {"t": "ss"})], decided=9,
    ...                              learned=3, clock=b"[]", limit=40)
    >>> whole, decode_replica(blob).queue
    (False, None)
    """

    def header(queue: Any) -> bytes:
        fields = {
            "decided": decided,
            "learned": learned,
            "clock": orjson.Fragment(clock),
            "sent": sent,
        }
        return orjson.dumps({**fields, "queue": queue})

    queue = [
        [e.ts, e.key, orjson.Fragment(e.example) if isinstance(e.example, bytes) else e.example]
        for e in entries
    ]
    head = header(queue)
    whole = len(REPLICA_MAGIC) + 4 + len(head) + len(model) <= limit
    if not whole:
        head = header(None)
    return REPLICA_MAGIC + len(head).to_bytes(4, "big") + head + model, whole


def decode_replica(blob: bytes) -> Replica:
    """The :class:`Replica` of a checkpoint entry; an entry from before replicas were saved
    whole is a model's ``dumps()`` alone."""
    if not blob.startswith(REPLICA_MAGIC):
        return Replica(blob, [], None, 0, None)
    at = len(REPLICA_MAGIC)
    size = int.from_bytes(blob[at : at + 4], "big")
    head = orjson.loads(blob[at + 4 : at + 4 + size])
    queue = head["queue"]
    return Replica(
        model=blob[at + 4 + size :],
        queue=None if queue is None else [(ts, key, ex) for ts, key, ex in queue],
        decided=head["decided"],
        learned=head["learned"],
        clock=head["clock"],
        sent=head.get("sent", 0),
    )


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

    ``states`` holds each key's :data:`ConversionState`; ``checkpoints`` (optional) each
    replica's checkpoint (:func:`encode_replica`) by :func:`key_for_partition`, written by
    :meth:`checkpoint` and read when a replica first starts (``max_checkpoint_bytes`` bounds
    one). ``local`` says which conversions partitions this process owns (all of them by
    default); ``config`` gives the attribution settings in force, ``emitted_at`` a label's
    ``emitted_at`` and ``wall`` the wall time a round starts (read only by :meth:`redrive`,
    never by an event-time rule). ``compact_examples`` queues examples as JSON bytes, a quarter
    of their size as objects (a worker's queues hold an hour of traffic).
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
        max_checkpoint_bytes: int = MAX_CHECKPOINT_BYTES,
        local: Callable[[], Iterable[int]] | None = None,
        emitted_at: Callable[[], int] | None = None,
        wall: Callable[[], float] = time.time,
        compact_examples: bool = False,
        on_model_start: Callable[[int, Any, bool], None] | None = None,
        broadcast: bool = False,
        hold_ms: int = 0,
        incrementality: bool = True,
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
        self.max_checkpoint_bytes = max_checkpoint_bytes
        self.local = local or (lambda: range(partitions))
        self.emitted_at = emitted_at or (lambda: int(time.time() * 1000))
        self.wall = wall
        self.compact_examples = compact_examples
        self.on_model_start = on_model_start
        self.broadcast = broadcast
        self.hold_ms = hold_ms
        self.incrementality = incrementality
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
        # Replicas changed since their last checkpoint, and the checkpoints read at a start.
        self._changed: set[int] = set()
        self._resumed: dict[int, Replica | None] = {}
        # Per partition: labels decided (their seq), and the last one handed to the producer.
        self._seq: dict[int, int] = {}
        self._sent: dict[int, int] = {}
        self._resend: list[EmitLabel] = []
        self._restart: list[ConversionKey] = []
        #: Checkpoints written without their queue, for want of room (:func:`encode_replica`).
        self.queues_not_saved = 0
        # Incrementality: a replica and a queue per partition, and fits shared between them.
        self.replicas: dict[int, EstimatorReplica] = {}
        self.inc_queues: dict[int, LearningQueue] = {}
        self.inc_learned: dict[int, int] = {}
        # Newest event time each incrementality replica scored a label with a user at: such a
        # decision passed the lookup gate, so every exposure before it has been read (a
        # conversion decided without lookups, at its hold, may run ahead of the engagements).
        self.inc_decided: dict[int, int] = {}
        self._fits: dict[Any, Any] = {}

    # --- replicas ------------------------------------------------------------------------------

    def _resume(self, partition: int) -> Replica | None:
        """The partition's checkpoint, read once per start of its replica."""
        if partition not in self._resumed:
            blob = None
            if self.checkpoints is not None:
                blob = self.checkpoints.get(key_for_partition(partition, self.partitions))
            self._resumed[partition] = decode_replica(blob) if blob else None
        return self._resumed[partition]

    def model(self, partition: int) -> Any:
        """The partition's replica, resumed from its checkpoint when there is one."""
        model = self.models.get(partition)
        if model is None:
            saved = self._resume(partition)
            if saved is None:
                model = self.matcher_factory()
            else:
                model = self.matcher_factory.loads(saved.model)
                self.learned[partition] = saved.learned
                if saved.decided is not None:
                    self.decided[partition] = saved.decided
            if self.on_model_start is not None:
                self.on_model_start(partition, model, saved is not None)
            self.models[partition] = model
        return model

    def queue(self, partition: int) -> LearningQueue:
        queue = self.queues.get(partition)
        if queue is None:
            model = self.model(partition)
            apply = _json_learner(model) if self.compact_examples else model.learn_example
            queue = self.queues[partition] = LearningQueue(self.learning_delay_ms, apply)
            saved = self._resume(partition)
            for ts, key, example in (saved.queue or ()) if saved is not None else ():
                queue.push(self._entry(ts, key, example))
        return queue

    def replica(self, partition: int) -> EstimatorReplica:
        """The partition's incrementality estimator, made with its learning queue and resumed
        with both from its checkpoint (key ``key_for_partition(partition, partitions,
        "incr")``) when there is one."""
        replica = self.replicas.get(partition)
        if replica is None:
            blob = None
            if self.checkpoints is not None:
                blob = self.checkpoints.get(key_for_partition(partition, self.partitions, "incr"))
            waiting: list[Any] = []
            if blob:
                replica = EstimatorReplica.loads(blob, fits=self._fits)
                saved, decided = saved_fields(blob, "queue", "decided")
                waiting = saved or []
                if decided is not None:
                    self.inc_decided[partition] = decided
            else:
                replica = EstimatorReplica(fits=self._fits)
            self.replicas[partition] = replica
            queue = self.inc_queues[partition] = LearningQueue(
                self.learning_delay_ms,
                lambda inc: replica.learn(inc.ts, inc.entry, digest=inc.digest),
            )
            for ts, key, entry in waiting:
                queue.push(self._entry(ts, key, entry))
        return replica

    def inc_queue(self, partition: int) -> LearningQueue:
        self.replica(partition)
        return self.inc_queues[partition]

    def _learn_incremental_until(self, partition: int, ts: int) -> None:
        """The incrementality replica learns what is due by ``ts`` (checkpointed with the
        match-model replica, its queue and decision clock with it, by :meth:`checkpoint`)."""
        steps = self.inc_queue(partition).flush(ts)
        if steps:
            self.inc_learned[partition] = self.inc_learned.get(partition, 0) + steps
            self._changed.add(partition)

    def clock(self, partition: int) -> EventClock:
        """The partition's conversion clock, resumed from its last checkpoint."""
        clock = self.clocks.get(partition)
        if clock is None:
            saved = self._resume(partition)
            blob = None
            if saved is not None and saved.clock is not None:
                blob = orjson.dumps(saved.clock)
            elif self.checkpoints is not None:  # saved before replicas were saved whole
                blob = self.checkpoints.get(key_for_partition(partition, self.partitions, "clock"))
            clock = self.clocks[partition] = EventClock.loads(
                blob, max_future_ms=self.policy.max_future_ms, max_age_ms=self.policy.max_age_ms
            )
            # After a restart or a rebalance the held conversions are in the states table only,
            # and so are the labels decided after the checkpoint, which may not have gone out.
            sent = saved.sent if saved is not None else 0
            heap = self._held[partition] = []
            resend: list[EmitLabel] = []
            seq = sent
            for key, state in self.states.items():
                if partition_for(key, self.partitions) != partition:
                    continue
                if state.get("phase") == "held":
                    heap.append((state["conv"]["ts"], key))
                elif state.get("phase") in ("lookup", "probe"):
                    self._restart.append(key)
                out = state.get("sent")
                if out is not None and out["seq"] > sent:
                    resend.append(EmitLabel(out["label"], partition, out["seq"]))
                    seq = max(seq, out["seq"])
            heapq.heapify(heap)
            self._resend += sorted(resend, key=lambda c: c.seq)
            self._seq[partition] = self._sent[partition] = seq
        return clock

    def resume(self, partitions: Iterable[int]) -> list[Command]:
        """Start the replicas of ``partitions`` that are not running (a start, a rebalance),
        and return what their last owner may have left undone:

        - the labels decided after the checkpoint they resume from, which may have died unsent
          with that worker (identical to what went out, if they did go out: a duplicate the
          contract allows);
        - a new round for every conversion whose round was in flight in the saved state (as of
          the last commit, or of its last label): the lookups or probes it sent may have died
          in the producer, and the records that caused them, read again, may find their
          answers already recorded. The old round's answers are ignored.
        """
        for partition in partitions:
            self.clock(partition)
        out: list[Command] = list(self._resend)
        restart, self._resend, self._restart = self._restart, [], []
        for key in restart:
            state = self.states.get(key)
            if state is not None and state["phase"] in ("lookup", "probe"):
                out += self._start_round(key, state)
        return out

    def sent(self, partition: int, seq: int) -> None:
        """Label ``seq`` of ``partition`` (and every one before it) is in the broker: the next
        checkpoint says so, and a restart from it sends again only the labels after it."""
        if seq > self._sent.get(partition, 0):
            self._sent[partition] = seq
            self._changed.add(partition)

    def checkpoint(self, partitions: Iterable[int] | None = None) -> int:
        """Save every replica of ``partitions`` (all here by default) that changed since its
        last checkpoint: model, learning queue, decision clock and conversion clock in one
        entry, so that they resume together. Returns how many were written.

        The worker calls this at every commit, before Faust chooses the offsets to commit (and
        at a revoke), so a restarted replica resumes as of the offsets it reads from again.
        """
        if self.checkpoints is None:
            return 0
        wanted = self._changed if partitions is None else self._changed & set(partitions)
        written = 0
        for partition in sorted(wanted):
            model = self.model(partition)
            if not hasattr(model, "dumps"):
                continue
            blob, whole = encode_replica(
                model.dumps(),
                self.queue(partition).pending(),
                decided=self.decided.get(partition),
                learned=self.learned.get(partition, 0),
                clock=self.clock(partition).dumps(),
                sent=self._sent.get(partition, 0),
                limit=self.max_checkpoint_bytes,
            )
            self.queues_not_saved += not whole
            self.checkpoints[key_for_partition(partition, self.partitions)] = blob
            if partition in self.replicas:
                key = key_for_partition(partition, self.partitions, "incr")
                self.checkpoints[key] = self._estimator_checkpoint(partition)
            self._changed.discard(partition)
            written += 1
        return written

    def _estimator_checkpoint(self, partition: int) -> bytes:
        """The incrementality replica with its learning queue and decision clock; a queue too
        large for one message is left out whole (counted in ``queues_not_saved``), as the
        match model's is."""
        replica = self.replicas[partition]
        queue = self.inc_queues.get(partition)
        waiting = [[e.ts, e.key, e.example.entry] for e in queue.pending()] if queue else []
        decided = self.inc_decided.get(partition)
        blob = replica.dumps(queue=waiting, decided=decided)
        if len(blob) > self.max_checkpoint_bytes:
            self.queues_not_saved += 1
            blob = replica.dumps(queue=None, decided=decided)
        return blob

    def forget_partition(self, partition: int) -> None:
        """A partition moved away takes its replica along; it reloads if it comes back."""
        self.clocks.pop(partition, None)
        self._held.pop(partition, None)
        self.models.pop(partition, None)
        self.queues.pop(partition, None)
        self.decided.pop(partition, None)
        self.learned.pop(partition, None)
        self._resumed.pop(partition, None)
        self._changed.discard(partition)
        self._seq.pop(partition, None)
        self._sent.pop(partition, None)
        self._resend = [c for c in self._resend if c.partition != partition]
        self._restart = [k for k in self._restart if partition_for(k, self.partitions) != partition]
        self.replicas.pop(partition, None)
        self.inc_queues.pop(partition, None)
        self.inc_learned.pop(partition, None)
        self.inc_decided.pop(partition, None)

    def _learn_until(self, partition: int, ts: int) -> None:
        steps = self.queue(partition).flush(ts)
        if steps:
            self.learned[partition] = self.learned.get(partition, 0) + steps

    def _entry(self, ts: int, key: ConversionKey, example: dict[str, Any]) -> Entry:
        if example.get("t") in (EXAMPLES, ARMS):
            return Entry.make(ts, key, Incremental(ts, example, entry_digest(ts, example)))
        return (
            Entry.as_json(ts, key, example)
            if self.compact_examples
            else Entry.make(ts, key, example)
        )

    def _queue_for(self, partition: int, entry: Entry) -> LearningQueue:
        if isinstance(entry.example, Incremental):
            return self.inc_queue(partition)
        return self.queue(partition)

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
            entry = self._entry(ts, key, example)
            self._queue_for(partition, entry).push(entry)
            self._changed.add(partition)
            return
        local = sorted(set(self.local()) | {partition})
        entry = self._entry(ts, key, example)
        for target in local:
            self._queue_for(target, entry).push(entry)
        self._changed.update(local)
        if self.broadcast:
            self._outbox.append(SharedExample(ts, key, example, local))

    def entered(self, users: dict[int, dict[str, list[int]]]) -> None:
        """Users entered in campaigns (``{first_ts: {campaign: [exposed, held out]}}``, from
        the user states): arm counts for every incrementality replica, here and elsewhere,
        whether or not learning is pooled (they are counts of the whole traffic)."""
        if not self.incrementality:
            return
        local = sorted(self.local())
        for ts, entry in arms_entries(users):
            queued = self._entry(ts, ARMS, entry)
            for target in local:
                self.inc_queue(target).push(queued)
            if self.broadcast:
                self._outbox.append(SharedExample(ts, ARMS, entry, local))

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

        A replica that queued new examples learns what is already due by its newest decision
        (what its next decision would learn first anyway), so that a replica between decisions
        does not sit on a growing queue; one that has decided nothing yet goes by the others
        here. Only a queue that grew is flushed: a flush learns past the next decision when
        decisions come out of event-time order, so every needless one (a chunk of arm counts,
        which the users agents send with every batch, or of examples queued already) would make
        confidences depend more on when cs-learn was read.
        """
        grew: set[bool] = set()
        for entry, local in entries:
            if not (own and partition in local):
                self._queue_for(partition, entry).push(entry)
                grew.add(isinstance(entry.example, Incremental))
        if not grew:
            return
        self._changed.add(partition)
        clock = self.decided.get(partition, max(self.decided.values(), default=None))
        if False in grew and clock is not None:
            self._learn_until(partition, clock)
        clock = self.inc_decided.get(partition, max(self.inc_decided.values(), default=None))
        if True in grew and clock is not None:
            self._learn_incremental_until(partition, clock)

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
        self._changed.add(partition)
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

    def _incremental(
        self,
        partition: int,
        key: ConversionKey,
        state: ConversionState,
        label: dict[str, Any],
        probes: dict[str, Any],
    ) -> dict[str, Any]:
        """The label with its incremental fields, scored by the partition's replica as of the
        learning horizon; a key's first label with a user shares its conversion's examples."""
        user, ts = label["user_id"], label["ts"]
        answer = probes.get(user) if user is not None else None
        replica = self.replica(partition)
        as_of = ts - self.learning_delay_ms
        prob: float | None = None
        weight: float | None = 0.0
        if user is not None:
            clock = self.inc_decided[partition] = max(self.inc_decided.get(partition, ts), ts)
            self._learn_incremental_until(partition, clock)
            ready = replica.weights(as_of) is not None

            def probability(x: dict[str, float]) -> float | None:
                return replica.probability(x, as_of=as_of)

            prob, weight = score_credits(
                probability if ready else None, answer, ts, label["credits"]
            )
        if user is not None and not state.get("incremental"):
            state["incremental"] = True
            examples = conversion_examples(answer, ts)
            if examples:
                entry = {"t": EXAMPLES, "x": [[sorted(x), holdout] for x, holdout in examples]}
                self._share(partition, ts, key, entry)
        return {**label, "incremental_probability": prob, "incremental_weight": weight}

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
        self._changed.add(part)
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
        if emitted is not None and self.incrementality:
            emitted = self._incremental(part, key, state, emitted, probes)
        seq = 0
        if emitted is not None:
            self.clock(part)  # numbers go on from the partition's checkpoint
            seq = self._seq[part] = self._seq.get(part, 0) + 1
            # The label as sent, kept until the next one: sent again after a restart if it was
            # decided after the checkpoint the partition resumes from.
            state["sent"] = {"seq": seq, "label": emitted}
        again = state.pop("again", False)
        self.states[key] = state
        if state["label"] is not None:
            self.quality.observe(conv, state["label"])
        out: list[Command] = [Resolved(key, part)]
        if dropped:
            out.append(Dropped(key, tuple(dropped)))
        if emitted is not None:
            out.append(EmitLabel(emitted, part, seq))
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
