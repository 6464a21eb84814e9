"""Rejected identifiers per advertiser and field, with advice (``convstream quality``)."""

from __future__ import annotations

import orjson

from convstream.core.identifier_quality import IdentifierTally, format_rejections, phone_notes
from convstream.core.records import Conversion, parse_conversions


def _tally(*envelopes: dict) -> IdentifierTally:
    tally = IdentifierTally()
    for env in envelopes:
        for conv in parse_conversions(orjson.dumps(env)):
            assert isinstance(conv, Conversion)
            tally.observe(conv.advertiser_id, conv.user_data, conv.rejected, conv.notes)
    return tally


def _event(i: int, **user_data) -> dict:
    return {"event_name": "lead", "event_id": f"e{i}", "event_time": 1767571200 + i,
            "user_data": user_data}  # fmt: skip


def test_counts_and_shares_per_advertiser_and_field():
    a = {"advertiser_id": "adv-a", "data": [
        _event(0, em="ann@x.com", ph="+44 20 7946 0958"),
        _event(1, em="n/a", ph="020 7946 0958"),
        _event(2, em=["noemail@shop.example", "bo@y.org"], ph="123"),
        _event(3, em="bob@y.org", ph="0"),
    ]}  # fmt: skip
    b = {
        "advertiser_id": "adv-b",
        "data": [_event(9, madid="00000000-0000-0000-0000-000000000000")],
    }
    tally = _tally(a, b)
    table = {
        (adv, group, reason): (n, round(share, 2)) for adv, group, reason, n, share in tally.table()
    }
    assert table == {
        ("adv-a", "emails", "placeholder"): (2, 0.4),
        ("adv-a", "phones", "no_country_code"): (1, 0.25),
        ("adv-a", "phones", "too_short"): (1, 0.25),
        ("adv-a", "phones", "placeholder"): (1, 0.25),
        ("adv-b", "device ids", "all_zero"): (1, 1.0),
    }
    advice = tally.advice()
    assert (
        "adv-a: 40 % of your emails are placeholders (n/a, null, 0...): leave the field out"
        in advice
    )
    assert any(
        line.startswith("adv-a: 25 % of your phones have no country code") for line in advice
    )
    assert "adv-b" in format_rejections(tally) and "all_zero" in format_rejections(tally)


def test_a_clean_feed_has_no_advice():
    tally = _tally({"advertiser_id": "a", "data": [_event(0, em="ann@x.com", ph="+15550100199")]})
    assert tally.advice() == [] and format_rejections(tally) == "no identifier was rejected"


def test_national_format_is_noted_international_is_not():
    for national in ("020 7946 0958", "(555) 010-0199", " 07946 095812"):
        assert phone_notes(national), national
    for international in ("+44 20 7946 0958", "0044 20 7946 0958", "442079460958", None, "a" * 64):
        assert phone_notes(international) == (), international
