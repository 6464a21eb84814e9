"""The conversions agent is an adapter: fake Kafka records in, the lifecycle's commands as sends.

Driven without Faust or a broker: a fake runtime records every send, and a small transport
answers the agent's lookups and probes from the offline engine's index and user states, the
way the identifiers and users agents would. On a generated replay the agent then emits exactly
the labels of the offline engine, which drives the same lifecycle.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from convstream.core import messages
from convstream.core.engagements import note_link
from convstream.core.engine import OfflineEngine, run_offline
from convstream.core.identity import sha256_hex
from convstream.core.index import add_sighting, lookup
from convstream.core.matching.model import MatchModel
from convstream.core.partitioning import partition_for
from convstream.stream.agents.conversions import ConversionsAdapter
from convstream.stream.kafka import message_key
from convstream.stream.settings import Settings
from convstream.stream.writeback import WriteBack

T = 1_767_571_200_000
MIN = 60_000


@dataclass
class Message:
    topic: str
    partition: int
    value: bytes
    offset: int = 0
    timestamp: float | None = None
    headers: tuple = ()


@dataclass
class Event:
    message: Message


@dataclass
class FakeRuntime:
    """What the adapter uses of :class:`convstream.stream.app.Runtime`, recording every send."""

    settings: Settings = field(default_factory=Settings)
    tables: dict[str, dict] = field(default_factory=lambda: {"conversions": {}, "models": {}})
    sent: list[tuple[str, str | None, Any, int | None]] = field(default_factory=list)
    dead: list[tuple[str, str]] = field(default_factory=list)
    flushes: list[int] = field(default_factory=list)  # how many sends each flush followed

    def logical_name(self, physical: str) -> str:
        return physical

    def active_partitions(self, topic: str) -> set[int]:
        return set(range(self.settings.partitions))

    async def send(self, topic: str, key: str | None, value: Any, partition: int | None = None):
        self.sent.append((topic, key, value, partition))

    async def send_keyed(self, topic: str, key: str, value: Any):
        await self.send(topic, key, value, partition_for(key, self.settings.partitions))

    async def flush(self) -> None:
        self.flushes.append(len(self.sent))

    async def dead_letter(self, event: Any, reason: str, detail: str = "") -> None:
        self.dead.append((event.message.topic, reason))

    def take(self) -> list[tuple[str, str | None, Any, int | None]]:
        out, self.sent = self.sent, []
        return out


def record(topic: str, value: dict[str, Any], partitions: int = 4) -> Event:
    key = message_key(topic, value)
    partition = partition_for(key, partitions) if key is not None else 0
    return Event(Message(topic, partition, orjson.dumps(value)))


def conversion(event_id: str, ts: int, **user_data: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "Purchase",
        "source": "capi",
        "ts": ts,
        "advertiser_id": "a",
        "value": 5.0,
        "currency": "USD",
        "user_data": user_data,
    }


async def test_a_conversion_becomes_lookups_then_probes_then_a_label():
    rt = FakeRuntime(settings=Settings(hold_idle_s=0.0))
    agent = ConversionsAdapter(rt)
    em = sha256_hex("ann@example.com")
    event = record("conversions", conversion("o1", T, em=em))
    await agent.on_batch([event])
    # Held until its partition moves on or its input is idle: read to the end (offset 0 of 1).
    assert rt.take() == []

    async def fetched(partition: int) -> int:
        return 1

    await agent.release_idle(lambda partition: 5, fetched, since=0.0)  # 1..4 still unread
    assert rt.take() == []
    await agent.release_idle(lambda partition: 1, fetched, since=0.0)
    sends = rt.take()
    assert [(topic, key) for topic, key, *_ in sends] == [("cs-ident", f"em:{em}")]
    asked = messages.decode(sends[0][2])
    assert asked == messages.Lookup(f"em:{em}", "a:Purchase:o1", 0, T)

    answer = {"key": f"em:{em}", "kind": "em", "degree": 1, "users": [["u1", T - MIN, T, 1]]}
    reply = messages.encode(messages.LookupAnswer("a:Purchase:o1", 0, answer))
    await agent.on_batch([Event(Message("cs-answer", 0, reply))])
    sends = rt.take()
    assert [(topic, key) for topic, key, *_ in sends] == [("cs-probe", "u1")]
    assert messages.decode(sends[0][2]) == messages.Probe("u1", "a:Purchase:o1", 0, "a", T)

    engagements = {"user_id": "u1", "engagements": [[T - MIN, "click", "c1", "a", "k", "ad"]]}
    reply = messages.encode(messages.ProbeAnswer("a:Purchase:o1", 0, "u1", engagements))
    await agent.on_batch([Event(Message("cs-answer", 0, reply))])
    sends = rt.take()
    labels = [
        orjson.loads(v) if isinstance(v, bytes) else v for t, _, v, _ in sends if t == "labels"
    ]
    assert [(lab["user_id"], lab["match_method"], lab["revision"]) for lab in labels] == [
        ("u1", "deterministic:em", 0)
    ]
    assert labels[0]["credits"][0]["engagement_id"] == "c1"
    # After the label: the email's next ordered lookup may go out.
    decided = [messages.decode(v) for t, _, v, _ in sends if t == "cs-ident"]
    assert messages.Decided(f"em:{em}", "a:Purchase:o1") in decided
    # A duplicate copy changes nothing but the dedupe count; a stale answer is ignored.
    await agent.on_batch([record("conversions", conversion("o1", T, em=em))])
    await agent.on_batch([Event(Message("cs-answer", 0, reply))])
    assert [t for t, *_ in rt.take()] == []


async def _decided_once(rt: FakeRuntime) -> tuple[ConversionsAdapter, list[dict]]:
    """One conversion through an agent to its label (held, looked up, probed, decided)."""
    agent = ConversionsAdapter(rt)
    em = sha256_hex("bo@example.com")
    await agent.on_batch([record("conversions", conversion("o2", T, em=em))])

    async def fetched(partition: int) -> int:
        return 1

    await agent.release_idle(lambda partition: 1, fetched, since=0.0)
    answer = {"key": f"em:{em}", "kind": "em", "degree": 1, "users": [["u2", T - MIN, T, 1]]}
    reply = messages.encode(messages.LookupAnswer("a:Purchase:o2", 0, answer))
    await agent.on_batch([Event(Message("cs-answer", 0, reply))])
    engagements = {"user_id": "u2", "engagements": [[T - MIN, "click", "c2", "a", "k", "ad"]]}
    reply = messages.encode(messages.ProbeAnswer("a:Purchase:o2", 0, "u2", engagements))
    rt.take()
    await agent.on_batch([Event(Message("cs-answer", 0, reply))])
    return agent, [v for t, _, v, _ in rt.take() if t == "labels"]


async def test_a_label_goes_out_after_the_producer_flush_that_saves_its_state():
    rt = FakeRuntime(settings=Settings(hold_idle_s=0.0))
    flushed = len(rt.flushes)
    _, labels = await _decided_once(rt)
    assert len(labels) == 1
    # The batch that decided it sent its links first, then flushed, then the label.
    assert len(rt.flushes) == flushed + 1 and rt.flushes[-1] > 0


async def test_coalesced_a_labelled_state_is_in_the_changelog_before_its_label():
    """With the conversion state behind a write-back cache, the state that records a label is
    written before the producer flush that precedes the label; states without a new label
    wait for the commit. Lost with the cache at a kill, the unlabelled ones come back from the
    records read again; the labelled one is sent again, unchanged, by the next worker."""
    backing: dict[str, Any] = {}
    held_at_flush: list[set[str]] = []

    class Recording(FakeRuntime):
        async def flush(self) -> None:
            held_at_flush.append(set(backing))
            await super().flush()

    rt = Recording(
        settings=Settings(hold_idle_s=0.0),
        tables={"conversions": WriteBack(backing, name="conversion-state"), "models": {}},
    )
    agent, labels = await _decided_once(rt)
    await agent.on_batch([record("conversions", conversion("o9", T, em=sha256_hex("x@y.z")))])
    assert len(labels) == 1 and held_at_flush == [{"a:Purchase:o2"}]
    assert backing["a:Purchase:o2"] == rt.tables["conversions"]["a:Purchase:o2"]
    assert "a:Purchase:o9" in rt.tables["conversions"] and "a:Purchase:o9" not in backing

    # Killed before a commit: the cache is gone, the backing table is what the next owner reads.
    restarted = ConversionsAdapter(
        FakeRuntime(settings=rt.settings, tables={"conversions": backing, "models": {}})
    )
    await restarted.on_batch([])
    assert [v for t, _, v, _ in restarted.rt.take() if t == "labels"] == labels


async def test_a_label_decided_after_the_checkpoint_is_sent_again_by_the_next_worker():
    """Killed after the decision and before a commit: the state says the label went out, but
    it may have died in the producer. The next worker sends the same label again."""
    rt = FakeRuntime(settings=Settings(hold_idle_s=0.0))
    _, labels = await _decided_once(rt)
    restarted = ConversionsAdapter(FakeRuntime(settings=rt.settings, tables=rt.tables))
    await restarted.on_batch([])
    again = [v for t, _, v, _ in restarted.rt.take() if t == "labels"]
    assert again == labels

    # Checkpointed after the send (a commit): the next worker has nothing to send again.
    rt = FakeRuntime(settings=Settings(hold_idle_s=0.0))
    agent, labels = await _decided_once(rt)
    assert agent.checkpoint() > 0
    restarted = ConversionsAdapter(FakeRuntime(settings=rt.settings, tables=rt.tables))
    await restarted.on_batch([])
    assert restarted.rt.take() == []


async def test_a_round_in_flight_is_started_again_by_the_next_worker():
    """Its lookup may have died in the producer with the worker, and the copy read again is a
    duplicate of the saved state: without a new round nothing would ever answer it."""
    rt = FakeRuntime(settings=Settings(hold_idle_s=0.0))
    agent = ConversionsAdapter(rt)
    em = sha256_hex("cy@example.com")
    await agent.on_batch([record("conversions", conversion("o3", T, em=em))])

    async def fetched(partition: int) -> int:
        return 1

    await agent.release_idle(lambda partition: 1, fetched, since=0.0)
    first = [messages.decode(v) for t, _, v, _ in rt.take() if t == "cs-ident"]
    assert first == [messages.Lookup(f"em:{em}", "a:Purchase:o3", 0, T)]
    restarted = ConversionsAdapter(FakeRuntime(settings=rt.settings, tables=rt.tables))
    await restarted.on_batch([record("conversions", conversion("o3", T, em=em))])
    again = [messages.decode(v) for t, _, v, _ in restarted.rt.take() if t == "cs-ident"]
    assert again == [messages.Lookup(f"em:{em}", "a:Purchase:o3", 1, T)]


async def test_a_partition_read_before_a_restart_releases_its_held_conversions():
    """After a restart the held conversions are in the states table only, and nothing new
    comes on their partition: the consumer's position at the high watermark says it is idle."""
    rt = FakeRuntime(settings=Settings(hold_idle_s=0.0))
    first = ConversionsAdapter(rt)
    await first.on_batch([record("conversions", conversion("o1", T, click_id="k1"))])
    assert rt.take() == []  # held
    restarted = ConversionsAdapter(rt)  # the same tables, a new process

    async def behind(partition: int) -> int:
        return 0

    async def fetched(partition: int) -> int:
        return 1

    await restarted.release_idle(lambda partition: 1, behind, since=0.0)
    assert rt.take() == []
    await restarted.release_idle(lambda partition: 1, fetched, since=0.0)
    assert [(topic, key) for topic, key, *_ in rt.take()] == [("cs-ident", "click:k1")]


