"""Conversions as advertisers send them (issue 21): Pinterest and Meta CAPI events, alone or in a
batch envelope, next to today's shape. Field shapes come from Pinterest's published v5 API
description (an excerpt in fixtures/, cited there) and from Meta's SDK, which builds the
payloads it sends with ``Event.normalize()``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.user_data import UserData

from convstream.core.identity import (
    Rejection,
    conversion_identifier_keys,
    looks_like_pii,
    sha256_hex,
)
from convstream.core.records import (
    MAX_BATCH_EVENTS,
    MAX_ENVELOPE_BYTES,
    Conversion,
    Invalid,
    conversions_from_value,
    parse_conversion,
    parse_conversions,
    parse_feedback,
)

FIXTURE = json.loads(
    (Path(__file__).parent / "fixtures/pinterest_v5_conversion_events.json").read_text()
)
PIN_EVENT = FIXTURE["ConversionEvents.data.items"]
PIN_USER = FIXTURE["ConversionEventsUserDataProperties"]["properties"]
EVENT_TIME = 1_767_571_200  # 2026-01-05T00:00Z, epoch seconds


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pinterest_event(**changes: Any) -> dict[str, Any]:
    """A Pinterest CAPI event built from the API description's own examples."""
    user = {name: prop["example"] for name, prop in PIN_USER.items() if "example" in prop}
    user["client_user_agent"] = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X)"
    custom = {
        name: prop["example"]
        for name, prop in PIN_EVENT["properties"]["custom_data"]["properties"].items()
        if "example" in prop and name != "opt_out_type"
    }
    event = {
        name: PIN_EVENT["properties"][name]["example"]
        for name in (
            "action_source",
            "event_id",
            "event_name",
            "event_source_url",
            "opt_out",
            "partner_name",
        )
    }
    event.update(event_time=EVENT_TIME, user_data=user, custom_data=custom)
    event.update(changes)
    return event


def meta_event(**changes: Any) -> dict[str, Any]:
    """A Meta CAPI event as the SDK serializes it: lists, hashed by the SDK, fbc, fbp, madid."""
    user = UserData(
        emails=["Ann.Lee@Example.com", "ann@work.example"],
        phones=["+44 20 7946 0958"],
        external_id="Cust-42",
        client_ip_address="203.0.113.9",
        client_user_agent="Mozilla/5.0",
        fbc="fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk",
        fbp="fb.1.1558571054389.1098115397",
        madid="6D92078A-8246-4BA4-AE5B-76104861E7DC",
    )
    event = Event(
        event_name="Purchase",
        event_time=EVENT_TIME,
        event_id="ord-9",
        action_source=ActionSource.WEBSITE,
        event_source_url="https://shop.example/checkout",
        user_data=user,
        custom_data=CustomData(value=123.45, currency="eur", order_id="ord-9"),
    ).normalize()
    event.update(changes)
    return event


def envelope(*events: dict[str, Any], advertiser_id: str = "adv-1") -> bytes:
    return orjson.dumps({"advertiser_id": advertiser_id, "data": list(events)})


def one(raw: bytes) -> Conversion:
    (item,) = parse_conversions(raw)
    assert isinstance(item, Conversion), item
    return item


# --- the published shapes ----------------------------------------------------------------------


def test_fixture_cites_its_source_and_has_the_fields_we_read():
    assert "pinterest/api-description" in FIXTURE["source"]
    assert set(PIN_EVENT["required"]) == {
        "event_name", "action_source", "event_time", "user_data", "event_id",
    }  # fmt: skip
    assert {"em", "ph", "external_id", "hashed_maids", "click_id"} <= set(PIN_USER)


def test_every_array_field_of_pinterest_user_data_is_accepted_as_an_array():
    arrays = [name for name, prop in PIN_USER.items() if prop.get("type") == "array"]
    assert {"em", "ph", "ge", "db", "ln", "fn", "ct", "st", "zp", "country"} <= set(arrays)
    rec = one(envelope(pinterest_event()))
    assert rec.user_data["em"] == PIN_USER["em"]["example"]  # two hashes: both kept
    assert rec.user_data["device_id"] == PIN_USER["hashed_maids"]["example"]
    assert rec.user_data["ph"] == PIN_USER["ph"]["example"][0]
    assert rec.user_data["click_id"] == PIN_USER["click_id"]["example"]
    assert rec.rejected == ()
    for pii in ("fn", "ln", "ge", "db", "ct", "st", "zp", "country"):
        assert pii not in rec.user_data


