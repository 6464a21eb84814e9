"""docs/contract.md, field by field, for every ``parse_*`` of convstream/core/records.py.

Each input topic gets: the valid example, every required field missing, wrong types, the
timestamp rules, IP validation, and (where the topic carries them) hashing of raw identifiers.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from convstream.core.identity import USER_DATA_FIELDS
from convstream.core.records import (
    Conversion,
    Engagement,
    Feedback,
    IdentitySighting,
    Invalid,
    parse_click,
    parse_conversion,
    parse_feedback,
    parse_identity,
    parse_impression,
)

TS = 1_767_571_200_000  # 2026-01-05T00:00Z in epoch milliseconds
DOCUMENTED_REASONS = {
    "invalid_json", "schema", "missing_field", "too_long", "bad_timestamp", "invalid_ip",
}  # fmt: skip
HEX_A = "ab" * 32
HEX_UPPER = "AB12" * 16


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def impression(**changes: Any) -> dict[str, Any]:
    value = {
        "event_id": "imp-1",
        "ts": TS,
        "user_id": "u1",
        "advertiser_id": "adv-1",
        "campaign_id": "cmp-1",
        "ad_id": "ad-1",
        "ip": "198.51.100.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        "device_id": HEX_A,
    }
    return _apply(value, changes)


def click(**changes: Any) -> dict[str, Any]:
    value = {**impression(), "event_id": "clk-1", "click_id": "clk-1"}
    return _apply(value, changes)


def identity(**changes: Any) -> dict[str, Any]:
    value = {
        "user_id": "u1",
        "ts": TS,
        "em": HEX_A,
        "ph": None,
        "device_id": None,
        "ip": "2001:db8::1",
        "user_agent": "Mozilla/5.0",
    }
    return _apply(value, changes)


def conversion(**changes: Any) -> dict[str, Any]:
    value = {
        "event_id": "order-1",
        "event_name": "Purchase",
        "source": "capi",
        "ts": TS,
        "advertiser_id": "adv-1",
        "value": 12.5,
        "currency": "EUR",
        "user_data": {
            "em": HEX_A,
            "ph": None,
            "external_id": None,
            "click_id": "clk-1",
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0",
            "device_id": None,
        },
    }
    return _apply(value, changes)


def feedback(**changes: Any) -> dict[str, Any]:
    value = {
        "advertiser_id": "adv-1",
        "event_id": "order-1",
        "event_name": "Purchase",
        "user_id": "u1",
        "ts": TS,
    }
    return _apply(value, changes)


_DROP = object()


def _apply(value: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(value)
    for name, new in changes.items():
        if new is _DROP:
            out.pop(name, None)
        else:
            out[name] = new
    return out


def raw(value: Any) -> bytes:
    return orjson.dumps(value)


def reason_of(parse: Any, payload: bytes | str | None) -> str:
    with pytest.raises(Invalid) as info:
        parse(payload)
    assert info.value.reason in DOCUMENTED_REASONS
    return info.value.reason


# topic: parser, valid example, required fields, nullable fields
TOPICS = {
    "impressions": (
        parse_impression,
        impression,
        ("event_id", "ts", "user_id", "advertiser_id", "campaign_id", "ad_id"),
        ("ip", "user_agent", "device_id"),
    ),
    "clicks": (
        parse_click,
        click,
        ("click_id", "ts", "user_id", "advertiser_id", "campaign_id", "ad_id"),
        ("ip", "user_agent", "device_id", "event_id"),
    ),
    "identity": (
        parse_identity,
        identity,
        ("user_id", "ts"),
        ("em", "ph", "device_id", "ip", "user_agent"),
    ),
    "conversions": (
        parse_conversion,
        conversion,
        ("event_id", "event_name", "source", "ts", "advertiser_id"),
        ("value", "currency", "user_data"),
    ),
    "feedback": (
        parse_feedback,
        feedback,
        ("advertiser_id", "event_id", "event_name", "ts"),
        ("user_id",),
    ),
}
TOPIC_NAMES = sorted(TOPICS)
REQUIRED = [(t, f) for t in TOPIC_NAMES for f in TOPICS[t][2]]
NULLABLE = [(t, f) for t in TOPIC_NAMES for f in TOPICS[t][3]]
STRING_FIELDS = [
    (t, f) for t in TOPIC_NAMES for f in (*TOPICS[t][2], *TOPICS[t][3])
    if f not in ("ts", "value", "user_data")
]  # fmt: skip


# --- the valid examples ------------------------------------------------------------------------


def test_impression_example_parses_field_by_field():
    rec = parse_impression(raw(impression()))
    assert rec == Engagement(
        kind="view",
        event_id="imp-1",
        ts=TS,
        user_id="u1",
        advertiser_id="adv-1",
        campaign_id="cmp-1",
        ad_id="ad-1",
        ip="198.51.100.7",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        device_id=HEX_A,
        click_id=None,
    )


def test_click_example_parses_and_event_id_equals_click_id():
    rec = parse_click(raw(click()))
    assert rec.kind == "click"
    assert rec.event_id == rec.click_id == "clk-1"
    assert (rec.ts, rec.user_id, rec.advertiser_id, rec.campaign_id, rec.ad_id) == (
        TS, "u1", "adv-1", "cmp-1", "ad-1",
    )  # fmt: skip


def test_click_event_id_may_be_omitted_and_is_set_to_click_id():
    assert parse_click(raw(click(event_id=_DROP))).event_id == "clk-1"
    assert parse_click(raw(click(event_id=None))).event_id == "clk-1"


def test_click_event_id_different_from_click_id_is_schema():
    assert reason_of(parse_click, raw(click(event_id="clk-2"))) == "schema"


def test_identity_example_parses_field_by_field():
    rec = parse_identity(raw(identity()))
    assert rec == IdentitySighting(
        user_id="u1", ts=TS, em=HEX_A, ph=None, device_id=None, ip="2001:db8::1",
        user_agent="Mozilla/5.0",
    )  # fmt: skip


def test_conversion_example_parses_field_by_field():
    rec = parse_conversion(raw(conversion()))
    assert isinstance(rec, Conversion)
    assert (rec.event_id, rec.event_name, rec.source, rec.ts, rec.advertiser_id) == (
        "order-1", "Purchase", "capi", TS, "adv-1",
    )  # fmt: skip
    assert (rec.value, rec.currency) == (12.5, "EUR")
    assert rec.user_data["em"] == HEX_A
    assert rec.user_data["click_id"] == "clk-1"
    assert rec.user_data["client_ip_address"] == "203.0.113.9"
    assert rec.user_data["client_user_agent"] == "Mozilla/5.0"
    assert set(rec.user_data) == set(USER_DATA_FIELDS)


def test_conversion_key_is_advertiser_event_name_event_id():
    rec = parse_conversion(raw(conversion()))
    assert rec.key == "adv-1:Purchase:order-1"
    assert rec.as_dict()["conversion_key"] == rec.key
    assert rec.as_dict()["sources"] == ["capi"]


@pytest.mark.parametrize("source", ["capi", "pixel"])
def test_conversion_sources(source):
    assert parse_conversion(raw(conversion(source=source))).source == source


def test_conversion_without_user_data_or_value_parses():
    rec = parse_conversion(raw(conversion(user_data=_DROP, value=_DROP, currency=_DROP)))
    assert rec.value is None and rec.currency is None
    assert all(v is None for v in rec.user_data.values())


def test_conversion_integer_value_becomes_float():
    assert parse_conversion(raw(conversion(value=10))).value == 10.0


def test_feedback_example_parses_and_shares_the_conversion_key():
    rec = parse_feedback(raw(feedback()))
    assert rec == Feedback(
        advertiser_id="adv-1", event_id="order-1", event_name="Purchase", user_id="u1", ts=TS
    )
    assert rec.key == parse_conversion(raw(conversion())).key


def test_feedback_user_id_is_nullable_not_a_platform_user():
    assert parse_feedback(raw(feedback(user_id=None))).user_id is None
    assert parse_feedback(raw(feedback(user_id=_DROP))).user_id is None


@pytest.mark.parametrize(("topic", "name"), NULLABLE)
def test_nullable_fields_may_be_null_or_absent(topic, name):
    parse, example, _, _ = TOPICS[topic]
    parse(raw(example(**{name: None})))
    parse(raw(example(**{name: _DROP})))


# --- missing fields and wrong types ------------------------------------------------------------


@pytest.mark.parametrize(("topic", "name"), REQUIRED)
def test_each_required_field_missing_is_missing_field(topic, name):
    parse, example, _, _ = TOPICS[topic]
    assert reason_of(parse, raw(example(**{name: _DROP}))) == "missing_field"
    assert reason_of(parse, raw(example(**{name: None}))) == "missing_field"


@pytest.mark.parametrize(("topic", "name"), [(t, f) for t, f in REQUIRED if f != "ts"])
def test_each_required_string_field_blank_is_missing_field(topic, name):
    parse, example, _, _ = TOPICS[topic]
    assert reason_of(parse, raw(example(**{name: "   "}))) == "missing_field"


@pytest.mark.parametrize(("topic", "name"), STRING_FIELDS)
@pytest.mark.parametrize(
    "bad", [["x"], {"x": 1}, True, 1.5], ids=["list", "object", "bool", "float"]
)
def test_string_fields_of_the_wrong_type_are_schema(topic, name, bad):
    parse, example, _, _ = TOPICS[topic]
    assert reason_of(parse, raw(example(**{name: bad}))) == "schema"


@pytest.mark.parametrize("topic", TOPIC_NAMES)
@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"42", b"null", b"true"])
def test_a_value_that_is_not_an_object_is_schema(topic, payload):
    assert reason_of(TOPICS[topic][0], payload) == "schema"


@pytest.mark.parametrize("topic", TOPIC_NAMES)
@pytest.mark.parametrize(
    "payload", [b"{not json", b"", b"\xff\xfe\x00", b'{"a": 1', b"{'a': 1}", None]
)
def test_malformed_json_is_invalid_json(topic, payload):
    assert reason_of(TOPICS[topic][0], payload) == "invalid_json"


def test_conversion_source_other_than_capi_or_pixel_is_schema():
    assert reason_of(parse_conversion, raw(conversion(source="server"))) == "schema"


@pytest.mark.parametrize("bad", ["12.5", True, [1], {"v": 1}])
def test_conversion_value_that_is_not_a_number_is_schema(bad):
    assert reason_of(parse_conversion, raw(conversion(value=bad))) == "schema"


@pytest.mark.parametrize("bad", ["not-an-object", [1, 2], 7])
def test_conversion_user_data_that_is_not_an_object_is_schema(bad):
    assert reason_of(parse_conversion, raw(conversion(user_data=bad))) == "schema"


@pytest.mark.parametrize("name", ["em", "ph", "external_id", "click_id", "device_id"])
@pytest.mark.parametrize("bad", [{"x": 1}, True, 1.5], ids=["object", "bool", "float"])
def test_conversion_user_data_value_of_the_wrong_type_is_dropped_not_the_conversion(name, bad):
    """Junk per field, not per record (issue 21): the rest of the conversion goes on."""
    ud = {**conversion()["user_data"], name: bad}
    rec = parse_conversion(raw(conversion(user_data=ud)))
    assert rec.user_data[name] is None
    assert [r.field for r in rec.rejected] == [name]
    assert rec.user_data["em" if name != "em" else "click_id"] is not None


@pytest.mark.parametrize("name", ["em", "ph", "external_id", "click_id", "device_id"])
def test_conversion_user_data_lists_are_accepted_and_kept_whole(name):
    values = {
        "em": ["ann@x.com", "bo@y.org"],
        "ph": ["+1 555 010 0199", "+44 20 7946 0958"],
        "external_id": ["C-1", "C-2"],
        "click_id": ["k1", "k2"],
        "device_id": ["dev-1", "dev-2"],
    }[name]
    ud = {**conversion()["user_data"], name: values}
    kept = parse_conversion(raw(conversion(user_data=ud))).user_data[name]
    assert isinstance(kept, list) and len(kept) == 2


@pytest.mark.parametrize(
    "name", ["em", "ph", "external_id", "click_id", "device_id", "client_user_agent"]
)
def test_conversion_blank_optional_user_data_field_is_null_not_missing_field(name):
    ud = {**conversion()["user_data"], name: "  "}
    assert parse_conversion(raw(conversion(user_data=ud))).user_data[name] is None


# --- lengths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "name", "limit"),
    [
        ("impressions", "user_id", 1024),
        ("impressions", "user_agent", 2048),
        ("clicks", "click_id", 1024),
        ("identity", "user_agent", 2048),
        ("conversions", "event_name", 64),
        ("conversions", "currency", 8),
        ("conversions", "advertiser_id", 1024),
        ("feedback", "event_name", 64),
    ],
)
def test_fields_longer_than_their_limit_are_too_long(topic, name, limit):
    parse, example, _, _ = TOPICS[topic]
    at_limit = "a" * limit
    if topic == "clicks":
        parse(raw(example(event_id=at_limit, click_id=at_limit)))
        payload = example(event_id=_DROP, click_id=at_limit + "a")
    else:
        parse(raw(example(**{name: at_limit})))
        payload = example(**{name: at_limit + "a"})
    assert reason_of(parse, raw(payload)) == "too_long"


def test_a_huge_user_data_value_is_too_long():
    ud = {**conversion()["user_data"], "client_user_agent": "M" * 5000}
    assert reason_of(parse_conversion, raw(conversion(user_data=ud))) == "too_long"


# --- timestamps: epoch milliseconds ------------------------------------------------------------


@pytest.mark.parametrize("topic", TOPIC_NAMES)
@pytest.mark.parametrize(
    "ts",
    [TS // 1000, TS * 1000, 0, -1, 10**12 - 1, 10**13],
    ids=["seconds", "microseconds", "zero", "negative", "just-before-2001", "year-2286"],
)
def test_ts_not_in_epoch_milliseconds_is_bad_timestamp(topic, ts):
    parse, example, _, _ = TOPICS[topic]
    assert reason_of(parse, raw(example(ts=ts))) == "bad_timestamp"


@pytest.mark.parametrize("topic", TOPIC_NAMES)
@pytest.mark.parametrize("ts", [str(TS), "2026-01-05T00:00:00Z", True, [TS], {"ms": TS}])
def test_ts_of_the_wrong_type_is_schema(topic, ts):
    # A string (even of digits) is the wrong type, not a bad epoch-millisecond number.
    parse, example, _, _ = TOPICS[topic]
    assert reason_of(parse, raw(example(ts=ts))) == "schema"


@pytest.mark.parametrize("topic", TOPIC_NAMES)
def test_ts_in_range_is_kept_as_int(topic):
    parse, example, _, _ = TOPICS[topic]
    assert parse(raw(example(ts=10**12))).ts == 10**12
    rec = parse(raw(example(ts=float(TS))))
    assert rec.ts == TS and isinstance(rec.ts, int)


# --- IPs ---------------------------------------------------------------------------------------


IP_FIELDS = [("impressions", "ip"), ("clicks", "ip"), ("identity", "ip")]
BAD_IPS = ["999.1.1.1", "1.2.3", "not-an-ip", "1.2.3.4.5", "::g", "256.0.0.1", "1.2.3.4/24"]
GOOD_IPS = ["192.0.2.1", "2001:db8::1", "::1", "::ffff:10.0.0.1", "10.0.0.255"]


@pytest.mark.parametrize(("topic", "name"), IP_FIELDS)
@pytest.mark.parametrize("ip", BAD_IPS)
def test_invalid_ip_is_invalid_ip(topic, name, ip):
    parse, example, _, _ = TOPICS[topic]
    assert reason_of(parse, raw(example(**{name: ip}))) == "invalid_ip"


@pytest.mark.parametrize("ip", [*BAD_IPS, "0.0.0.0", "127.0.0.1", "::1", "255.255.255.255"])
def test_invalid_conversion_client_ip_is_dropped_and_counted(ip):
    """A conversion's junk IP is rejected alone (issue 21); engagement IPs still dead-letter."""
    ud = {**conversion()["user_data"], "client_ip_address": ip}
    rec = parse_conversion(raw(conversion(user_data=ud)))
    assert rec.user_data["client_ip_address"] is None
    assert [r.field for r in rec.rejected] == ["client_ip_address"]
    assert rec.user_data["em"] == HEX_A


