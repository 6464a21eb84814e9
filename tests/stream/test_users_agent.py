"""The users agent keeps units of incrementality as the offline engine does, and hands the users
entered in campaigns to its lifecycle. Driven without Faust: a fake app captures the agent and
a fake stream hands it batches of records."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from convstream.core import messages
from convstream.core.engine import OfflineEngine
from convstream.core.lifecycle import Lifecycle
from convstream.core.matching.baseline import RuleBaseline
from convstream.core.partitioning import partition_for
from convstream.core.units import DAY_MS, HOUR_MS
from convstream.stream.agents import users
from convstream.stream.settings import Settings
from tests.stream.test_conversions_agent import Event, Message


class _Signal:
    def connect(self, fn: Any) -> Any:
        return fn


@dataclass
class FakeApp:
    agents: dict[str, Any] = field(default_factory=dict)
    on_partitions_revoked: _Signal = field(default_factory=_Signal)

    def agent(self, channel: Any, name: str) -> Any:
        def register(fn: Any) -> Any:
            self.agents[name] = fn
            return fn

        return register

    def timer(self, interval: float) -> Any:
        return lambda fn: fn


@dataclass
class FakeRuntime:
    settings: Settings
    app: FakeApp = field(default_factory=FakeApp)
    tables: dict[str, dict] = field(default_factory=lambda: {"users": {}, "clocks": {}})
    sent: list[tuple[str, Any, Any]] = field(default_factory=list)

    def logical_name(self, physical: str) -> str:
        return physical

    def active_partitions(self, topic: str) -> set[int]:
        return set(range(self.settings.partitions))

    async def send(self, topic: str, key: Any, value: Any, partition: int | None = None) -> Any:
        self.sent.append((topic, key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_keyed(self, topic: str, key: str, value: Any) -> None:
        self.sent.append((topic, key, value))

    async def dead_letter(self, event: Any, reason: str, detail: str = "") -> None:
        raise AssertionError(f"dead letter: {reason} {detail}")


class Batches:
    """A stream whose ``take_events`` yields the batches given."""

    def __init__(self, batches: list[list[Event]]) -> None:
        self.batches = batches

    async def take_events(self, n: int, within: float) -> Any:
        for batch in self.batches:
            yield batch


@pytest.fixture(scope="module")
def replay() -> list[dict[str, Any]]:
    from convstream.synth.generate import config_from_args, generate

    lines, _ = generate(config_from_args("default", users=300, days=10, seed=2, site_events=False))
    return lines


def _events(lines: list[dict[str, Any]], partitions: int) -> list[Event]:
    out = []
    for offset, line in enumerate(lines):
        if line["topic"] in ("impressions", "clicks", "identity"):
            part = partition_for(line["value"]["user_id"], partitions)
            out.append(Event(Message(line["topic"], part, orjson.dumps(line["value"]), offset)))
    return out


def _sums(entered: list[dict]) -> dict:
    sums: dict = {}
    for batch in entered:
        for ts, counts in batch.items():
            for campaign, arms in counts.items():
                got = sums.setdefault((ts, campaign), [0, 0])
                got[0] += arms[0]
                got[1] += arms[1]
    return sums


def test_units_and_entries_are_the_offline_engines(replay):
    settings = Settings(partitions=2)
    rt = FakeRuntime(settings)
    told: list[dict] = []
    life = Lifecycle({}, RuleBaseline, partitions=2)
    life.entered = told.append  # type: ignore[method-assign]
    users.register(rt, None, life)
    events = _events(replay, settings.partitions)
    # Batches as Faust hands them: records of both partitions mixed, 500 at a time.
    asyncio.run(
        rt.app.agents["users"](Batches([events[i : i + 500] for i in range(0, len(events), 500)]))
    )

    engine = OfflineEngine(RuleBaseline, partitions=2)
    engine_told: list[dict] = []
    engine.lifecycle.entered = engine_told.append  # type: ignore[method-assign]
    for line in replay:
        engine.feed(line)
    engine.finish()
    table = rt.tables["users"]
    exposed = [u for u, state in engine.users.items() if state.get("x")]
    assert len(exposed) > 100
    assert all(table[u].get("x") == engine.users[u].get("x") for u in exposed)
    assert all(table[u].get("r") == engine.users[u].get("r") for u in engine.users)
    # The same users entered at the same times, ghosts in the holdout arm.
    assert _sums(told) == _sums(engine_told)
    assert sum(arms[1] for arms in _sums(told).values()) > 0


def test_a_late_probe_gets_the_answer_it_would_have_had_at_the_time(replay):
    """A backlog: the users agent has read days past the conversion when its probe comes."""
    settings = Settings(partitions=2)
    rt = FakeRuntime(settings)
    users.register(rt, None, Lifecycle({}, RuleBaseline, partitions=2))
    events = _events(replay, settings.partitions)
    asyncio.run(rt.app.agents["users"](Batches([events])))

    end = max(int(line["value"]["ts"]) for line in replay if line["topic"] == "impressions")
    at = end - 5 * DAY_MS
    engine = OfflineEngine(RuleBaseline, partitions=2)
    for line in replay:  # the engine answers at the time, as it reads
        if line["topic"] in ("impressions", "clicks", "identity"):
            if int(line["value"]["ts"]) > at + HOUR_MS:
                break
            engine.feed(line)
    exposed = sorted(u for u, state in engine.users.items() if (state.get("x") or {}).get("adv-01"))
    asks = [messages.Probe(u, "adv-01:Purchase:x", 0, "adv-01", at) for u in exposed]
    expected = {a.user_id: engine.answer_probe(a).answer for a in asks}
    rt.sent.clear()
    probes = [
        Event(Message("cs-probe", partition_for(a.user_id, 2), messages.encode(a))) for a in asks
    ]
    asyncio.run(rt.app.agents["users"](Batches([probes])))
    answers = {
        m.user_id: m.answer
        for m in map(messages.decode, (v for t, _, v in rt.sent if t == "cs-answer"))
    }
    assert len(answers) == len(asks) > 20
    assert any(a["activity"] >= 5 for a in answers.values())
    for user, answer in answers.items():
        assert (answer["units"], answer["activity"]) == (
            expected[user]["units"],
            expected[user]["activity"],
        ), user
