"""A generated day of conversions read in today's shape, as Pinterest batch envelopes and as
Meta events: every copy gets the same conversion key and the same identifier keys, and none is
invalid (issue 21's done-when at the ingestion edge; the lifecycle's end-to-end test builds on
tests/stream/capi_shapes.py)."""

from __future__ import annotations

import orjson
import pytest

from convstream.core.identity import conversion_identifier_keys
from convstream.core.records import Conversion, parse_conversion, parse_conversions
from convstream.synth.generate import GeneratorConfig, generate
from tests.stream.capi_shapes import pinterest_envelopes, to_meta


@pytest.fixture(scope="module")
def day() -> list[dict]:
    lines, _ = generate(GeneratorConfig(users=10000, days=1, seed=21))
    events = [line["value"] for line in lines if line["topic"] == "conversions"]
    assert len(events) > 500
    return events


def _summary(conv: Conversion) -> tuple:
    return (
        conv.key,
        conv.source,
        conv.ts // 1000,
        conv.value,
        conv.currency,
        conversion_identifier_keys(conv.advertiser_id, conv.user_data),
    )


def _parse_all(records: list[bytes]) -> list[Conversion]:
    out = []
    for raw in records:
        for item in parse_conversions(raw):
            assert isinstance(item, Conversion), item  # nothing would go to dead-letter
            out.append(item)
    return out


def test_pinterest_envelopes_read_as_today(day):
    today = [_summary(parse_conversion(orjson.dumps(e))) for e in day]
    envelopes = pinterest_envelopes(day)
    assert len(envelopes) < len(day)  # several events per record
    pinterest = [_summary(c) for c in _parse_all([orjson.dumps(e) for e in envelopes])]
    assert pinterest == today


def test_meta_events_read_as_today(day):
    today = [_summary(parse_conversion(orjson.dumps(e))) for e in day]
    meta = [_summary(c) for c in _parse_all([orjson.dumps(to_meta(e)) for e in day])]
    assert meta == today
    assert sum(1 for e in day if (e["user_data"] or {}).get("click_id")) > 10  # fbc exercised