@pytest.mark.parametrize(("topic", "name"), IP_FIELDS)
@pytest.mark.parametrize("ip", GOOD_IPS)
def test_valid_ips_parse(topic, name, ip):
    parse, example, _, _ = TOPICS[topic]
    assert getattr(parse(raw(example(**{name: ip}))), name) == ip


def test_valid_conversion_client_ip_parses_in_canonical_form():
    canonical = {"::ffff:10.0.0.1": "10.0.0.1", " 2001:DB8::1 ": "2001:db8::1"}
    for ip in [g for g in GOOD_IPS if g != "::1"] + list(canonical):
        ud = {**conversion()["user_data"], "client_ip_address": ip}
        got = parse_conversion(raw(conversion(user_data=ud))).user_data["client_ip_address"]
        assert got == canonical.get(ip, ip)


# --- hashing at ingestion ----------------------------------------------------------------------


EMAILS = [
    (" Ann.Lee@Example.COM ", "ann.lee@example.com"),
    ("bob+ads@mail.example.org", "bob+ads@mail.example.org"),
    ("CAROL@X.IO", "carol@x.io"),
]
PHONES = [
    ("+1 (555) 010-0199", "15550100199"),
    ("555.010.0199", "5550100199"),
    (" +44 20 7946 0958 ", "442079460958"),
    (15550100199, "15550100199"),
]