async def test_bad_records_and_outliers_go_to_dead_letter():
    rt = FakeRuntime()
    agent = ConversionsAdapter(rt)
    await agent.on_batch([Event(Message("conversions", 0, b"{not json"))])
    await agent.on_batch([record("conversions", conversion("o1", T, click_id="k"))])
    await agent.on_batch([record("conversions", conversion("o2", T - 8 * 24 * 60 * MIN))])
    partition = record("conversions", conversion("o2", 0)).message.partition
    on_o1 = record("conversions", conversion("o1", T)).message.partition
    assert [reason for _, reason in rt.dead][0] != "too_old"
    if partition == on_o1:  # the clock that judges "too old" is the partition's own
        assert rt.dead[1:] == [("conversions", "too_old")]
    await agent.on_batch([Event(Message("feedback", 0, b"[]"))])
    assert rt.dead[-1][0] == "feedback"


class Transport:
    """The identifiers and users agents in memory: the engine's index and user states."""

    def __init__(self, rt: FakeRuntime, agent: ConversionsAdapter) -> None:
        self.rt, self.agent = rt, agent
        self.memory = OfflineEngine(MatchModel, partitions=rt.settings.partitions)
        # Users entered in campaigns go to the agent's lifecycle, as the users agent sends them.
        self.memory.lifecycle.entered = agent.lifecycle.entered  # type: ignore[method-assign]
        self.parked: list[tuple[int, int, messages.Lookup]] = []
        self.labels: list[dict[str, Any]] = []
        self.seq = 0

    async def feed(self, line: dict[str, Any]) -> None:
        topic, value = line["topic"], line["value"]
        if topic in ("impressions", "clicks", "identity"):
            before = self.memory.watermark
            self.memory.feed(line)
            if self.memory.watermark > before:
                await self.release(self.memory.watermark - self.memory.lateness_ms)
        else:
            await self.agent.on_batch([record(topic, value)])
            await self.deliver()
            await self.release(self.memory.watermark - self.memory.lateness_ms)

    async def release(self, upto: float) -> None:
        while self.parked and self.parked[0][0] <= upto:
            _, _, ask = heapq.heappop(self.parked)
            entry = self.memory.index.get(ask.key)
            answer = lookup(
                entry, ask.key, conversion_ts=ask.ts, lookback_ms=30 * 86_400_000, top_k=8
            )
            reply = messages.LookupAnswer(ask.conversion_key, ask.round, answer)
            await self.agent.on_batch([Event(Message("cs-answer", 0, messages.encode(reply)))])
            await self.deliver()

    async def deliver(self) -> None:
        """Answer what the agent sent, each reply's consequences before the next send."""
        pending = self.rt.take()
        while pending:
            topic, _, value, _ = pending.pop(0)
            if topic == "labels":
                self.labels.append(value)
                continue
            if topic == "cs-learn":
                continue
            message = messages.decode(value)
            follow: list = []
            if isinstance(message, messages.Lookup):
                self.seq += 1
                heapq.heappush(self.parked, (message.ts, self.seq, message))
            elif isinstance(message, messages.Probe):
                reply = self.memory.answer_probe(message)
                await self.agent.on_batch([Event(Message("cs-answer", 0, messages.encode(reply)))])
                follow = self.rt.take()
            elif isinstance(message, messages.IndexLink):
                index = self.memory.index
                index[message.key] = add_sighting(
                    index.get(message.key), message.user_id, message.ts
                )
            elif isinstance(message, messages.UserLink):
                users = self.memory.users
                users[message.user_id] = note_link(
                    users.get(message.user_id), message.key, message.ts
                )
            pending[:0] = follow


