"""Redaction follows the fields (issue 21 item 4, issue 23 item 7): whatever the nesting, the
encoding (single or double JSON, ASCII-escaped, URL-encoded) or where the payload was cut, no
raw value of a PII field survives ``redact_pii``.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convstream.core.identity import REDACTED, redact_pii, sha256_hex

# Letters that spell nothing the payload's own keys and words contain.
_NAME_LETTERS = "bcdfghjkmnpqvwxzäöüéñøçß"
names = st.text(alphabet=_NAME_LETTERS, min_size=6, max_size=10).map(str.capitalize)
_DOMAIN_LETTERS = "abcdefghijklmnopqrstuvwxyzäöüéñ"
emails = st.builds(
    "{}.{}@{}.{}".format,
    st.text(alphabet="abcdefghjkmnpqrstuvwxyz", min_size=3, max_size=8),
    st.text(alphabet="abcdefghjkmnpqrstuvwxyz0123456789", min_size=2, max_size=6),
    st.text(alphabet=_DOMAIN_LETTERS, min_size=3, max_size=8),
    st.sampled_from(["com", "de", "co.uk", "рф", "中国", "io"]),
)
_SEPARATORS = [" ", "-", ".", "/", "\u00a0", "\u2013", "\u2014", "  ", " - ", ") "]
phones = st.builds(
    lambda prefix, cc, groups, seps: (
        prefix + cc + "".join(sep + g for sep, g in zip(seps, groups, strict=False))
    ),
    st.sampled_from(["+", "00", "", "+(", "0"]),
    st.sampled_from(["1", "44", "33", "49", "353", "91"]),
    st.lists(st.from_regex(r"[1-9][0-9]{2,3}", fullmatch=True), min_size=3, max_size=3),
    st.lists(st.sampled_from(_SEPARATORS), min_size=3, max_size=3),
)
uuids = st.uuids().map(lambda u: str(u).upper())
ids = st.from_regex(r"cust[A-Z]{2}[0-9]{6}", fullmatch=True)


@st.composite
def payloads(draw):
    """A CAPI-shaped event with raw values, and the raw values that must not survive."""
    values = {
        "em": draw(emails),
        "ph": draw(phones),
        "fn": draw(names),
        "ln": draw(names),
        "ct": draw(names),
        "st": draw(names),
        "external_id": draw(ids),
        "madid": draw(uuids),
        "hashed_maids": draw(uuids),
        "fbp": f"fb.1.{draw(st.integers(10**12, 2 * 10**12))}.{draw(st.integers(10**9, 10**10))}",
        "db": draw(st.from_regex(r"19[5-9][0-9](0[1-9]|1[0-2])(0[1-9]|1[0-9])", fullmatch=True)),
        "zp": draw(st.from_regex(r"[1-9][0-9]{4}", fullmatch=True)),
    }
    user_data = {k: [v, sha256_hex(v)] if draw(st.booleans()) else v for k, v in values.items()}
    user_data["ge"] = ["f"]
    user_data["country"] = ["us"]
    user_data["client_ip_address"] = "203.0.113.9"
    free_email, free_phone = draw(emails), draw(phones)
    event = {
        "event_name": "checkout",
        "event_time": 1767571200,
        "event_id": draw(st.sampled_from([free_email, "ord-1"])),
        "user_data": user_data,
        "custom_data": {"value": "72.39", "note": f"call {free_phone} or mail {free_email}"},
    }
    if draw(st.booleans()):
        event = {"advertiser_id": "adv-1", "data": [event]}
    if draw(st.booleans()):
        event = {"topic": "conversions", "value": event}  # nested one level deeper
    raws = [*values.values(), free_email, free_phone]
    return event, raws


def encodings(event) -> dict[str, str]:
    once = json.dumps(event)  # ensure_ascii: non-ASCII becomes \uXXXX escapes
    return {
        "json": once,
        "json-utf8": json.dumps(event, ensure_ascii=False),
        "orjson": orjson.dumps(event).decode(),
        "double": json.dumps(once),
        "double-utf8": json.dumps(json.dumps(event, ensure_ascii=False), ensure_ascii=False),
        "url": urllib.parse.quote(json.dumps(event, ensure_ascii=False)),
    }


def visible_forms(raw: str) -> set[str]:
    """How a raw value can be read in a text: as it is, JSON-escaped, URL-encoded."""
    return {raw, json.dumps(raw)[1:-1], urllib.parse.quote(raw), raw.lower()}


def leaks(text: str, raws: list[str]) -> list[str]:
    return [form for raw in raws for form in visible_forms(raw) if form in text]


@given(payloads(), st.sampled_from(sorted(encodings({}))), st.floats(0, 1))
def test_no_raw_value_survives_in_any_encoding_cut_anywhere(case, encoding, cut):
    event, raws = case
    data = encodings(event)[encoding].encode("utf-8")
    data = data[: int(len(data) * cut)] if cut < 1 else data
    out = redact_pii(data).decode("utf-8", "surrogateescape")
    assert not leaks(out, raws), (encoding, out)


@given(payloads())
def test_no_raw_value_survives_in_the_object(case):
    event, raws = case
    out = json.dumps(redact_pii(event), ensure_ascii=False)
    assert not leaks(out, raws), out


@given(payloads())
def test_hashes_under_pii_keys_are_kept(case):
    event, _ = case
    out = json.dumps(redact_pii(event))
    hashes = re.findall(r"[0-9a-f]{64}", json.dumps(event))
    assert hashes == re.findall(r"[0-9a-f]{64}", out)


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ('{"note": "ann\\u0040example.com"}', "ann"),
        ('{"note": "ann\\\\u0040example.com"}', "ann"),
        ('{"note": "ann%40example.com"}', "ann"),
        ('{"note": "jos\\u00e9@ex\\u00e4mple.de"}', "jos"),
        ('{"note": "josé@exämple.de"}', "jos"),
        ('{"note": "+44/20/7946/0958"}', "7946"),
        ('{"note": "+44\\u00a020\\u00a07946\\u00a00958"}', "7946"),
        ('{"note": "+44 20 7946\\u20130958"}', "7946"),
        ('{"note": "tel%3A%2B44%2020%207946%200958"}', "7946"),
        ('{"fn": ["Ann", "Bea"], "ts": 1}', "Bea"),
        ('{"external_id": ["Cust-42"]}', "Cust-42"),
        ('{"madid": "6D92078A-8246-4BA4-AE5B-76104861E7DC"}', "6D92078A"),
        ('{"hashed_maids": ["6D92078A-8246-4BA4-AE5B-76104861E7DC"]}', "6D92078A"),
        ('{"fbp": "fb.1.1558571054389.1098115397"}', "1098115397"),
        ('"{\\"fn\\": \\"Annabel\\"}"', "Annabel"),
        ('{"ph": 4.42079460958e11}', "4.42079460958e11"),
        ('{"fn": "Annab', "Annab"),
        ('{"fn": ["Annabel", "Bea', "Bea"),
    ],
)
def test_known_leaks_are_closed(text, gone):
    out = redact_pii(text)
    assert gone not in out and REDACTED in out, out


def test_floats_and_nested_values_under_pii_keys_are_redacted_in_objects():
    out = redact_pii({"ph": 442079460958.0, "em": {"value": "ann"}, "x": 15550100199.0})
    assert out == {"ph": REDACTED, "em": {"value": REDACTED}, "x": REDACTED}


def test_what_redaction_keeps():
    payload = {
        "ts": 1767571200000,
        "event_time": 1767571200,
        "value": 72.39,
        "event_id": "ord-0123456789abcdef",
        "client_ip_address": "203.0.113.9",
        "em": [sha256_hex("a@b.co")],
        "when": "2026-01-05T00:00:00Z",
        "id": "6d92078a-8246-4ba4-ae5b-76104861e7dc",
    }
    assert redact_pii(payload) == payload
