"""Records stamped far ahead or far behind, on every partition: dead-lettered with their reason,
and the good traffic after them labelled as in a run without them (issue 23, items 2 and 3)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from convstream.core.evaluation import latest_labels
from convstream.core.partitioning import partition_for
from convstream.stream.kafka import ensure_topics, message_key, produce, read_topic
from convstream.stream.runner import wait_for_labels
from convstream.synth.generate import config_from_args, generate
from tests.integration.traffic import T0, click, conversion, impression

pytestmark = pytest.mark.integration

DAY = 24 * 3600 * 1000
# As in test_event_time: labels identical across runs need learning slower than a replay's steps.
LEARNING_DELAY_MS = 48 * 3600 * 1000
ENGAGEMENTS = ("impressions", "clicks", "identity")


def _on_partition(partition: int, partitions: int, make: Any) -> dict[str, Any]:
    """The first of ``make(i)`` whose key lands on ``partition``: one outlier per partition."""
    for i in range(5_000, 60_000):  # user-5000 on: no synth user; 198.51.x.y stays an IP
        line = make(i)
        value = line["value"]
        key = value.get("user_id") or f"{value['advertiser_id']}:Purchase:{value['event_id']}"
        if partition_for(key, partitions) == partition:
            return line
    raise AssertionError("no key found")


def identity(i: int, ts: int) -> dict[str, Any]:
    value = {"user_id": f"user-{i}", "ts": ts, "em": None, "ph": None, "device_id": None,
             "ip": f"192.0.2.{i % 250}", "user_agent": "UA"}  # fmt: skip
    return {"topic": "identity", "value": value}


def engagement_outliers(partitions: int, stamps: list[int]) -> list[dict[str, Any]]:
    lines = []
    for ts in stamps:
        for p in range(partitions):
            for make in (impression, click, identity):
                lines.append(_on_partition(p, partitions, lambda i, m=make, t=ts: m(i, t)))
    return lines


def conversion_outliers(partitions: int, stamps: list[int]) -> list[dict[str, Any]]:
    return [
        _on_partition(
            p, partitions, lambda i, t=ts: conversion(i, t, client_ip_address="192.0.2.9")
        )
        for ts in stamps
        for p in range(partitions)
    ]


def _who(value: dict[str, Any]) -> str:
    return str(value.get("user_id") or value.get("event_id"))


def _payload(record: dict[str, Any]) -> dict[str, Any]:
    try:
        return orjson.loads(record["payload"])
    except orjson.JSONDecodeError:
        return {"event_id": record["payload"][:80]}


def _gist(label: dict[str, Any]) -> tuple[Any, ...]:
    credits = [(c["engagement_id"], round(c["credit"], 9)) for c in label["credits"]]
    return label["user_id"], label["match_method"], credits


async def _dead_letters(settings: Any) -> list[dict[str, Any]]:
    return [r["value"] async for r in read_topic(settings, "dead-letter")]


@pytest.mark.parametrize("with_conversions", [False, True], ids=["engagements", "all-inputs"])
def test_outliers_on_every_partition_change_no_label(settings, start_worker, with_conversions):
    # Its bookkeeping reads every conversions-topic line as a conversion (and every shifted one
    # as a dead letter): the traffic before site events, which skip the event-time rules.
    lines, truth = generate(
        config_from_args("default", seed=7, users=100, days=4, site_events=False)
    )
    expected = {row["conversion_key"] for row in truth}
    n = settings.partitions
    wall_ms = int(time.time() * 1000)
    # Before any good record: only the broker timestamp can judge them (years past the wall
    # clock); far behind is harmless to every clock but still not data.
    first = engagement_outliers(n, [9 * 10**12, wall_ms + 400 * DAY])
    # Halfway through the replay, once every partition's clock knows the traffic: far ahead of
    # the replay but behind the wall clock (a broker bound alone would let them through), and
    # far behind it.
    middle = engagement_outliers(n, [T0 + 300 * DAY, T0 - 200 * DAY])
    if with_conversions:
        # Issue 23, item 3: 20 days ahead, inside the 30-day future bound, on every partition.
        middle += conversion_outliers(n, [T0 + 20 * DAY, T0 - 200 * DAY])
    # Halfway, or later if need be: every partition's conversion clock has five to judge by.
    per_partition: Counter[int] = Counter()
    cut = len(lines)
    for pos, line in enumerate(lines):
        if line["topic"] == "conversions":
            per_partition[partition_for(message_key("conversions", line["value"]).decode(), n)] += 1
        if pos >= len(lines) // 2 and len(per_partition) == n and min(per_partition.values()) >= 7:
            cut = pos + 1
            break
    # A clock judges once it has records enough (convstream/core/clock.py), which a sparse
    # topic read ahead of the others may not have halfway through: the middle outliers go in
    # once the first half has been read, as they would into a pipeline that has been running.
    cut_ts = max(line["value"]["ts"] for line in lines[:cut] if line["topic"] in ENGAGEMENTS)
    read_by_then = {
        message_key("conversions", line["value"]).decode()
        for line in lines[:cut]
        if line["topic"] == "conversions" and line["value"]["ts"] < cut_ts - DAY
    }
    assert len(read_by_then) >= 5
    # Conversions 20 days ahead are inside the bounds: labelled (once their bounded wait is
    # over: no engagement comes near them), but they move no clock.
    ahead = {
        message_key("conversions", line["value"]).decode()
        for line in middle
        if line["topic"] == "conversions" and line["value"]["ts"] > T0
    }

    results, parked = {}, {}
    runs = (("control", [lines]), ("planted", [first + lines[:cut], middle + lines[cut:]]))
    for name, parts in runs:
        s = settings.replace(
            topic_prefix=f"{settings.topic_prefix}{name}.",
            app_id=f"{settings.app_id}-{name}",
            max_wait_s=30.0,
            learning_delay_ms=LEARNING_DELAY_MS,
        )
        asyncio.run(ensure_topics(s))
        worker = start_worker(s, name)
        for i, part in enumerate(parts):
            if i:
                wait_for_labels(s, read_by_then, timeout=180, settle=1)
            asyncio.run(produce(s, part))
        awaited = expected | (ahead if name == "planted" else set())
        results[name] = latest_labels(wait_for_labels(s, awaited, timeout=240))[0]
        assert worker.alive()
        worker.stop()
        parked[name] = asyncio.run(_dead_letters(s))

    # Every outlier is in dead-letter with its reason; nothing else is, beyond the control's.
    want = Counter(
        (line["topic"], _who(line["value"]), "future_ts" if line["value"]["ts"] > T0 else "too_old")
        for line in first + middle
        if not (line["topic"] == "conversions" and T0 < line["value"]["ts"] < T0 + 30 * DAY)
    )
    seen = Counter((r["topic"], _who(_payload(r)), r["reason"]) for r in parked["planted"])
    control_parked = Counter(
        (r["topic"], _who(_payload(r)), r["reason"]) for r in parked["control"]
    )
    extra = seen - control_parked
    assert extra == want, (sorted((extra - want).items()), sorted((want - extra).items()))
    assert control_parked - seen == Counter()
    control, got = results["control"], results["planted"]
    assert set(got) >= expected
    assert set(got) - expected == ahead
    differ = [k for k in expected if _gist(control[k]) != _gist(got[k])]
    assert differ == []
    gaps = [abs(control[k]["match_confidence"] - got[k]["match_confidence"]) for k in expected]
    assert max(gaps) <= 0.1