@pytest.mark.parametrize(("given", "normalized"), EMAILS)
def test_identity_raw_email_is_hashed_normalized(given, normalized):
    rec = parse_identity(raw(identity(em=given)))
    assert rec.em == sha(normalized)
    assert "@" not in repr(rec)


@pytest.mark.parametrize(("given", "normalized"), PHONES)
def test_identity_raw_phone_is_hashed_digits_only(given, normalized):
    rec = parse_identity(raw(identity(ph=given)))
    assert rec.ph == sha(normalized)
    assert str(given).strip() not in repr(rec) and normalized not in repr(rec)


@pytest.mark.parametrize(("given", "normalized"), EMAILS)
def test_conversion_raw_email_is_hashed_normalized(given, normalized):
    ud = {**conversion()["user_data"], "em": given}
    rec = parse_conversion(raw(conversion(user_data=ud)))
    assert rec.user_data["em"] == sha(normalized)
    assert "@" not in repr(rec)


@pytest.mark.parametrize(("given", "normalized"), PHONES)
def test_conversion_raw_phone_is_hashed_digits_only(given, normalized):
    ud = {**conversion()["user_data"], "ph": given}
    rec = parse_conversion(raw(conversion(user_data=ud)))
    assert rec.user_data["ph"] == sha(normalized)
    assert normalized not in repr(rec)


