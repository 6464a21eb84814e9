"""Conversions agent (key conversion key): dedupe, lookups, probes, match, attribute, label.

It consumes the advertisers' conversions, delayed feedback, and the answers of the identifiers
and users agents; the per-key state machine is :mod:`convstream.core.coordinator`. One match model
replica per conversions partition, checkpointed to the changelogged ``match-models`` table.

Learning is pooled: every learning example a partition makes (self-supervised or feedback) is
sent to every partition of ``cs-learn``, and each replica learns all of them in event-time
order, ``learning_delay_ms`` behind its decisions. So every replica learns from all the traffic,
however many partitions split it (one replica learning from 1/16 of it calibrates worse), and
all replicas learn the same examples in the same order.

A decision sends its identity links (an email, phone or external id tied to the matched user),
then tells each of those keys it carried that it is decided (``t:"d"``): a later conversion's
lookup of the same key waits for that (:mod:`convstream.core.lookup_gate`), so it finds the link
even
when a replay parks both at once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict, defaultdict
from functools import partial
from typing import Any

import orjson

from convstream.core import coordinator
from convstream.core.attribution import AttributionConfig
from convstream.core.identity import conversion_identifiers
from convstream.core.learning_queue import Entry, LearningQueue
from convstream.core.matching.model import MatchModel
from convstream.core.partitioning import partition_for
from convstream.core.quality import QualityTracker
from convstream.core.resolve import LINKED_KINDS, identity_links, resolve, select_probe_candidates
from convstream.core.settings_file import AttributionConfigWatcher
from convstream.stream import metrics, quality
from convstream.stream.records import Invalid, parse_conversion, parse_feedback

log = logging.getLogger(__name__)

DEDUPE_METRIC = {"duplicate": "merged", "correction": "correction", "late": "late_dropped"}
#: Learning examples per cs-learn message: at most about 4 KB each (430 B on average), well
#: below Kafka's 1 MB default.
EXAMPLES_PER_MESSAGE = 100
DECODED_CHUNKS = 64


def key_for_partition(partition: int, partitions: int) -> str:
    """A table key that Kafka's partitioner sends to ``partition``: where its model lives.

    >>> partition_for(key_for_partition(3, 8), 8)
    3
    """
    i = 0
    while partition_for(f"model-{partition}-{i}", partitions) != partition:
        i += 1
    return f"model-{partition}-{i}"


def register(rt: Any, channel: Any) -> None:
    s = rt.settings
    states = rt.tables["conversions"]
    checkpoints = rt.tables["models"]
    policy = coordinator.Policy(
        dedupe_window_ms=s.dedupe_window_ms,
        max_age_ms=s.max_conversion_age_ms,
        max_future_ms=s.max_future_ms,
        feedback_horizon_ms=s.feedback_horizon_ms,
    )
    watcher = AttributionConfigWatcher(s.attribution_config) if s.attribution_config else None
    default_config = AttributionConfig()
    clocks: dict[int, int] = {}
    models: dict[int, MatchModel] = {}
    learned: dict[int, int] = defaultdict(int)
    queues: dict[int, LearningQueue] = {}
    arrivals: dict[str, float] = {}
    event_quality = QualityTracker()
    # Newest event time each replica decided at: how far its learning may go.
    decided: dict[int, int] = {}
    # [ts, conversion key, example, partitions queued here] made since the last send.
    outbox: list[list[Any]] = []

    def model_for(partition: int) -> MatchModel:
        model = models.get(partition)
        if model is None:
            blob = checkpoints.get(key_for_partition(partition, s.partitions))
            model = MatchModel.loads(blob) if blob else MatchModel()
            if blob:
                log.warning(
                    "match model of partition %d resumed from its checkpoint (%d pairs learned)",
                    partition,
                    model.stats().get("n_learned", 0),
                )
            else:
                log.warning("match model of partition %d starts untrained", partition)
            models[partition] = model
        return model

    def queue_for(partition: int) -> LearningQueue:
        """The examples waiting for the partition's replica, learned as JSON (``_learn``)."""
        queue = queues.get(partition)
        if queue is None:
            queue = queues[partition] = LearningQueue(
                s.learning_delay_ms, partial(_learn, model_for(partition))
            )
        return queue

    @rt.app.on_partitions_revoked.connect
    async def _forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        """A partition that moves away takes its model with it; reload it if it comes back."""
        for tp in revoked:
            if tp.topic == s.topic("conversions"):
                models.pop(tp.partition, None)
                queues.pop(tp.partition, None)
                decided.pop(tp.partition, None)

    def checkpoint(partition: int, steps: int) -> None:
        before = learned[partition] // s.checkpoint_every
        learned[partition] += steps
        if learned[partition] // s.checkpoint_every > before:
            checkpoints[key_for_partition(partition, s.partitions)] = models[partition].dumps()

    async def on_conversion(event: Any) -> None:
        try:
            copy = parse_conversion(event.message.value)
        except Invalid as exc:
            await rt.dead_letter(event, exc.reason, str(exc))
            return
        partition = event.message.partition
        key = copy.key
        state, outcome = coordinator.admit(
            states.get(key), copy.as_dict(), clock_ts=clocks.get(partition), policy=policy
        )
        if outcome in ("too_old", "future"):
            await rt.dead_letter(event, "too_old" if outcome == "too_old" else "future_ts")
            return
        clocks[partition] = max(clocks.get(partition, copy.ts), copy.ts)
        if outcome in DEDUPE_METRIC:
            metrics.count_dedupe(DEDUPE_METRIC[outcome])
        if outcome in ("new", "correction"):
            arrivals[key] = time.time()
            await start_round(key, state)
        elif outcome == "duplicate":
            states[key] = state
            if state["label"] is not None:
                event_quality.observe(state["conv"], state["label"])

    async def start_round(key: str, state: dict[str, Any]) -> None:
        conv = state["conv"]
        identifiers = conversion_identifiers(conv["advertiser_id"], conv["user_data"])
        state, lookups = coordinator.start_round(state, identifiers)
        state["round_at"] = time.time()  # wall time, for redrive() only: never for event time
        states[key] = state
        for ident in lookups:
            await rt.send_keyed(
                "cs-ident",
                ident,
                {"t": "l", "ck": key, "r": state["round"], "k": ident, "ts": conv["ts"]},
            )
        if not lookups:
            await probe_or_finish(key, state)

    async def probe_or_finish(key: str, state: dict[str, Any]) -> None:
        conv = state["conv"]
        targets = coordinator.begin_probes(
            state, select_probe_candidates(conv, state["answers"], s.max_candidates)
        )
        states[key] = state
        for user_id in targets:
            await rt.send_keyed(
                "cs-probe",
                user_id,
                {
                    "ck": key,
                    "r": state["round"],
                    "u": user_id,
                    "adv": conv["advertiser_id"],
                    "ts": conv["ts"],
                },
            )
        if not targets:
            await finish(key, state)

    async def finish(key: str, state: dict[str, Any]) -> None:
        partition = partition_for(key, s.partitions)
        model = model_for(partition)
        conv = state["conv"]
        queue = queue_for(partition)
        decided[partition] = max(decided.get(partition, conv["ts"]), conv["ts"])
        checkpoint(partition, queue.flush(conv["ts"]))
        config = watcher.current() if watcher else default_config
        label, decision = resolve(
            conv,
            state["answers"],
            state["probes"],
            model,
            config.for_advertiser(conv["advertiser_id"]),
            revision=0,
            emitted_at=_now_ms(),
        )
        answers, probes = state["answers"], state["probes"]
        share(conv["ts"], key, model.self_supervised_example(conv, answers, probes, decision))
        if state.get("feedback") is not None and not state["feedback"].get("learned"):
            truth = state["feedback"]
            truth["learned"] = True
            share(truth["ts"], key, model.feedback_example(decision.snapshot, truth["user_id"]))
        out = coordinator.settle(state, label, decision.snapshot)
        states[key] = state
        event_quality.observe(conv, state["label"])
        if out is not None:
            await rt.send("labels", key, out, partition=partition)
            metrics.observe_label(out, arrivals.pop(key, time.time()))
        # Every deterministic decision refreshes its links, as in convstream/core/engine.py,
        # whether or
        # not the label changed: their recency is a feature of later matches on those keys.
        for link_key, user in identity_links(conv, decision):
            await send_identity_link(link_key, user, conv["ts"])
        identifiers = conversion_identifiers(conv["advertiser_id"], conv["user_data"])
        for kind in LINKED_KINDS:
            if kind in identifiers:  # after its link: the key's next lookup may go out
                await rt.send_keyed(
                    "cs-ident", identifiers[kind], {"t": "d", "k": identifiers[kind], "ck": key}
                )
        stats = model.stats()
        metrics.set_model_quality(
            auc=stats.get("auc"), logloss=stats.get("log_loss"), ece=stats.get("ece")
        )

    async def send_identity_link(key: str, user_id: str, ts: int) -> None:
        """Teach the index whose external id, email or phone this is (see ``identity_links``)."""
        link = {"k": key, "u": user_id, "ts": ts}
        await rt.send_keyed("cs-ident", key, {"t": "x", **link})
        # The user's state remembers the link, so a deletion can reach this entry too, and
        # counts a linked email or phone as the user's own.
        await rt.send_keyed("cs-probe", user_id, {"t": "k", **link})

    async def on_answer(msg: dict[str, Any]) -> None:
        key = msg["ck"]
        state = states.get(key)
        if state is None:
            return
        if msg["t"] == "a":
            if coordinator.on_answer(state, msg["r"], msg["a"]["key"], msg["a"]):
                await probe_or_finish(key, state)
            else:
                states[key] = state
        elif coordinator.on_probe(state, msg["r"], msg["u"], msg["a"]):
            await finish(key, state)
        else:
            states[key] = state

    async def on_feedback(event: Any) -> None:
        try:
            truth = parse_feedback(event.message.value)
        except Invalid as exc:
            await rt.dead_letter(event, exc.reason, str(exc))
            return
        state = states.get(truth.key)
        if state is None:
            states[truth.key] = coordinator.feedback_first(truth.user_id, truth.ts)
            return
        if state.get("snapshot") is not None and state["phase"] == "done":
            example = MatchModel.feedback_example(state["snapshot"], truth.user_id)
            share(truth.ts, truth.key, example)
        else:
            state["feedback"] = {"user_id": truth.user_id, "ts": truth.ts}
            states[truth.key] = state

    def share(ts: int, key: str, example: dict[str, Any] | None) -> None:
        """Queue an example now for the replicas on this worker, and via cs-learn for the rest.

        The replicas here do not wait for the round trip: during a replay at full speed, one
        burst of decisions can span hours of event time, and replicas that got the examples
        back only after the burst learned hours late (measured: worse labels, and labels that
        differed more between one worker and three).
        """
        if example is None:
            return
        local = sorted(rt.active_partitions("conversions") | {partition_for(key, s.partitions)})
        entry = Entry.as_json(ts, key, example)
        for partition in local:
            queue_for(partition).push(entry)
        outbox.append([ts, key, example, local])

    async def send_examples() -> None:
        """Every replica learns every example: one copy per partition of cs-learn."""
        while outbox:
            chunk = outbox[:EXAMPLES_PER_MESSAGE]
            del outbox[:EXAMPLES_PER_MESSAGE]
            payload = orjson.dumps({"w": worker_id, "e": chunk})
            for q in range(s.partitions):
                await rt.send("cs-learn", None, payload, q)

    # The same chunk reaches every partition: decoded once per worker, each of its examples is
    # one Entry (the example as JSON: 430 bytes on average against 1.8 KB as Python objects)
    # that every replica here queues while it waits out the learning delay (an hour of live
    # traffic).
    decoded: OrderedDict[bytes, tuple[str, list[tuple[Entry, set[int]]]]] = OrderedDict()
    # Tells this worker's own cs-learn messages from the others'.
    worker_id = uuid.uuid4().hex

    def examples_of(raw: bytes) -> tuple[str, list[tuple[Entry, set[int]]]]:
        chunk = decoded.get(raw)
        if chunk is None:
            msg = orjson.loads(raw)
            examples = [(Entry.as_json(ts, key, ex), set(local)) for ts, key, ex, local in msg["e"]]
            chunk = decoded[raw] = (msg["w"], examples)
            if len(decoded) > DECODED_CHUNKS:
                decoded.popitem(last=False)
        return chunk

    def on_examples(partition: int, raw: bytes) -> None:
        queue = queue_for(partition)
        sender, examples = examples_of(raw)
        for entry, local in examples:
            if sender != worker_id or partition not in local:  # else queued when it was made
                queue.push(entry)
        # Learn what is already due by the partition's newest decision (what its next decision
        # would learn first anyway), so that a replica between decisions does not sit on a
        # growing queue; one that has decided nothing yet goes by the others on this worker.
        clock = decided.get(partition, max(decided.values(), default=None))
        if clock is not None:
            checkpoint(partition, queue.flush(clock))

    @rt.app.agent(channel, name="conversions")
    async def conversions_agent(stream: Any) -> None:
        async for events in stream.take_events(s.batch_size, s.batch_within_s):
            counts: dict[str, int] = defaultdict(int)
            for event in events:
                topic = rt.logical_name(event.message.topic)
                if topic == "cs-answer":
                    await on_answer(orjson.loads(event.message.value))
                    continue
                if topic == "cs-learn":
                    on_examples(event.message.partition, event.message.value)
                    continue
                counts[topic] += 1
                if topic == "conversions":
                    await on_conversion(event)
                else:
                    await on_feedback(event)
            for topic, n in counts.items():
                metrics.count_event_in(topic, n)
            await send_examples()

    @rt.app.timer(interval=10.0)
    async def publish_event_quality() -> None:
        quality.publish(event_quality)

    rebalanced_at = [time.time()]

    @rt.app.on_rebalance_complete.connect
    async def _rebalanced(sender: Any, **kwargs: Any) -> None:
        rebalanced_at[0] = time.time()

    @rt.app.timer(interval=5.0)
    async def expire_states() -> None:
        """Drop conversion state past the dedupe and feedback horizons (event time), and start
        again the rounds that a rebalance may have cut (see :func:`redrive`)."""
        active = rt.active_partitions("conversions")
        stale, cut = [], []
        for key, state in states.items():
            partition = partition_for(key, s.partitions)
            if partition not in active:
                continue
            clock = clocks.get(partition)
            if clock is not None and coordinator.expired(state, clock, policy):
                stale.append(key)
            elif redrive(state):
                cut.append(key)
        for key in stale:
            del states[key]
        for key in cut:
            log.warning("conversion round cut by a rebalance: started again")
            metrics.count_redrive()
            await start_round(key, states[key])
        await send_examples()
        metrics.set_table_entries("conversion-state", len(states))

    def redrive(state: dict[str, Any]) -> bool:
        """A round in flight since before the last rebalance, and for ``redrive_after_s`` after
        it. Lookups are parked in the memory of the identifiers agent; a worker that dies or
        loses the partition after committing their offsets takes them along, and nothing else
        would ever answer. A needless restart costs messages only: the old round's answers are
        ignored."""
        if state["phase"] not in ("lookup", "probe"):
            return False
        since = rebalanced_at[0]
        return state.get("round_at", 0) < since and time.time() - since >= s.redrive_after_s


def _learn(model: MatchModel, example: bytes) -> None:
    model.learn_example(orjson.loads(example))


def _now_ms() -> int:
    return int(time.time() * 1000)
