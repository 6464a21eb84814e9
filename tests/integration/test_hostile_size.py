"""Hostile sizes (issue 23, item 4): ten 1 MB values and ten 10,000-deep ones on the inputs, then
an unrelated conversion: every hostile value reaches dead-letter cut and redacted, and the
conversion is labelled. What they cost the event loop is measured by hand (bench.hostile)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from bench.hostile import hostile_values
from convstream.stream.app import DEAD_LETTER_PAYLOAD_CHARS
from convstream.stream.kafka import produce, read_topic
from convstream.stream.runner import wait_for_labels
from tests.integration.traffic import T0, conversion, key

pytestmark = pytest.mark.integration


async def _dead_letters(settings):
    return [r["value"] async for r in read_topic(settings, "dead-letter")]


def test_huge_and_deep_values_go_to_dead_letter_and_the_next_conversion_is_labelled(
    settings, start_worker
):
    values = hostile_values()
    big = values["1 MB of emails and phones"].decode()
    deep = values["10,000 deep"].decode()
    burst = []
    for topic in ("conversions", "impressions"):
        burst += [{"topic": topic, "value": big}] * 5
        burst += [{"topic": topic, "value": deep}] * 5
    worker = start_worker(settings)
    asyncio.run(produce(settings, [*burst, conversion(1, T0, client_ip_address="192.0.2.7")]))
    labels = wait_for_labels(settings, {key(1)}, timeout=120, settle=2)
    assert [lab["conversion_key"] for lab in labels] == [key(1)]
    assert worker.alive()
    parked = asyncio.run(_dead_letters(settings))
    assert Counter((r["topic"], r["reason"]) for r in parked) == {
        ("conversions", "too_large"): 5,
        ("conversions", "invalid_json"): 5,
        ("impressions", "too_large"): 5,
        ("impressions", "invalid_json"): 5,
    }
    for record in parked:
        assert 0 < len(record["payload"]) <= DEAD_LETTER_PAYLOAD_CHARS
        assert "@example.com" not in record["payload"]
        assert "555 010" not in record["payload"]