def test_pinterest_event_in_an_envelope_maps_field_by_field():
    rec = one(envelope(pinterest_event(), advertiser_id="549755885175"))
    assert rec.key == "549755885175:checkout:eventId0001"
    assert (rec.ts, rec.source, rec.opt_out) == (EVENT_TIME * 1000, "capi", False)
    assert (rec.value, rec.currency) == (72.39, "USD")  # value is a string in their examples
    assert rec.user_data["client_ip_address"] == "216.3.128.12"


def test_meta_event_as_the_sdk_sends_it_maps_field_by_field():
    rec = one(orjson.dumps({**meta_event(), "advertiser_id": "adv-7"}))
    assert rec.key == "adv-7:Purchase:ord-9"
    assert rec.ts == EVENT_TIME * 1000
    assert sorted(rec.user_data["em"]) == sorted(
        [sha("ann.lee@example.com"), sha("ann@work.example")]
    )
    assert rec.user_data["ph"] == sha("442079460958")
    assert rec.user_data["external_id"] == sha("Cust-42")  # the SDK sends it as given
    assert (
        rec.user_data["click_id"] == "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"
    )
    assert rec.user_data["device_id"] == sha("6d92078a-8246-4ba4-ae5b-76104861e7dc")
    assert (rec.value, rec.currency) == (123.45, "eur")
    assert "fb.1.1558571054389" not in repr(rec)  # fbp is not an identifier: not kept


def test_meta_phone_as_a_string_and_raw_values_are_normalized_here():
    user = {"em": " Ann.Lee@Example.com ", "ph": "0044 20 7946 0958", "fbc": "fb.1.1.clk-9"}
    rec = one(envelope({"event_name": "Lead", "event_time": EVENT_TIME, "event_id": "e1",
                        "user_data": user}))  # fmt: skip
    assert rec.user_data["em"] == sha("ann.lee@example.com")
    assert rec.user_data["ph"] == sha("442079460958")
    assert rec.user_data["click_id"] == "clk-9"


def test_meta_event_without_event_id_uses_the_order_id():
    event = meta_event()
    del event["event_id"]
    assert one(envelope(event)).event_id == "ord-9"


def test_the_three_shapes_of_one_conversion_give_the_same_key_and_identifiers():
    today = {
        "event_id": "ord-9", "event_name": "Purchase", "source": "capi", "ts": EVENT_TIME * 1000,
        "advertiser_id": "adv-1", "value": 123.45, "currency": "eur",
        "user_data": {"em": "ann.lee@example.com", "ph": "+44 20 7946 0958",
                      "external_id": "Cust-42", "click_id": "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwj"
                      "NwB_qa2ofrHyiLjcbCRxTDMgk", "client_ip_address": "203.0.113.9",
                      "client_user_agent": "Mozilla/5.0",
                      "device_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
    }  # fmt: skip
    meta = meta_event(user_data={**meta_event()["user_data"], "em": [sha("ann.lee@example.com")]})
    a = parse_conversion(orjson.dumps(today))
    b = one(envelope(meta))
    assert a.key == b.key
    assert conversion_identifier_keys(a.advertiser_id, a.user_data) == conversion_identifier_keys(
        b.advertiser_id, b.user_data
    )


# --- batch envelopes ---------------------------------------------------------------------------


def test_each_event_of_a_batch_is_validated_alone_with_its_index():
    bad_time = pinterest_event(event_id="e2", event_time=EVENT_TIME * 1000)  # milliseconds
    items = parse_conversions(envelope(pinterest_event(), bad_time, "not an event",
                                       pinterest_event(event_id="e4")))  # fmt: skip
    assert [type(i).__name__ for i in items] == ["Conversion", "Invalid", "Invalid", "Conversion"]
    assert (items[1].reason, items[1].index) == ("bad_timestamp", 1)
    assert str(items[1]).startswith("bad_timestamp: data[1]")
    assert orjson.loads(items[1].payload)["event_id"] == "e2"
    assert orjson.loads(items[1].payload)["user_data"]["client_ip_address"] == "216.3.128.12"
    with_email = parse_conversions(envelope(pinterest_event(event_time="soon", user_data={
        "em": ["Ann@Example.com"], "fn": ["Annabel"]})))[0]  # fmt: skip
    assert b"Ann" not in with_email.payload and b"[redacted]" in with_email.payload
    assert (items[2].reason, items[2].index) == ("schema", 2)


def test_envelope_advertiser_is_the_events_advertiser_and_may_not_be_contradicted():
    items = parse_conversions(envelope(pinterest_event(advertiser_id="adv-2")))
    assert isinstance(items[0], Invalid) and items[0].reason == "schema"
    assert one(envelope(pinterest_event(advertiser_id="adv-1"))).advertiser_id == "adv-1"
    (missing,) = parse_conversions(orjson.dumps({"data": [pinterest_event()]}))
    assert isinstance(missing, Invalid) and str(missing) == "missing_field: data[0]: advertiser_id"


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"advertiser_id": "a", "data": {"event_name": "x"}}', "schema"),
        (b"[1, 2]", "schema"),
        (b"{oops", "invalid_json"),
    ],
)
def test_an_unusable_envelope_is_invalid_as_a_whole(payload, why):
    with pytest.raises(Invalid) as info:
        parse_conversions(payload)
    assert info.value.reason == why


