"""Conversions agent (key conversion key): Kafka records in, the lifecycle's commands out.

It reads the advertisers' conversions, delayed feedback, the identifiers and users agents'
answers (``cs-answer``) and the other workers' learning examples (``cs-learn``), hands each to
:class:`convstream.core.lifecycle.Lifecycle` as a typed event, and carries out the commands it
returns: messages to ``cs-ident`` and ``cs-probe``, labels, dead letters, metrics. Every rule of
a conversion's life is in the lifecycle, which the offline engine drives too; this module only
moves records. Conversion states live in the changelogged ``conversion-state`` table, the match
model replicas' checkpoints in ``match-models``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, defaultdict
from typing import Any

import orjson
from faust.types import TP

from convstream.core import messages
from convstream.core.learning_queue import Entry
from convstream.core.lifecycle import (
    Admitted,
    Command,
    Dropped,
    EmitLabel,
    Lifecycle,
    Reject,
    Resolved,
)
from convstream.core.matching.model import MatchModel
from convstream.core.records import Invalid, parse_conversions, parse_feedback
from convstream.core.settings_file import AttributionConfigWatcher
from convstream.stream import metrics, quality, routing
from convstream.stream.writeback import WriteBack

log = logging.getLogger(__name__)

DEDUPE_METRIC = {"duplicate": "merged", "correction": "correction", "late": "late_dropped"}
#: Learning examples per cs-learn message: at most about 4 KB each (430 B on average), well
#: below Kafka's 1 MB default.
EXAMPLES_PER_MESSAGE = 100
#: cs-learn chunks decoded once per worker: every partition here reads the same chunk.
DECODED_CHUNKS = 64


def _model_started(partition: int, model: MatchModel, resumed: bool) -> None:
    if resumed:
        log.warning(
            "match model of partition %d resumed from its checkpoint (%d pairs learned)",
            partition,
            model.stats().get("n_learned", 0),
        )
    else:
        log.warning("match model of partition %d starts untrained", partition)


class ConversionsAdapter:
    """The agent's body: one record in, its lifecycle event, the commands carried out.

    ``rt`` is the :class:`convstream.stream.app.Runtime` (sends, tables, dead letters); tests
    drive this class with a fake one.
    """

    def __init__(self, rt: Any, lifecycle: Lifecycle | None = None) -> None:
        s = rt.settings
        self.rt = rt
        watcher = AttributionConfigWatcher(s.attribution_config) if s.attribution_config else None
        self.lifecycle = lifecycle or Lifecycle(
            rt.tables["conversions"],
            MatchModel,
            partitions=s.partitions,
            policy=s.lifecycle_policy(),
            config=watcher.current if watcher else None,
            max_candidates=s.max_candidates,
            learning_delay_ms=s.learning_delay_ms,
            checkpoints=rt.tables["models"],
            local=lambda: rt.active_partitions("conversions"),
            compact_examples=True,
            broadcast=True,
            on_model_start=_model_started,
            hold_ms=s.allowed_lateness_ms,
        )
        self.arrivals: dict[str, float] = {}
        # Per conversions partition: the offset of the last record read, and when (wall time).
        self.read: dict[int, tuple[int, float]] = {}
        # Tells this worker's own cs-learn messages from the others'.
        self.worker_id = uuid.uuid4().hex
        self.decoded: OrderedDict[bytes, tuple[str, list[tuple[Entry, list[int]]]]] = OrderedDict()
        # Labels decided (True) or to send again after a restart (False), sent by send_labels.
        self.unsent: list[tuple[EmitLabel, bool]] = []

    async def on_batch(self, events: list[Any]) -> None:
        await self.resume()
        counts: dict[str, int] = defaultdict(int)
        for event in events:
            topic = self.rt.logical_name(event.message.topic)
            if topic == "cs-answer":
                await self.on_answer(event)
            elif topic == "cs-learn":
                self.on_examples(event.message.partition, event.message.value)
            else:
                if routing.origin(event) is None:  # a forwarded record was counted where read
                    counts[topic] += 1
                if topic == "conversions":
                    self.read[event.message.partition] = (event.message.offset, time.monotonic())
                    await self.on_conversion(event)
                else:
                    await self.on_feedback(event)
        for topic, n in counts.items():
            metrics.count_event_in(topic, n)
        await self.send_examples()
        await self.send_labels()

    async def resume(self) -> None:
        """Start the replicas of partitions new here, and take up what their last owner may
        have left undone (:meth:`Lifecycle.resume`): its labels decided after the checkpoint
        go out again, its rounds in flight start again."""
        commands = self.lifecycle.resume(sorted(self.rt.active_partitions("conversions")))
        if not commands:
            return
        again = [c for c in commands if isinstance(c, EmitLabel)]
        rounds = {
            c.conversion_key for c in commands if isinstance(c, messages.Lookup | messages.Probe)
        }
        log.warning(
            "partitions taken up: %d labels decided after their checkpoint sent again, "
            "%d rounds in flight started again",
            len(again),
            len(rounds),
        )
        self.unsent += [(command, False) for command in again]
        await self.execute([c for c in commands if not isinstance(c, EmitLabel)])

    async def send_labels(self) -> None:
        """Send the labels decided since the last call, once the conversion states that record
        them are in the broker (a producer flush): a label must never be out while the state
        that says it went out could still be lost, or a restart would decide the conversion
        again, with another model, under the same revision. A state saved whose label died
        unsent in the producer is sent again by :meth:`resume`."""
        if not self.unsent:
            return
        states = self.rt.tables["conversions"]
        if isinstance(states, WriteBack):  # coalesced: these states may not wait for a commit
            states.flush({command.label["conversion_key"] for command, _ in self.unsent})
        await self.rt.flush()
        unsent, self.unsent = self.unsent, []
        for command, decided in unsent:
            key = command.label["conversion_key"]
            delivery = await self.rt.send("labels", key, command.label, partition=command.partition)
            self._when_delivered(delivery, command.partition, command.seq)
            if decided:
                metrics.observe_label(command.label, self.arrivals.pop(key, time.time()))

    def _when_delivered(self, delivery: Any, partition: int, seq: int) -> None:
        """Tell the lifecycle label ``seq`` is out once the broker has it (a label still in the
        producer at a kill must be sent again, so the checkpoint may not count it before)."""
        if not isinstance(delivery, asyncio.Future):  # a runtime that delivers as it sends
            self.lifecycle.sent(partition, seq)
            return

        def done(future: asyncio.Future) -> None:
            if not future.cancelled() and future.exception() is None:
                self.lifecycle.sent(partition, seq)

        delivery.add_done_callback(done)

    async def on_conversion(self, event: Any) -> None:
        """One record: a conversion in any accepted shape, or a batch envelope of several
        (each event of a batch is admitted or dead-lettered on its own)."""
        try:
            items = parse_conversions(event.message.value)
        except Invalid as exc:
            await self.rt.dead_letter(event, exc.reason, str(exc))
            return
        for item in items:
            if isinstance(item, Invalid):
                await self.rt.dead_letter(event, item.reason, str(item))
                continue
            metrics.count_identifier_rejected(item.rejected)
            if not self.lifecycle.config().is_conversion(item.advertiser_id, item.event_name):
                # A site event: no label. Counted until the identity graph reads it (phase 2).
                metrics.count_site_event(item.event_name)
                continue
            right = routing.target(event, item.key, self.rt.settings.partitions)
            if right is not None:
                # Produced by another partitioner, or one event of a batch: forwarded as its
                # own record, hashed (its raw identifiers never leave this worker).
                value = orjson.dumps(item.as_event())
                await routing.forward(self.rt, event, "conversions", item.key, right, value=value)
                continue
            commands = self.lifecycle.conversion(
                item.as_dict(), event.message.partition, broker_ts=routing.broker_ms(event)
            )
            await self.execute(commands, event)

    async def on_feedback(self, event: Any) -> None:
        try:
            truth = parse_feedback(event.message.value)
        except Invalid as exc:
            await self.rt.dead_letter(event, exc.reason, str(exc))
            return
        if await routing.reroute(self.rt, event, "feedback", truth.key):
            return
        await self.execute(self.lifecycle.feedback(truth.key, truth.user_id, truth.ts), event)

    async def on_answer(self, event: Any) -> None:
        message = messages.decode(event.message.value)
        if isinstance(message, messages.LookupAnswer):
            commands = self.lifecycle.answer(message)
        elif isinstance(message, messages.ProbeAnswer):
            commands = self.lifecycle.probed(message)
        else:
            raise TypeError(f"{type(message).__name__} on cs-answer")
        await self.execute(commands, event)

    def on_examples(self, partition: int, raw: bytes) -> None:
        """A cs-learn chunk, decoded once for every partition of this worker that reads it."""
        chunk = self.decoded.get(raw)
        if chunk is None:
            message = messages.decode(raw)
            assert isinstance(message, messages.Examples)
            chunk = self.decoded[raw] = (message.worker, self.lifecycle.entries(message.examples))
            if len(self.decoded) > DECODED_CHUNKS:
                self.decoded.popitem(last=False)
        sender, entries = chunk
        self.lifecycle.examples(partition, entries, own=sender == self.worker_id)

    async def send_examples(self) -> None:
        """Every replica learns every example: one copy per partition of cs-learn."""
        shared = self.lifecycle.take_outbox()
        for i in range(0, len(shared), EXAMPLES_PER_MESSAGE):
            chunk = messages.Examples(self.worker_id, shared[i : i + EXAMPLES_PER_MESSAGE])
            payload = messages.encode(chunk)
            for q in range(self.rt.settings.partitions):
                await self.rt.send("cs-learn", None, payload, q)

    def checkpoint(self, partitions: Any = None) -> int:
        """Save the replicas of this worker's conversions partitions (or of ``partitions``) that
        changed since their last checkpoint; called at every commit, before Faust chooses the
        offsets (``convstream/stream/writeback.py``), so that a restart resumes each replica as
        of the offsets it reads from again."""
        owned = self.rt.active_partitions("conversions") if partitions is None else partitions
        before = self.lifecycle.queues_not_saved
        written = self.lifecycle.checkpoint(owned)
        unsaved = self.lifecycle.queues_not_saved - before
        if unsaved:
            metrics.count_queues_not_saved(unsaved)
            log.warning(
                "%d replica checkpoints written without their learning queue (over %d bytes): "
                "a restart before the next one loses those examples",
                unsaved,
                self.lifecycle.max_checkpoint_bytes,
            )
        return written

    async def execute(self, commands: list[Command], event: Any = None) -> None:
        for command in commands:
            if isinstance(command, Admitted):
                if command.outcome in DEDUPE_METRIC:
                    metrics.count_dedupe(DEDUPE_METRIC[command.outcome])
                if command.outcome in ("new", "correction"):
                    self.arrivals[command.conversion_key] = time.time()
            elif isinstance(command, Reject):
                await self.rt.dead_letter(event, command.reason, command.detail)
            elif isinstance(command, Dropped):
                metrics.count_identifier_rejected(command.rejections)
            elif isinstance(command, EmitLabel):
                self.unsent.append((command, True))
            elif isinstance(command, Resolved):
                stats = self.lifecycle.model(command.partition).stats()
                metrics.set_model_quality(
                    auc=stats.get("auc"), logloss=stats.get("log_loss"), ece=stats.get("ece")
                )
            else:
                topic = messages.TOPIC[type(command)]
                await self.rt.send_keyed(topic, command.route, messages.encode(command))

    async def release_idle(self, highwater: Any, position: Any, since: float) -> None:
        """Start the held conversions of every partition whose input is idle: read to its high
        watermark (``highwater(partition)``), nothing new for ``hold_idle_s``.

        A partition with nothing read since ``since`` (monotonic: the start, a rebalance) is
        idle when the consumer's fetch position (``await position(partition)``) is at the high
        watermark: the worker before this one read everything, and held conversions of it wait
        in the states table (after a restart, or a rebalance that brought the partition here).
        """
        now = time.monotonic()
        idle_s = self.rt.settings.hold_idle_s
        for partition in sorted(self.rt.active_partitions("conversions")):
            if not self.lifecycle.held(partition) and partition in self.lifecycle.clocks:
                continue
            end = highwater(partition)
            if end is None:
                continue
            if partition in self.read:
                offset, at = self.read[partition]
                idle = offset + 1 >= end and now - at >= idle_s
            else:
                fetched = await position(partition)
                idle = fetched is not None and fetched >= end and now - since >= idle_s
            if idle:
                await self.execute(self.lifecycle.release_idle(partition))
        await self.send_labels()

    async def expire_and_redrive(self, rebalanced_at: float) -> None:
        """Drop states past their event-time horizons, and start again the rounds a rebalance
        may have cut (:meth:`Lifecycle.redrive`)."""
        active = self.rt.active_partitions("conversions")
        self.lifecycle.expire(active)
        commands = self.lifecycle.redrive(
            active,
            since=rebalanced_at,
            now=time.time(),
            after_s=self.rt.settings.redrive_after_s,
        )
        for _ in {c.conversion_key for c in commands if hasattr(c, "conversion_key")}:
            log.warning("conversion round cut by a rebalance: started again")
            metrics.count_redrive()
        await self.execute(commands)
        await self.send_examples()
        await self.send_labels()
        metrics.set_table_entries("conversion-state", len(self.lifecycle.states))


def register(rt: Any, channel: Any) -> ConversionsAdapter:
    adapter = ConversionsAdapter(rt)

    @rt.app.on_partitions_revoked.connect
    async def _forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        gone = {tp.partition for tp in revoked if tp.topic == rt.settings.topic("conversions")}
        # Faust committed (and so checkpointed) before this signal; what its timers did since
        # goes to the partition's next owner too, at once.
        if adapter.checkpoint(gone) and isinstance(rt.tables["models"], WriteBack):
            rt.tables["models"].flush()
        for partition in gone:
            adapter.lifecycle.forget_partition(partition)

    @rt.app.agent(channel, name="conversions")
    async def conversions_agent(stream: Any) -> None:
        async for events in stream.take_events(rt.settings.batch_size, rt.settings.batch_within_s):
            metrics.observe_batch("conversions", len(events))
            await adapter.on_batch(events)

    @rt.app.timer(interval=10.0)
    async def publish_event_quality() -> None:
        quality.publish(adapter.lifecycle.quality)

    rebalanced_at = [time.time()]
    assigned_at = [time.monotonic()]

    @rt.app.on_rebalance_complete.connect
    async def _rebalanced(sender: Any, **kwargs: Any) -> None:
        rebalanced_at[0] = time.time()
        assigned_at[0] = time.monotonic()

    @rt.app.timer(interval=5.0)
    async def expire_states() -> None:
        await adapter.expire_and_redrive(rebalanced_at[0])

    def highwater(partition: int) -> int | None:
        try:
            return rt.app.consumer.highwater(TP(rt.settings.topic("conversions"), partition))
        except Exception:  # noqa: BLE001 - not assigned (yet) or consumer restarting
            return None

    async def position(partition: int) -> int | None:
        try:
            return await rt.app.consumer.position(TP(rt.settings.topic("conversions"), partition))
        except Exception:  # noqa: BLE001 - not assigned (yet) or consumer restarting
            return None

    @rt.app.timer(interval=1.0)
    async def release_idle() -> None:
        await adapter.release_idle(highwater, position, assigned_at[0])

    return adapter
