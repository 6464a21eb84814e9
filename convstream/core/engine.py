"""The offline engine: a replay file in, labels out, with no broker.

It drives the same :class:`~convstream.core.lifecycle.Lifecycle` as the worker's conversions
agent and answers its commands from memory, where the worker sends them over Kafka. Lines are
read in file (arrival) order. Engagement events feed the identifier index and the user states,
as the users and identifiers agents do; a conversion's lookups wait until engagements have been
read past its event time plus the allowed lateness (the watermark), as they wait in the
identifiers agent, and are then answered in event-time order; probes, links and decisions take
effect at once (a replay read sequentially decides one conversion at a time, which is the order
the worker's ordered-key turns enforce). Impressions and ghost impressions go into the user
states as units (:mod:`convstream.core.exposures`), as the users agent keeps them; probe
answers carry them, and the lifecycle's incrementality replicas score each label with them
(``incremental_probability``, ``incremental_weight``), as in the worker. ``convstream offline``
writes its labels;
``convstream evaluate --replay`` runs it for the model and the baselines side by side.

>>> from convstream.core.matching.baseline import RuleBaseline
>>> T = 1_767_571_200_000
>>> lines = [
...     {"topic": "clicks", "value": {"event_id": "k1", "click_id": "k1", "ts": T,
...      "user_id": "u1", "advertiser_id": "a", "campaign_id": "c", "ad_id": "ad",
...      "ip": "10.0.0.1", "user_agent": "UA", "device_id": None}},
...     {"topic": "conversions", "value": {"event_id": "o1", "event_name": "Purchase",
...      "source": "pixel", "ts": T + 60_000, "advertiser_id": "a", "value": 5.0,
...      "currency": "USD", "user_data": {"click_id": "k1"}}}]
>>> [(x["user_id"], x["credits"][0]["engagement_id"]) for x in run_offline(lines, RuleBaseline)]
[('u1', 'k1')]
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from convstream.core.attribution import AttributionConfig
from convstream.core.coordinator import ConversionState, Policy
from convstream.core.engagements import (
    OWN_KINDS,
    add_engagements,
    engagement_row,
    note_link,
    note_own_identifiers,
    probe,
)
from convstream.core.exposures import note_exposures
from convstream.core.identity import engagement_identifiers, sighting_families
from convstream.core.index import DEFAULT_MAX_USERS, add_sighting, lookup
from convstream.core.learning_queue import LearningQueue
from convstream.core.lifecycle import Command, EmitLabel, Lifecycle
from convstream.core.lift_replay import exposure_of
from convstream.core.messages import IndexLink, Lookup, LookupAnswer, Probe, ProbeAnswer, UserLink
from convstream.core.partitioning import partition_for
from convstream.core.records import (
    Conversion,
    IdentitySighting,
    Invalid,
    parse_click,
    parse_conversions,
    parse_feedback,
    parse_identity,
    parse_impression,
)
from convstream.core.records import Engagement as RecordEngagement
from convstream.core.units import DAY_MS, HOUR_MS

PARSERS: dict[str, Callable[[Any], RecordEngagement | IdentitySighting]] = {
    "impressions": parse_impression,
    "clicks": parse_click,
    "identity": parse_identity,
}


class OfflineEngine:
    """State of one offline run: ``feed`` lines in arrival order, then ``finish``.

    ``matchers`` holds the per-partition models (for their ``stats()``) after the run;
    ``incrementality=False`` gives labels without the incremental fields.
    """

    def __init__(
        self,
        matcher_factory: Callable[[], Any],
        *,
        partitions: int = 4,
        attribution_config: AttributionConfig | None = None,
        lookback_ms: int = 30 * DAY_MS,
        top_k: int = 8,
        max_candidates: int = 12,
        max_users: int = DEFAULT_MAX_USERS,
        allowed_lateness_ms: int = 300_000,
        policy: Policy | None = None,
        learning_delay_ms: int = HOUR_MS,
        pooled_learning: bool = True,
        incrementality: bool = True,
    ) -> None:
        self.partitions = partitions
        self.config = attribution_config or AttributionConfig()
        self.lookback_ms = lookback_ms
        self.top_k = top_k
        self.max_users = max_users
        self.lateness_ms = allowed_lateness_ms
        self.retention_ms = self.config.max_window_ms()
        self.index: dict[str, dict] = {}
        self.users: dict[str, dict] = {}
        self.states: dict[str, ConversionState] = {}
        self.watermark = 0
        self.lifecycle = Lifecycle(
            self.states,
            matcher_factory,
            partitions=partitions,
            policy=policy or Policy(),
            config=lambda: self.config,
            max_candidates=max_candidates,
            learning_delay_ms=learning_delay_ms,
            pooled_learning=pooled_learning,
            emitted_at=lambda: self.watermark,
            wall=lambda: 0.0,
            hold_ms=allowed_lateness_ms,
            incrementality=incrementality,
        )
        # Every replica from the start, so that each one queues every pooled example.
        self.matchers = [self.lifecycle.model(p) for p in range(partitions)]
        self.queues: list[LearningQueue] = [self.lifecycle.queue(p) for p in range(partitions)]
        self.parked: list[tuple[int, int, Lookup]] = []  # lookups waiting for the watermark
        self.seq = 0
        self.labels: list[dict[str, Any]] = []
        self.invalid: Counter[str] = Counter()
        # Events that are not conversions for their advertiser, by name: no label, graph input.
        self.site_events: Counter[str] = Counter()
        # Users entered in campaigns since the lifecycle was last told (Lifecycle.entered).
        self._entered: dict[int, dict[str, list[int]]] = {}

    def feed(self, line: dict[str, Any]) -> None:
        """One replay line, read with the worker's own parsers (a value that is not valid is
        counted in ``invalid`` by topic, as the worker would dead-letter it)."""
        topic, value = line["topic"], line["value"]
        raw = value if isinstance(value, str | bytes) else orjson.dumps(value)
        try:
            if topic in PARSERS:
                self._engagement(PARSERS[topic](raw))
            elif topic == "conversions":
                self._conversions(parse_conversions(raw))
            elif topic == "feedback":
                truth = parse_feedback(raw)
                self._run(self.lifecycle.feedback(truth.key, truth.user_id, truth.ts))
        except Invalid:
            self.invalid[topic] += 1

    def _engagement(self, rec: RecordEngagement | IdentitySighting) -> None:
        user, ts = rec.user_id, rec.ts
        if isinstance(rec, IdentitySighting):
            keys = engagement_identifiers(
                rec.ip, rec.user_agent, rec.device_id, em=rec.em, ph=rec.ph
            )
        else:
            keys = engagement_identifiers(
                rec.ip, rec.user_agent, rec.device_id, click_id=rec.click_id
            )
        families = sighting_families(rec.user_agent, ts)
        for kind, key in keys:
            self.index[key] = add_sighting(
                self.index.get(key),
                user,
                ts,
                max_users=self.max_users,
                families=families if kind == "ip" else None,
            )
        own = {kind: ts for kind, _ in keys if kind in OWN_KINDS}
        if own:
            self.users[user] = note_own_identifiers(self.users.get(user), own)
        row = engagement_row(rec) if isinstance(rec, RecordEngagement) else None
        exposure = exposure_of(rec) if isinstance(rec, RecordEngagement) else None
        if exposure is not None:
            state = self.users.setdefault(user, {"e": []})
            seen = [(ts, exposure.advertiser_id, exposure.campaign_id, exposure.holdout)]
            note_exposures(state, seen, self.config.unit_window_ms, self._entered)
        if row is not None:
            self.users[user] = add_engagements(
                self.users.get(user), [row], retention_ms=self.retention_ms
            )
        if ts > self.watermark:
            self.watermark = ts
            self._release(ts - self.lateness_ms)

    def _tell_entered(self) -> None:
        """Users entered in campaigns to the lifecycle's arm counts, before any decision they
        may count in (a batch at a time, as the users agent sends them)."""
        if self._entered:
            self.lifecycle.entered(self._entered)
            self._entered = {}

    def _conversions(self, items: list[Conversion | Invalid]) -> None:
        self._tell_entered()
        for item in items:
            if isinstance(item, Invalid):
                self.invalid["conversions"] += 1
                continue
            if not self.config.is_conversion(item.advertiser_id, item.event_name):
                self.site_events[item.event_name] += 1
                continue
            partition = partition_for(item.key, self.partitions)
            self._run(self.lifecycle.conversion(item.as_dict(), partition))
        self._release(self.watermark - self.lateness_ms)

    def _release(self, upto: float) -> None:
        """Answer the parked lookups at or before ``upto``, oldest first."""
        self._tell_entered()
        while self.parked and self.parked[0][0] <= upto:
            _, _, request = heapq.heappop(self.parked)
            answer = lookup(
                self.index.get(request.key),
                request.key,
                conversion_ts=request.ts,
                lookback_ms=self.lookback_ms,
                top_k=self.top_k,
            )
            self._run(
                self.lifecycle.answer(LookupAnswer(request.conversion_key, request.round, answer))
            )

    def _run(self, commands: Iterable[Command]) -> None:
        """Carry out commands in order, each one's consequences before the next command."""
        todo = deque(commands)
        while todo:
            command = todo.popleft()
            follow: list[Command] = []
            if isinstance(command, Lookup):
                self.seq += 1
                heapq.heappush(self.parked, (command.ts, self.seq, command))
            elif isinstance(command, Probe):
                follow = self.lifecycle.probed(self.answer_probe(command))
            elif isinstance(command, EmitLabel):
                self.labels.append(command.label)
            elif isinstance(command, IndexLink):
                self.index[command.key] = add_sighting(
                    self.index.get(command.key),
                    command.user_id,
                    command.ts,
                    max_users=self.max_users,
                )
            elif isinstance(command, UserLink):
                self.users[command.user_id] = note_link(
                    self.users.get(command.user_id), command.key, command.ts
                )
            # Decided, Admitted, Dropped, Resolved and Reject need nothing here: one conversion is
            # decided at a time, and offline there is no dead-letter topic or metric.
            todo.extendleft(reversed(follow))

    def answer_probe(self, request: Probe) -> ProbeAnswer:
        """A probe answered from the user states, as the users agent answers it."""
        answer = probe(
            self.users.get(request.user_id),
            request.user_id,
            request.advertiser_id,
            conversion_ts=request.ts,
            retention_ms=self.retention_ms,
            unit_window_ms=self.config.unit_window_ms(request.advertiser_id),
        )
        return ProbeAnswer(request.conversion_key, request.round, request.user_id, answer)

    def finish(self) -> list[dict[str, Any]]:
        """The end of the input: every held conversion and parked lookup goes out."""
        for partition in range(self.partitions):
            self._run(self.lifecycle.release_idle(partition))
        self._release(float("inf"))
        return self.labels


def run_offline(
    replay_lines: Iterable[dict[str, Any]],
    matcher_factory: Callable[[], Any],
    **options: Any,
) -> list[dict[str, Any]]:
    """All labels (every revision) of a replay, in emission order.

    ``matcher_factory`` makes one model per partition (``MatchModel``, ``RuleBaseline``, ...).
    Keyword options are those of :class:`OfflineEngine`: ``partitions`` (4),
    ``attribution_config``, ``lookback_ms`` (30 d), ``top_k`` (8), ``max_candidates`` (12),
    ``max_users`` (64), ``allowed_lateness_ms`` (5 min), ``policy`` (the event-time rules),
    ``learning_delay_ms`` (1 h): the worker's defaults (``Settings.offline_options()`` gives
    the options of any worker's settings).
    """
    engine = OfflineEngine(matcher_factory, **options)
    for line in replay_lines:
        engine.feed(line)
    return engine.finish()