def test_identity_and_conversion_hash_the_same_person_to_the_same_value():
    ident = parse_identity(raw(identity(em="Ann@X.com", ph="+1 555 010 0199")))
    ud = {**conversion()["user_data"], "em": " ann@x.com", "ph": "15550100199"}
    conv = parse_conversion(raw(conversion(user_data=ud)))
    assert (ident.em, ident.ph) == (conv.user_data["em"], conv.user_data["ph"])


@pytest.mark.parametrize("name", ["em", "ph", "device_id"])
def test_identity_hashes_pass_through_lowercased(name):
    assert getattr(parse_identity(raw(identity(**{name: HEX_UPPER}))), name) == HEX_UPPER.lower()


@pytest.mark.parametrize("name", ["em", "ph", "external_id", "device_id"])
def test_conversion_hashes_pass_through_lowercased(name):
    ud = {**conversion()["user_data"], name: HEX_UPPER}
    assert parse_conversion(raw(conversion(user_data=ud))).user_data[name] == HEX_UPPER.lower()


@pytest.mark.parametrize("topic", ["impressions", "clicks", "identity"])
def test_device_id_that_is_not_a_hash_is_hashed_trimmed_lowercased(topic):
    parse, example, _, _ = TOPICS[topic]
    assert parse(raw(example(device_id=" Dev-ABC-123 "))).device_id == sha("dev-abc-123")
    assert parse(raw(example(device_id=HEX_UPPER))).device_id == HEX_UPPER.lower()


