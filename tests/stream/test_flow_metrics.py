"""The worker's own message flow in its metrics: what it sends per topic and how full the
batches its agents take are (issue 20: messages per input, and why they grow under load)."""

from __future__ import annotations

from convstream.stream import metrics
from convstream.stream.app import Runtime
from convstream.stream.settings import Settings


class _Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[str | None, bytes, int | None]] = []

    async def send(self, key: str | None, value: bytes, partition: int | None) -> None:
        self.sent.append((key, value, partition))


def _sent(topic: str) -> float:
    value = metrics.REGISTRY.get_sample_value("convstream_messages_sent_total", {"topic": topic})
    return value or 0.0


def _batches(agent: str) -> tuple[float, float]:
    count = metrics.REGISTRY.get_sample_value("convstream_batch_events_count", {"agent": agent})
    total = metrics.REGISTRY.get_sample_value("convstream_batch_events_sum", {"agent": agent})
    return count or 0.0, total or 0.0


async def test_every_send_is_counted_under_its_logical_topic():
    rt = Runtime(settings=Settings(), app=None)  # type: ignore[arg-type]
    rt.topics = {"cs-probe": _Topic(), "labels": _Topic()}
    before = _sent("cs-probe"), _sent("labels")
    await rt.send("cs-probe", None, b"a", partition=1)
    await rt.send_keyed("cs-probe", "conv-1", {"b": 1})
    await rt.send("labels", "conv-1", b"c")
    assert (_sent("cs-probe") - before[0], _sent("labels") - before[1]) == (2.0, 1.0)
    assert len(rt.topics["cs-probe"].sent) == 2  # counted, and sent


def test_batch_sizes_are_observed_per_agent_and_an_unknown_agent_is_other():
    before, other = _batches("users"), _batches(metrics.OTHER)
    metrics.observe_batch("users", 1000)
    metrics.observe_batch("users", 3)
    metrics.observe_batch("someone-else", 5)
    after = _batches("users")
    assert (after[0] - before[0], after[1] - before[1]) == (2.0, 1003.0)
    assert _batches(metrics.OTHER)[0] - other[0] == 1.0
