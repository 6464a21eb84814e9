"""The offline reference engine: a replay file in, labels out, with the stream's pure functions.

Lines are read in file (arrival) order. Engagement events feed the identifier index and the
user states; a conversion waits until engagements have been read past its event time plus the
allowed lateness (the stream's watermark), then is looked up, probed and resolved by the match
model of its partition (Kafka's murmur2 of the conversion key). A later copy that brings new
identifiers re-resolves it, and a changed label goes out with the next revision. Feedback
teaches from the stored snapshot. As in the worker, every learning example (self-supervised or
feedback) goes to every partition's replica (``pooled_learning``; only to its own partition's
otherwise), waits in that partition's :class:`LearningQueue` and is applied in event-time order
``learning_delay_ms`` behind the decisions. ``convstream evaluate --replay``
runs this for the model and the baselines side by side.

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
from collections.abc import Callable, Iterable
from typing import Any

from convstream.core import coordinator
from convstream.core.attribution import AttributionConfig
from convstream.core.dedupe import conversion_key
from convstream.core.engagements import (
    OWN_KINDS,
    add_engagements,
    note_link,
    note_own_identifiers,
    probe,
)
from convstream.core.identity import (
    conversion_identifiers,
    engagement_identifiers,
    hash_user_data,
    sighting_families,
)
from convstream.core.index import DEFAULT_MAX_USERS, add_sighting, lookup
from convstream.core.learning_queue import Entry, LearningQueue
from convstream.core.partitioning import partition_for
from convstream.core.resolve import identity_links, resolve, select_probe_candidates

DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000
ENGAGEMENT_TOPICS = {"impressions": "view", "clicks": "click", "identity": None}


class OfflineEngine:
    """State of one offline run: ``feed`` lines in arrival order, then ``finish``.

    ``matchers`` holds the per-partition models (for their ``stats()``) after the run.
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
        dedupe_window_ms: int = 2 * DAY_MS,
        learning_delay_ms: int = HOUR_MS,
        pooled_learning: bool = True,
    ) -> None:
        self.partitions = partitions
        self.pooled_learning = pooled_learning
        self.config = attribution_config or AttributionConfig()
        self.lookback_ms = lookback_ms
        self.top_k = top_k
        self.max_candidates = max_candidates
        self.max_users = max_users
        self.lateness_ms = allowed_lateness_ms
        self.retention_ms = self.config.max_window_ms()
        self.policy = coordinator.Policy(dedupe_window_ms=dedupe_window_ms)
        self.matchers = [matcher_factory() for _ in range(partitions)]
        self.queues = [LearningQueue(learning_delay_ms, m.learn_example) for m in self.matchers]
        self.index: dict[str, dict] = {}
        self.users: dict[str, dict] = {}
        self.states: dict[str, dict] = {}
        self.clocks: list[int | None] = [None] * partitions
        self.watermark = 0
        self.pending: list[tuple[int, int, str]] = []
        self.seq = 0
        self.labels: list[dict[str, Any]] = []

    def feed(self, line: dict[str, Any]) -> None:
        topic, value = line["topic"], line["value"]
        if topic in ENGAGEMENT_TOPICS:
            self._engagement(topic, value)
        elif topic == "conversions":
            self._conversion(value)
        elif topic == "feedback":
            self._feedback(value)

    def _engagement(self, topic: str, v: dict[str, Any]) -> None:
        user, ts = v["user_id"], v["ts"]
        keys = engagement_identifiers(
            v.get("ip"),
            v.get("user_agent"),
            v.get("device_id"),
            v.get("click_id"),
            v.get("em"),
            v.get("ph"),
        )
        families = sighting_families(v.get("user_agent"), ts)
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
        kind = ENGAGEMENT_TOPICS[topic]
        if kind is not None:
            row = [
                ts,
                kind,
                v["event_id"],
                v["advertiser_id"],
                v.get("campaign_id"),
                v.get("ad_id"),
            ]
            self.users[user] = add_engagements(
                self.users.get(user), [row], retention_ms=self.retention_ms
            )
        if ts > self.watermark:
            self.watermark = ts
            self._drain(ts - self.lateness_ms)

    def _conversion(self, v: dict[str, Any]) -> None:
        key = conversion_key(v["advertiser_id"], v["event_name"], v["event_id"])
        conv = {
            "conversion_key": key,
            "event_id": v["event_id"],
            "event_name": v["event_name"],
            "advertiser_id": v["advertiser_id"],
            "ts": v["ts"],
            "value": v.get("value"),
            "currency": v.get("currency"),
            "sources": [v["source"]],
            "user_data": hash_user_data(v.get("user_data")),
        }
        part = partition_for(key, self.partitions)
        clock = self.clocks[part]
        self.clocks[part] = v["ts"] if clock is None else max(clock, v["ts"])
        state, outcome = coordinator.admit(
            self.states.get(key), conv, clock_ts=clock, policy=self.policy
        )
        if state is None:
            return
        self.states[key] = state
        if outcome == "new" or (outcome == "correction" and state["phase"] == "done"):
            state["phase"] = "waiting"
            self.seq += 1
            heapq.heappush(self.pending, (conv["ts"], self.seq, key))
            self._drain(self.watermark - self.lateness_ms)

    def _drain(self, upto: int) -> None:
        while self.pending and self.pending[0][0] <= upto:
            _, _, key = heapq.heappop(self.pending)
            self._resolve(key)

    def _resolve(self, key: str) -> None:
        state = self.states[key]
        conv = state["conv"]
        part = partition_for(key, self.partitions)
        matcher, queue = self.matchers[part], self.queues[part]
        queue.flush(conv["ts"])
        ids = conversion_identifiers(conv["advertiser_id"], conv["user_data"])
        answers = {
            k: lookup(
                self.index.get(k),
                k,
                conversion_ts=conv["ts"],
                lookback_ms=self.lookback_ms,
                top_k=self.top_k,
            )
            for k in ids.values()
        }
        candidates = select_probe_candidates(conv, answers, self.max_candidates)
        probes = {
            u: probe(
                self.users.get(u),
                u,
                conv["advertiser_id"],
                conversion_ts=conv["ts"],
                retention_ms=self.retention_ms,
            )
            for u in candidates
        }
        settings = self.config.for_advertiser(conv["advertiser_id"])
        label, decision = resolve(
            conv,
            answers,
            probes,
            matcher,
            settings,
            revision=state["revision"] + 1,
            emitted_at=self.watermark,
        )
        self._share(
            part, conv["ts"], key, matcher.self_supervised_example(conv, answers, probes, decision)
        )
        out = coordinator.settle(state, label, decision.snapshot)
        if out is not None:
            self.labels.append(out)
        for link_key, user in identity_links(conv, decision):
            self.index[link_key] = add_sighting(
                self.index.get(link_key), user, conv["ts"], max_users=self.max_users
            )
            self.users[user] = note_link(self.users.get(user), link_key, conv["ts"])
        truth = state.get("feedback")
        if truth is not None and not truth.get("learned"):
            truth["learned"] = True
            example = matcher.feedback_example(decision.snapshot, truth["user_id"])
            self._share(part, truth["ts"], key, example)

    def _feedback(self, v: dict[str, Any]) -> None:
        key = conversion_key(v["advertiser_id"], v["event_name"], v["event_id"])
        state = self.states.get(key)
        if state is None or state["phase"] == "feedback_first":
            self.states[key] = coordinator.feedback_first(v.get("user_id"), v["ts"])
            return
        done = state["phase"] == "done" and state["snapshot"] is not None
        state["feedback"] = {"user_id": v.get("user_id"), "ts": v["ts"], "learned": done}
        if done:
            part = partition_for(key, self.partitions)
            example = self.matchers[part].feedback_example(state["snapshot"], v.get("user_id"))
            self._share(part, v["ts"], key, example)

    def _share(self, part: int, ts: int, key: str, example: dict[str, Any] | None) -> None:
        """Queue a learning example for every replica (pooled learning) or for its own."""
        if example is None:
            return
        entry = Entry.make(ts, key, example)
        for target in range(self.partitions) if self.pooled_learning else (part,):
            self.queues[target].push(entry)

    def finish(self) -> list[dict[str, Any]]:
        self._drain(float("inf"))
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
    ``max_users`` (64), ``allowed_lateness_ms`` (5 min), ``dedupe_window_ms`` (48 h),
    ``learning_delay_ms`` (1 h): the worker's defaults.
    """
    engine = OfflineEngine(matcher_factory, **options)
    for line in replay_lines:
        engine.feed(line)
    return engine.finish()