def test_conversion_device_id_that_is_not_a_hash_is_hashed_trimmed_lowercased():
    ud = {**conversion()["user_data"], "device_id": " CRM-42 "}
    assert parse_conversion(raw(conversion(user_data=ud))).user_data["device_id"] == sha("crm-42")


def test_conversion_external_id_is_hashed_trimmed_as_sent_not_lowercased():
    ud = {**conversion()["user_data"], "external_id": " CRM-42 "}
    assert parse_conversion(raw(conversion(user_data=ud))).user_data["external_id"] == sha("CRM-42")


def test_a_phone_without_digits_is_dropped_not_forwarded():
    assert parse_identity(raw(identity(ph="n/a"))).ph is None


def test_unknown_user_data_fields_are_dropped():
    ud = {**conversion()["user_data"], "fn": "ann", "email": "ann@x.com", "phone": "5550100199"}
    rec = parse_conversion(raw(conversion(user_data=ud)))
    assert set(rec.user_data) == set(USER_DATA_FIELDS)
    assert "ann" not in repr(rec) and "5550100199" not in repr(rec)


def test_unknown_top_level_fields_are_ignored():
    rec = parse_identity(raw(identity(email="ann@x.com", phone="+1 555 010 0199")))
    assert "ann@x.com" not in repr(rec) and "555" not in repr(rec)


def test_reason_is_the_first_word_of_the_message():
    with pytest.raises(Invalid) as info:
        parse_impression(raw(impression(ts="soon")))
    assert str(info.value).startswith("schema")
    assert isinstance(info.value, ValueError)


def test_a_huge_or_deep_value_is_refused_before_it_is_parsed():
    from convstream.core.records import MAX_VALUE_BYTES

    huge = b'{"user_id":"u1","ts":1767571200000,"pad":"' + b"x" * MAX_VALUE_BYTES + b'"}'
    with pytest.raises(Invalid) as exc:
        parse_identity(huge)
    assert exc.value.reason == "too_large"
    deep = b'{"user_id":"u1","ts":1767571200000,"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(Invalid) as exc:
        parse_identity(deep)  # 20 KB: under the size cap, over orjson's depth cap
    assert exc.value.reason == "invalid_json"