@pytest.fixture(scope="module")
def replay():
    from convstream.synth.generate import config_from_args, generate

    lines, _ = generate(config_from_args("heavy-sharing", users=600, days=14, seed=5))
    return lines


async def test_the_agent_gives_the_offline_engines_labels(replay):
    rt = FakeRuntime(settings=Settings(learning_delay_ms=3_600_000))
    agent = ConversionsAdapter(rt)
    transport = Transport(rt, agent)
    for line in replay:
        await transport.feed(line)
    for partition in range(rt.settings.partitions):  # the end of the input, as offline
        await agent.execute(agent.lifecycle.release_idle(partition))
        await agent.send_labels()
        await transport.deliver()
    await transport.release(float("inf"))

    def gist(label: dict[str, Any]) -> tuple:
        credits = [(c["engagement_id"], round(c["label_weight"], 9)) for c in label["credits"]]
        return (
            label["conversion_key"],
            label["revision"],
            label["user_id"],
            label["match_method"],
            round(label["match_confidence"], 9),
            credits,
            label["incremental_probability"],
            label["incremental_weight"],
        )

    offline = run_offline(replay, MatchModel)
    assert len(offline) > 100
    assert sum(lab["incremental_probability"] is not None for lab in offline) > 20  # 14 days
    assert [gist(lab) for lab in transport.labels] == [gist(lab) for lab in offline]