def test_an_envelope_over_the_batch_limit_is_too_long():
    # 1000 Pinterest events are 1.8 MB, past Kafka's default 1 MB message: a record that big is
    # too_large before it is parsed; the event limit holds for a decoded value (a replay's).
    with pytest.raises(Invalid) as info:
        conversions_from_value(
            orjson.loads(envelope(*[pinterest_event()] * (MAX_BATCH_EVENTS + 1)))
        )
    assert info.value.reason == "too_long"
    full = envelope(*[pinterest_event()] * MAX_BATCH_EVENTS)
    assert len(conversions_from_value(orjson.loads(full))) == 1000
    with pytest.raises(Invalid) as info:
        parse_conversions(full)
    assert info.value.reason == "too_large" and len(full) > MAX_ENVELOPE_BYTES
    assert len(parse_conversions(envelope(*[pinterest_event()] * 400))) == 400


def test_parse_conversion_refuses_an_envelope_and_parse_conversions_reads_single_events():
    with pytest.raises(Invalid):
        parse_conversion(envelope(pinterest_event()))
    single = {**pinterest_event(), "advertiser_id": "adv-1"}
    assert one(orjson.dumps(single)) == parse_conversion(orjson.dumps(single))
    (bad,) = parse_conversions(orjson.dumps({**single, "event_time": "soon"}))
    assert isinstance(bad, Invalid) and bad.index is None


def test_source_is_optional_in_capi_shapes_and_kept_when_given():
    assert one(envelope(pinterest_event(source="pixel"))).source == "pixel"
    items = parse_conversions(envelope(pinterest_event(source="email")))
    assert isinstance(items[0], Invalid) and items[0].reason == "schema"


def test_a_blank_or_missing_custom_data_value_is_none():
    for custom in ({"value": " "}, {"value": None}, {}):
        assert one(envelope(pinterest_event(custom_data=custom))).value is None


@pytest.mark.parametrize("value", ["abc", "nan", "inf", True, [1]])
def test_a_custom_data_value_that_is_not_a_number_is_schema(value):
    items = parse_conversions(envelope(pinterest_event(custom_data={"value": value})))
    assert isinstance(items[0], Invalid) and items[0].reason == "schema"


# --- junk per field ----------------------------------------------------------------------------


def test_junk_identifiers_are_dropped_per_field_and_the_conversion_survives():
    user = {"em": ["n/a", "ann@x.com"], "ph": ["0"], "external_id": ["null"],
            "hashed_maids": [sha("00000000-0000-0000-0000-000000000000")],
            "client_ip_address": "216.3.128.12", "client_user_agent": "UA"}  # fmt: skip
    rec = one(envelope(pinterest_event(user_data=user)))
    assert rec.user_data["em"] == sha("ann@x.com")
    assert rec.user_data["ph"] is rec.user_data["external_id"] is rec.user_data["device_id"] is None
    assert rec.rejected == (
        Rejection("em", "placeholder"),
        Rejection("ph", "placeholder"),
        Rejection("external_id", "placeholder"),
        Rejection("hashed_maids", "placeholder"),
    )
    assert rec.as_dict()["rejected_identifiers"] == [
        ["em", "placeholder"], ["ph", "placeholder"], ["external_id", "placeholder"],
        ["hashed_maids", "placeholder"],
    ]  # fmt: skip


def test_as_dict_of_a_clean_conversion_is_unchanged():
    rec = one(envelope(pinterest_event()))
    assert "rejected_identifiers" not in rec.as_dict() and "opt_out" not in rec.user_data


