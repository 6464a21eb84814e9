"""Property tests of ingestion: any bytes in, a record or ``Invalid(reason)`` out, and no raw PII.

Malformed JSON, wrong types, missing fields, huge strings, unknown event names, timestamps far
from now, invalid IPs and raw emails/phones are thrown at every ``parse_*``; the dead-letter path
(``Runtime.dead_letter``) and ``redact_pii`` get the same payloads.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from convstream.core.identity import REDACTED, USER_DATA_FIELDS, is_sha256_hex, redact_pii
from convstream.core.records import (
    MAX_TS_MS,
    MIN_TS_MS,
    Invalid,
    parse_click,
    parse_conversion,
    parse_feedback,
    parse_identity,
    parse_impression,
)
from convstream.stream.app import Runtime
from convstream.stream.settings import Settings

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
PARSERS = {
    "impressions": parse_impression,
    "clicks": parse_click,
    "identity": parse_identity,
    "conversions": parse_conversion,
    "feedback": parse_feedback,
}
TOPICS = sorted(PARSERS)
# Reasons only the agents give (they need the partition's event-time clock).
AGENT_REASONS = {"too_old", "future_ts"}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Fewer examples and no shrinking for the slowest property (free text around every separator).
NO_SHRINK = settings(FUZZ, max_examples=60, phases=[Phase.explicit, Phase.generate])


def documented_reasons() -> set[str]:
    """The dead-letter vocabulary as docs/contract.md lists it."""
    text = CONTRACT.read_text()
    start = text.index("Validation (reason in dead-letter)")
    paragraph = text[start : text.index("\n\n", start)]
    return set(re.findall(r"`([a-z_]+)`", paragraph))


VOCABULARY = documented_reasons()
PARSER_REASONS = VOCABULARY - AGENT_REASONS


def test_the_documented_vocabulary_is_the_one_the_pipeline_uses():
    assert VOCABULARY == {
        "invalid_json", "schema", "missing_field", "too_long", "too_large", "bad_timestamp",
        "invalid_ip", "too_old", "future_ts",
    }  # fmt: skip


# --- strategies --------------------------------------------------------------------------------

DROP = object()
# Ids never hold 7+ digit runs, so a planted phone found in the output is the phone.
SAFE_ID = st.from_regex(r"[a-zA-Z][a-zA-Z_.:\-]{0,7}[0-9]{0,3}", fullmatch=True)
# Longer than every field limit (1024, 2048); long runs of word characters stay short because
# redacting them is quadratic today (test_redact_pii_time_is_linear_in_the_text).
HUGE = st.sampled_from(["x" * 1025, "Mozilla/5.0 " * 200, "ab " * 1000])
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=24),
    HUGE,
)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
GOOD_TS = st.integers(MIN_TS_MS, MAX_TS_MS - 1)
ANY_TS = st.one_of(
    GOOD_TS,
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1_767_571_200, 1_767_571_200_000_000, 0, -1, MAX_TS_MS, MIN_TS_MS - 1]),
    st.text(max_size=20),
)
IP = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"\d{1,4}(\.\d{1,4}){2,4}", fullmatch=True),
    st.text(max_size=20),
    st.none(),
)
EVENT_NAME = st.one_of(
    st.sampled_from(["Purchase", "Lead", "AddToCart"]), st.text(min_size=1, max_size=80)
)


@st.composite
def phones(draw: Any) -> str:
    """A raw phone as people type it: 7 to 12 digits, optional +country, grouped or not."""
    digits = draw(st.from_regex(r"[1-9][0-9]{6,11}", fullmatch=True))
    style = draw(st.sampled_from(["bare", "plus", "dashes", "dots", "spaces", "parens"]))
    if style == "bare":
        # 12-digit numbers from 946684800000 pass for epoch milliseconds today: pinned apart in
        # test_redact_pii_removes_a_bare_twelve_digit_international_number.
        return digits if not 946_684_800_000 <= int(digits) < 10**12 else "+" + digits
    if style == "plus":
        return "+" + digits
    if style == "parens" and len(digits) >= 10:
        return f"+{digits[:-10] or '1'} ({digits[-10:-7]}) {digits[-7:-4]}-{digits[-4:]}"
    sep = {"dashes": "-", "dots": ".", "spaces": " "}.get(style, " ")
    head = digits[:-4]
    groups = [head[i : i + 3] for i in range(0, len(head), 3)] + [digits[-4:]]
    return sep.join(groups)  # 555.010.0199, never an IPv4-like 100.000.000.0


EMAILS = st.emails().filter(lambda e: len(e) <= 200)
PHONES = phones()


@st.composite
def raw_pii(draw: Any) -> tuple[Any, list[str]]:
    """A raw email or phone as a field value (phones sometimes as JSON numbers), and the
    strings that must never come out (as given and normalized)."""
    if draw(st.booleans()):
        email = draw(EMAILS)
        given = draw(st.sampled_from([email, email.upper(), f"  {email} "]))
        return given, [given.strip(), email.lower()]
    phone = draw(PHONES)
    if phone.isdigit() and draw(st.booleans()):
        return int(phone), [phone]
    return phone, [phone]


BAD_SOURCES = ["server", ""]


def leaked(raw: str, text: str) -> bool:
    """``raw`` occurs in ``text`` as itself, not as the digits of a longer number."""
    return re.search(rf"(?<![0-9]){re.escape(raw)}(?![0-9])", text) is not None


def field(good: Any) -> Any:
    """Mostly a good value, sometimes dropped, null, or any JSON value at all."""
    return st.one_of(good, good, good, st.just(DROP), st.none(), JSON_ANY)


def _build(draw: Any, fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, strategy in fields.items():
        value = draw(strategy)
        if value is not DROP:
            out[name] = value
    return out


@st.composite
def records(draw: Any, topic: str, *, mutate: bool = True) -> tuple[dict[str, Any], list[str]]:
    """A record of ``topic`` (mutated unless told not to) and every raw PII string planted."""
    wrap = field if mutate else (lambda s: s)
    planted: list[str] = []

    def pii_or(good: Any) -> Any:
        value, raw = draw(raw_pii())
        if draw(st.booleans()):
            planted.extend(raw)
            return st.just(value)
        return good

    engagement = {
        "event_id": wrap(SAFE_ID),
        "ts": wrap(ANY_TS if mutate else GOOD_TS),
        "user_id": wrap(SAFE_ID),
        "advertiser_id": wrap(SAFE_ID),
        "campaign_id": wrap(SAFE_ID),
        "ad_id": wrap(SAFE_ID),
        "ip": wrap(IP if mutate else st.ip_addresses().map(str)),
        "user_agent": wrap(st.one_of(st.text(max_size=40), HUGE) if mutate else SAFE_ID),
        "device_id": wrap(st.one_of(SAFE_ID, st.just("ab" * 32))),
    }
    if topic == "impressions":
        value = _build(draw, engagement)
    elif topic == "clicks":
        value = _build(draw, engagement)
        same = not mutate or draw(st.booleans())
        click_id = value.get("event_id", DROP) if same else draw(wrap(SAFE_ID))
        if click_id is not DROP:
            value["click_id"] = click_id
    elif topic == "identity":
        value = _build(
            draw,
            {
                "user_id": wrap(SAFE_ID),
                "ts": wrap(ANY_TS if mutate else GOOD_TS),
                "em": wrap(pii_or(st.just("cd" * 32))),
                "ph": wrap(pii_or(st.none())),
                "device_id": wrap(SAFE_ID),
                "ip": wrap(IP if mutate else st.ip_addresses().map(str)),
                "user_agent": wrap(SAFE_ID),
            },
        )
    elif topic == "conversions":
        user_data = _build(
            draw,
            {
                "em": wrap(pii_or(st.just("ef" * 32))),
                "ph": wrap(pii_or(st.none())),
                "external_id": wrap(SAFE_ID),
                "click_id": wrap(SAFE_ID),
                "client_ip_address": wrap(IP if mutate else st.ip_addresses().map(str)),
                "client_user_agent": wrap(SAFE_ID),
                "device_id": wrap(SAFE_ID),
            },
        )
        value = _build(
            draw,
            {
                "event_id": wrap(SAFE_ID),
                "event_name": wrap(EVENT_NAME if mutate else SAFE_ID),
                "source": wrap(st.sampled_from(["capi", "pixel", "CAPI", *(BAD_SOURCES * mutate)])),
                "ts": wrap(ANY_TS if mutate else GOOD_TS),
                "advertiser_id": wrap(SAFE_ID),
                "value": wrap(st.one_of(st.floats(allow_nan=False), st.integers(0, 10**6))),
                "currency": wrap(st.sampled_from(["EUR", "USD", *(["TOOLONGCUR"] * mutate)])),
                "user_data": wrap(st.just(user_data)),
            },
        )
    else:
        value = _build(
            draw,
            {
                "advertiser_id": wrap(SAFE_ID),
                "event_id": wrap(SAFE_ID),
                "event_name": wrap(EVENT_NAME if mutate else SAFE_ID),
                "user_id": wrap(SAFE_ID),
                "ts": wrap(ANY_TS if mutate else GOOD_TS),
            },
        )
    # Raw PII under names the contract does not know: dropped by the parser, redacted by DLQ.
    for name in draw(st.lists(st.sampled_from(["email", "phone", "fn", "note"]), max_size=2)):
        pii, raw = draw(raw_pii())
        value[name] = pii
        planted.extend(raw)
    return value, planted


@st.composite
def payloads(draw: Any) -> tuple[str, bytes | str | None, list[str]]:
    """(topic, raw message value, planted raw PII): JSON, broken JSON, or no JSON at all."""
    topic = draw(st.sampled_from(TOPICS))
    value, planted = draw(records(topic))
    body = orjson.dumps(value)
    how = draw(
        st.sampled_from(["json", "json", "json", "str", "cut", "splice", "bytes", "other", "none"])
    )
    if how == "str":
        return topic, body.decode(), planted
    if how == "cut":
        return topic, body[: draw(st.integers(0, max(len(body) - 1, 0)))], planted
    if how == "splice":
        at = draw(st.integers(0, len(body)))
        return topic, body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:], planted
    if how == "bytes":
        return topic, draw(st.binary(max_size=64)), []
    if how == "other":
        return topic, orjson.dumps(draw(JSON_ANY)), []
    if how == "none":
        return topic, None, []
    return topic, body, planted


def _hashes_only(rec: Any) -> None:
    """em/ph (and the hashed ids) of a parsed record are null or lowercase SHA-256 hex."""
    if hasattr(rec, "user_data"):
        assert set(rec.user_data) == set(USER_DATA_FIELDS)
        hashed = [rec.user_data[n] for n in ("em", "ph", "external_id", "device_id")]
    else:
        hashed = [getattr(rec, n, None) for n in ("em", "ph", "device_id")]
    for value in hashed:
        assert value is None or (is_sha256_hex(value) and value == value.lower()), value


# --- properties --------------------------------------------------------------------------------


@FUZZ
@given(payloads())
@example(("conversions", b'{"event_id":"\\ud800"}', []))
@example(("identity", b"[" * 5000 + b"]" * 5000, []))
@example(("clicks", b'{"ts": 1e400}', []))
@example(("impressions", b'{"ts": 123456789012345678901234567890}', []))
@example(("feedback", "\udcff", []))
def test_every_input_parses_or_is_invalid_with_a_documented_reason(case):
    topic, payload, planted = case
    try:
        rec = PARSERS[topic](payload)
    except Invalid as exc:
        assert exc.reason in PARSER_REASONS, exc
        assert str(exc).split(":", 1)[0] == exc.reason
        for raw in planted:
            assert not leaked(raw, str(exc))
        return
    _hashes_only(rec)
    text = repr(rec)
    for raw in planted:
        assert not leaked(raw, text)


@FUZZ
@given(st.sampled_from(TOPICS).flatmap(lambda t: st.tuples(st.just(t), records(t, mutate=False))))
def test_a_parsed_record_never_carries_raw_pii(case):
    topic, (value, planted) = case
    rec = PARSERS[topic](orjson.dumps(value))  # well-formed: must parse
    _hashes_only(rec)
    text = repr(rec)
    assert "@" not in text
    for raw in planted:
        assert not leaked(raw, text)


@FUZZ
@given(payloads())
def test_redact_pii_removes_every_planted_email_and_phone(case):
    _, payload, planted = case
    if payload is None:
        return
    text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
    out = redact_pii(text)
    for raw in planted:
        assert not leaked(raw, out)
    if isinstance(payload, bytes):
        out_bytes = redact_pii(payload).decode("utf-8", "replace")
        for raw in planted:
            assert not leaked(raw, out_bytes)


FREE_TEXT_SEPARATORS = [" ", ": ", ", ", "(", "\n", "\t", "\r\n"]


@NO_SHRINK
@given(PHONES, st.sampled_from(FREE_TEXT_SEPARATORS), st.sampled_from(["note", "user_agent"]))
def test_redact_pii_removes_a_phone_in_free_text_after_any_separator(phone, sep, key):
    text = orjson.dumps({key: f"call Ann{sep}{phone}", "ts": 1_767_571_200_000}).decode()
    assert not leaked(phone, redact_pii(text))


@pytest.mark.parametrize("phone", ["971501234567", "966512345678", "962791234567"])
def test_redact_pii_removes_a_bare_twelve_digit_international_number(phone):
    assert not leaked(phone, redact_pii(f'{{"note": "call {phone}", "x": {phone}}}'))
    assert not leaked(phone, str(redact_pii({"note": f"call {phone}", "x": int(phone)})))
    assert redact_pii('{"ts": 1767571200000, "e": [[1767571200000, "view"]]}') == (
        '{"ts": 1767571200000, "e": [[1767571200000, "view"]]}'
    )


# --- the dead-letter path ----------------------------------------------------------------------


def _dead_letter(topic: str, payload: bytes | str | None) -> dict[str, Any]:
    """Run ``Runtime.dead_letter`` as the agents do and return the record it sends."""
    sent: list[dict[str, Any]] = []
    rt = Runtime(settings=Settings(), app=None)  # type: ignore[arg-type]

    async def send(name: str, key: Any, value: Any, partition: int | None = None) -> None:
        assert name == "dead-letter" and key is None
        sent.append(orjson.loads(orjson.dumps(value)))

    rt.send = send  # type: ignore[method-assign]
    message = SimpleNamespace(topic=topic, partition=2, offset=41, value=payload)
    try:
        PARSERS[topic](payload)
    except Invalid as exc:
        asyncio.run(rt.dead_letter(SimpleNamespace(message=message), exc.reason, str(exc)))
    return sent[0] if sent else {}


@FUZZ
@given(payloads())
def test_a_dead_letter_record_has_coordinates_reason_and_no_planted_pii(case):
    topic, payload, planted = case
    record = _dead_letter(topic, payload)
    if not record:
        return  # it parsed: nothing to park
    assert set(record) == {"topic", "partition", "offset", "reason", "detail", "payload"}
    assert (record["topic"], record["partition"], record["offset"]) == (topic, 2, 41)
    assert record["reason"] in PARSER_REASONS
    text = orjson.dumps(record).decode()
    for raw in planted:
        assert not leaked(raw, text)


@pytest.mark.parametrize("keep", [1, 4])
@pytest.mark.parametrize("email", ["ann.lee@example.com", "Bob_99+ads@mail.example.org"])
def test_a_dead_letter_payload_cut_at_the_limit_leaks_no_part_of_an_email(email, keep):
    from convstream.stream.app import DEAD_LETTER_PAYLOAD_CHARS as LIMIT

    user, domain = email.split("@")
    head = '{"user_id":"u1","ts":1767571200000,"user_agent":"'
    # Pad so that the cut falls ``keep`` characters after the "@".
    room = LIMIT - len(head) - len(user) - 1 - keep
    pad = "M " * (room // 2) + " " * (room % 2)
    payload = f'{head}{pad}{email}"}}'.encode()  # too_long: the user agent is huge
    assert payload.decode()[:LIMIT].endswith(f"{user}@{domain[:keep]}")
    record = _dead_letter("identity", payload)
    assert record["reason"] == "too_long"
    assert f"{user}@{domain[:keep]}" not in record["payload"]
    assert record["payload"].startswith(head)


def test_a_huge_dead_letter_payload_is_cut_before_it_is_redacted(monkeypatch):
    """Issue 23: a 1 MB payload was redacted whole (1-3 s of the event loop), then cut."""
    from convstream.stream import app
    from convstream.stream.app import DEAD_LETTER_PAYLOAD_CHARS as LIMIT

    seen: list[int] = []

    def redact(text):
        seen.append(len(text))
        return redact_pii(text)

    monkeypatch.setattr(app, "redact_pii", redact)
    words = " ".join(f"w{i} ann{i}@example.com +1 555 010 {i:04d}" for i in range(30_000))
    payload = orjson.dumps({"user_id": "u1", "ts": 1767571200000, "note": words})
    assert len(payload) > 1_000_000
    record = _dead_letter("identity", payload)
    assert record["reason"] == "too_large"
    assert seen and max(seen) <= LIMIT
    assert record["payload"].startswith('{"user_id":"u1"')
    assert "@example.com" not in record["payload"]


def test_redacted_payloads_say_so():
    record = _dead_letter("identity", b'{"user_id":"u","ts":1,"em":"ann@x.com","ph":"5550100"}')
    assert record["reason"] == "bad_timestamp"
    assert "ann@x.com" not in record["payload"] and "5550100" not in record["payload"]
    assert REDACTED in record["payload"]


def test_redact_pii_survives_a_very_long_digit_run():
    payload = b'{"user_id":"u1","ts":1767571200000,"user_agent":"' + b"7" * 5000 + b'"}'
    assert b"7" * 5000 not in redact_pii(payload)
    record = _dead_letter("identity", payload)
    assert record["reason"] == "too_long"


@pytest.mark.parametrize("text", ["x" * 16_000, "email" * 3_200], ids=["word-run", "email-run"])
def test_redact_pii_time_is_linear_in_the_text(text):
    import time

    started = time.perf_counter()
    redact_pii(text)
    assert time.perf_counter() - started < 0.2