async def test_site_events_get_no_label_and_are_counted_by_name(tmp_path):
    """PageView is not a conversion by default; with conversion_events = ["Purchase"] in the
    settings file, AddToCart is not either. Neither reaches the lifecycle: no lookup, no hold,
    no label, only convstream_site_events_total."""
    from convstream.stream import metrics

    def count(name: str) -> float:
        sample = metrics.REGISTRY.get_sample_value(
            "convstream_site_events_total", {"event_name": name}
        )
        return sample or 0.0

    path = tmp_path / "attribution.toml"
    path.write_text('[advertiser."a"]\nconversion_events = ["Purchase"]\n')
    rt = FakeRuntime(settings=Settings(hold_idle_s=0.0, attribution_config=str(path)))
    agent = ConversionsAdapter(rt)
    em = sha256_hex("ann@example.com")
    before = count("PageView"), count("AddToCart")
    page = dict(conversion("p1", T, em=em), event_name="PageView", source="pixel")
    cart = dict(conversion("c1", T, em=em), event_name="AddToCart")
    await agent.on_batch([record("conversions", page), record("conversions", cart)])
    assert (count("PageView"), count("AddToCart")) == (before[0] + 1, before[1] + 1)
    assert rt.tables["conversions"] == {}
    await agent.on_batch([record("conversions", conversion("o1", T, em=em))])
    assert list(rt.tables["conversions"]) == ["a:Purchase:o1"]
    assert rt.dead == []