# --- opt-out and limited data use --------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"opt_out": True},
        {"data_processing_options": ["LDU"], "data_processing_options_country": 1},
        {"custom_data": {"opt_out_type": "LDP", "value": "10"}},
    ],
    ids=["pinterest-opt-out", "meta-ldu", "pinterest-ldp"],
)
def test_opted_out_conversions_keep_no_identifier(changes):
    rec = one(envelope(pinterest_event(**changes)))
    assert rec.opt_out
    assert rec.user_data["opt_out"] is True
    assert conversion_identifier_keys(rec.advertiser_id, rec.user_data) == []
    assert {k: v for k, v in rec.user_data.items() if k != "opt_out"} == dict.fromkeys(
        ["em", "ph", "external_id", "device_id", "click_id", "client_ip_address",
         "client_user_agent"]
    )  # fmt: skip


def test_opt_out_false_and_empty_processing_options_restrict_nothing():
    rec = one(envelope(pinterest_event(opt_out=False, data_processing_options=[])))
    assert not rec.opt_out and rec.user_data["em"] is not None


# --- free text that looks like PII (issue 23 item 7) -------------------------------------------


@pytest.mark.parametrize("event_id", ["ann@example.com", "+1 (555) 010-0199", "5550100199"])
def test_an_event_id_that_looks_like_pii_is_hashed_the_same_on_every_topic(event_id):
    conv = one(envelope(pinterest_event(event_id=event_id)))
    assert conv.event_id == "sha256:" + sha256_hex(event_id)
    assert event_id not in repr(conv) and event_id not in orjson.dumps(conv.as_dict()).decode()
    truth = {"advertiser_id": "adv-1", "event_id": event_id, "event_name": "checkout"}
    fb = parse_feedback(orjson.dumps({**truth, "ts": EVENT_TIME * 1000}))
    assert fb.key == conv.key


@pytest.mark.parametrize("event_id", ["ord-0123456789012345", "eventId0001", "1767571200000", "42"])
def test_ordinary_event_ids_are_kept(event_id):
    assert not looks_like_pii(event_id)
    assert one(envelope(pinterest_event(event_id=event_id))).event_id == event_id


def test_an_event_name_that_is_an_email_is_hashed():
    rec = one(envelope(pinterest_event(event_name="ann@example.com")))
    assert "ann@example.com" not in rec.key


# --- junk on the platform's own topics ---------------------------------------------------------


def test_identity_and_engagement_junk_is_noted_not_sighted():
    from convstream.core.records import parse_identity, parse_impression

    ident = parse_identity(
        orjson.dumps({"user_id": "u1", "ts": EVENT_TIME * 1000, "em": "noemail@example.com",
                      "ph": "123", "device_id": "00000000-0000-0000-0000-000000000000"})
    )  # fmt: skip
    assert (ident.em, ident.ph, ident.device_id) == (None, None, None)
    assert ident.rejected == (
        Rejection("em", "placeholder"),
        Rejection("ph", "too_short"),
        Rejection("device_id", "all_zero"),
    )
    imp = parse_impression(
        orjson.dumps({"event_id": "i1", "ts": EVENT_TIME * 1000, "user_id": "u1",
                      "advertiser_id": "a", "campaign_id": "c", "ad_id": "d",
                      "device_id": "ffffffff-ffff-ffff-ffff-ffffffffffff"})
    )  # fmt: skip
    assert imp.device_id is None and imp.rejected == (Rejection("device_id", "repeated_digits"),)


# --- forwarding one event of an envelope ---------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        pinterest_event(),
        pinterest_event(opt_out=True),
        pinterest_event(event_id="ann@example.com"),
        meta_event(),
        meta_event(data_processing_options=["LDU"]),
    ],
    ids=["pinterest", "opted-out", "pii-event-id", "meta", "meta-ldu"],
)
def test_as_event_reads_back_to_the_same_copy_without_raw_pii(event):
    conv = one(envelope(event))
    forwarded = conv.as_event()
    back = parse_conversion(orjson.dumps(forwarded))
    assert back == Conversion(**{**{f: getattr(conv, f) for f in conv.__slots__}, "rejected": (),
                                 "notes": ()})  # fmt: skip
    text = orjson.dumps(forwarded).decode()
    for raw in ("Ann.Lee@Example.com", "ann@example.com", "+44 20 7946 0958", "Cust-42"):
        assert raw not in text
