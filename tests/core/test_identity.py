from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convstream.core.identity import (
    DETERMINISTIC_KINDS,
    EMAIL_PLACEHOLDER_LOCALS,
    KIND_PRIORITY,
    KIND_RANK,
    PROBABILISTIC_KINDS,
    REDACTED,
    USER_DATA_FIELDS,
    conversion_identifiers,
    engagement_identifiers,
    hash_email,
    hash_generic,
    hash_phone,
    hash_user_data,
    is_sha256_hex,
    kind_of,
    normalize_email,
    normalize_ip,
    normalize_phone,
    redact_pii,
    sha256_hex,
    ua_family,
    ua_hash,
    valid_ip,
)

H = hashlib.sha256(b"ann@x.com").hexdigest()
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)

# Placeholder addresses (noemail@..., test@...) are junk by design: tests/core/test_junk.py.
emails = st.emails().filter(lambda e: e.rsplit("@", 1)[0].lower() not in EMAIL_PLACEHOLDER_LOCALS)
# As people write them: optional +, groups of digits, at most a few separators in a row.
written_phones = st.from_regex(
    r"\+?\(?[0-9]{1,4}\)?(( - |[ .\-]|\) )?[0-9]{2,4}){2,4}", fullmatch=True
).filter(lambda p: len(normalize_phone(p)) >= 7)
# Plausible numbers: 7 to 15 digits (E.164) and not one digit repeated (junk: test_junk.py).
phones = st.from_regex(r"\+?[0-9][0-9 ()\-.]{6,18}[0-9]", fullmatch=True).filter(
    lambda p: (
        7 <= len(normalize_phone(p)) <= 15
        and len(set(normalize_phone(p))) > 1
        and normalize_phone(p) not in "1234567890123456789"
    )
)


# --- hashing ---------------------------------------------------------------------------------


def test_sha256_hex_is_hashlib():
    assert sha256_hex("ann@x.com") == H


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (H, True),
        (H.upper(), True),
        (H[:-1], False),
        (H + "0", False),
        ("g" * 64, False),
        (" " + H, False),
        (None, False),
        (123, False),
    ],
)
def test_is_sha256_hex(value, expected):
    assert is_sha256_hex(value) is expected


@pytest.mark.parametrize("raw", ["ann@x.com", " Ann@X.com", "ANN@X.COM\t", "\n ann@x.COM  "])
def test_email_variants_hash_alike(raw):
    assert normalize_email(raw) == "ann@x.com"
    assert hash_email(raw) == H


@pytest.mark.parametrize(
    "raw",
    ["+1 (555) 010-0199", "1-555-010-0199", "1.555.010.0199", "15550100199", " +15550100199 "],
)
def test_phone_variants_hash_alike(raw):
    assert normalize_phone(raw) == "15550100199"
    assert hash_phone(raw) == sha256_hex("15550100199")


def test_phone_as_int_is_hashed_as_digits():
    assert hash_phone(15550100199) == sha256_hex("15550100199")


@pytest.mark.parametrize("fn", [hash_email, hash_phone, hash_generic])
@pytest.mark.parametrize("empty", [None, "", "   ", "\t\n"])
def test_empty_hashes_to_none(fn, empty):
    assert fn(empty) is None


def test_phone_without_digits_is_none():
    assert hash_phone("n/a") is None
    assert hash_phone("() -") is None


@pytest.mark.parametrize("fn", [hash_email, hash_phone, hash_generic])
def test_hash_passthrough_lowercases(fn):
    assert fn(H.upper()) == H
    assert fn(f"  {H}  ") == H


def test_hash_generic_normalizes_case_and_space():
    assert hash_generic(" Device-ABC ") == sha256_hex("device-abc")


@given(emails)
def test_hash_email_idempotent(email):
    once = hash_email(email)
    assert is_sha256_hex(once) and once == once.lower()
    assert hash_email(once) == once
    assert hash_email(email.upper()) == once


@given(phones)
def test_hash_phone_idempotent(phone):
    once = hash_phone(phone)
    assert once == sha256_hex(normalize_phone(phone))
    assert hash_phone(once) == once


@given(st.text())
def test_hash_generic_idempotent(text):
    once = hash_generic(text)
    assert once is None or hash_generic(once) == once


# --- hash_user_data --------------------------------------------------------------------------


def test_hash_user_data_shape_and_values():
    ud = hash_user_data(
        {
            "em": " Ann@X.com ",
            "ph": "+1 555 010 0199",
            "external_id": "CUST-1",
            "device_id": "Dev-9",
            "click_id": " clk-1 ",
            "client_ip_address": " 1.2.3.4 ",
            "client_user_agent": "",
            "fn": "ann",
            "ln": "lee",
        }
    )
    assert list(ud) == list(USER_DATA_FIELDS)
    assert ud == {
        "em": H,
        "ph": sha256_hex("15550100199"),
        "external_id": sha256_hex("CUST-1"),  # as sent: neither platform lowercases it
        "device_id": sha256_hex("dev-9"),
        "click_id": "clk-1",
        "client_ip_address": "1.2.3.4",
        "client_user_agent": None,
    }


def test_hash_user_data_returns_new_dict_and_handles_none():
    src = {"em": "ann@x.com"}
    out = hash_user_data(src)
    assert src == {"em": "ann@x.com"} and out is not src
    assert hash_user_data(None) == dict.fromkeys(USER_DATA_FIELDS)


def test_hash_user_data_list_keeps_every_usable_value_in_order():
    assert hash_user_data({"em": [None, " ", "Ann@x.com", "b@y.com", "ann@x.com"]})["em"] == [
        H,
        sha256_hex("b@y.com"),
    ]
    assert hash_user_data({"em": [None, "Ann@x.com"]})["em"] == H
    assert hash_user_data({"ph": ["n/a"]})["ph"] is None


@given(email=emails, phone=phones, ext=st.text(min_size=2), dev=st.text(min_size=2))
def test_hash_user_data_never_keeps_a_raw_value(email, phone, ext, dev):
    ud = hash_user_data({"em": email, "ph": phone, "external_id": ext, "device_id": dev})
    raws = {
        email,
        phone,
        ext,
        dev,
        email.strip().lower(),
        normalize_phone(phone),
        ext.strip().lower(),
        dev.strip().lower(),
    }
    for field in ("em", "ph", "external_id", "device_id"):
        value = ud[field]
        assert value is None or is_sha256_hex(value)
        assert value not in raws or is_sha256_hex(value)
    assert ud["em"] == sha256_hex(email.strip().lower())
    assert ud["ph"] == sha256_hex(normalize_phone(phone))
    blob = json.dumps(ud)
    assert email not in blob and phone not in blob


# --- IP and user agent -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1.2.3.4", True),
        ("255.255.255.255", True),
        ("::1", True),
        ("2001:db8::1", True),
        ("256.0.0.1", False),
        ("1.2.3", False),
        ("abc", False),
        ("", False),
        (None, False),
    ],
)
def test_valid_ip(value, ok):
    assert valid_ip(value) is ok


def test_normalize_ip_canonical_forms():
    assert normalize_ip("2001:DB8:0:0::1") == "2001:db8::1"
    assert normalize_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalize_ip(" 10.0.0.1 ") == "10.0.0.1"


def test_ua_hash_is_sha1_prefix():
    assert ua_hash("UA") == hashlib.sha1(b"UA").hexdigest()[:16]


@pytest.mark.parametrize(
    ("ua", "family"),
    [
        (CHROME_ANDROID, "chrome/android"),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            "safari/ios",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) CriOS/120.0 Mobile/15E148 Safari/604.1",
            "chrome/ios",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
            "firefox/windows",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0 Safari/537.36 Edg/120.0",
            "edge/windows",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
            "Gecko) Version/17.1 Safari/605.1.15",
            "safari/macos",
        ),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "firefox/linux"),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
        ("curl/8.4.0", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_ua_family(ua, family):
    assert ua_family(ua) == family


def test_ua_family_ignores_versions():
    assert ua_family(CHROME_ANDROID) == ua_family(CHROME_ANDROID.replace("120.0.0.0", "99.1"))


# --- identifier keys -------------------------------------------------------------------------


def test_kind_constants():
    assert DETERMINISTIC_KINDS == ("click", "em", "ph", "dev", "ext")
    assert PROBABILISTIC_KINDS == ("ipua", "ip")
    assert KIND_PRIORITY == ("click", "em", "ph", "dev", "ext", "ipua", "ip")
    assert sorted(["ip", "em", "click", "ipua"], key=KIND_RANK.__getitem__) == [
        "click",
        "em",
        "ipua",
        "ip",
    ]


def test_engagement_identifiers_keys_match_design():
    keys = engagement_identifiers(
        "1.2.3.4", "UA", "Dev-1", click_id="clk", em="Ann@x.com", ph="+1 555 0100"
    )
    assert keys == [
        ("click", "click:clk"),
        ("em", f"em:{H}"),
        ("ph", f"ph:{sha256_hex('15550100')}"),
        ("dev", f"dev:{sha256_hex('dev-1')}"),
        ("ipua", f"ipua:1.2.3.4|{ua_hash('UA')}"),
        ("ip", "ip:1.2.3.4"),
    ]
    assert all(kind_of(key) == kind for kind, key in keys)


def test_engagement_identifiers_skip_missing_and_invalid():
    assert engagement_identifiers(None, "UA", None) == []
    assert engagement_identifiers("not-an-ip", "UA", " ") == []
    assert engagement_identifiers("1.2.3.4", None, None) == [("ip", "ip:1.2.3.4")]


def test_conversion_identifiers_all_kinds():
    ud = hash_user_data(
        {
            "em": "ann@x.com",
            "ph": "5550100",
            "external_id": "u1",
            "device_id": "d1",
            "click_id": "clk",
            "client_ip_address": "1.2.3.4",
            "client_user_agent": "UA",
        }
    )
    keys = conversion_identifiers("adv-7", ud)
    assert list(keys) == list(KIND_PRIORITY)
    assert keys["ext"] == f"ext:adv-7:{sha256_hex('u1')}"
    assert keys["ipua"] == f"ipua:1.2.3.4|{ua_hash('UA')}"
    assert keys["ip"] == "ip:1.2.3.4"


def test_conversion_identifiers_ipua_needs_both():
    assert conversion_identifiers("a", {"client_user_agent": "UA"}) == {}
    assert conversion_identifiers("a", {"client_ip_address": "1.2.3.4"}) == {"ip": "ip:1.2.3.4"}


def test_conversion_and_engagement_keys_meet():
    """The same person seen on a click and converting produces the same keys."""
    seen = dict(engagement_identifiers(" 1.2.3.4", "UA ", "DEV", click_id="c", em="ANN@x.com"))
    conv = conversion_identifiers(
        "adv",
        hash_user_data(
            {
                "em": "ann@x.com ",
                "device_id": "dev",
                "click_id": "c",
                "client_ip_address": "1.2.3.4",
                "client_user_agent": "UA",
            }
        ),
    )
    assert {k: conv[k] for k in seen} == seen


# --- redaction -------------------------------------------------------------------------------


def test_redact_nested_dict():
    payload = {
        "event_id": "ord-1",
        "ts": 1_700_000_000_000,
        "offset": 123456789,
        "value": 12345678.5,
        "user_data": {
            "em": ["Ann@x.com", H],
            "ph": "+1 555 010 0199",
            "phone_number": 5550100199,
            "client_ip_address": "10.0.0.1",
            "external_id": "CUST-1",
        },
        "note": "ring me on 555-010-0199, mail ann@x.com",
        "rows": [[1_700_000_000_000, "click", "k1"], {"x": 5550100199}],
        "at": "2024-01-31T12:34:56.789Z",
    }
    original = json.loads(json.dumps(payload))
    out = redact_pii(payload)
    assert payload == original  # input untouched
    assert out["user_data"] == {
        "em": [REDACTED, H],
        "ph": REDACTED,
        "phone_number": REDACTED,
        "client_ip_address": "10.0.0.1",
        "external_id": REDACTED,
    }
    assert out["note"] == f"ring me on {REDACTED}, mail {REDACTED}"
    assert out["rows"] == [[1_700_000_000_000, "click", "k1"], {"x": REDACTED}]
    for key in ("event_id", "ts", "offset", "value", "at"):
        assert out[key] == payload[key]


def test_redact_keeps_hashes_and_keys_text():
    keys = dict(engagement_identifiers("192.168.100.200", "UA", None, em=H))
    out = redact_pii({"keys": keys, "ann@x.com": 1})
    assert out["keys"] == keys
    assert out == {"keys": keys, REDACTED: 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"em": "ann@x.com", "ts": 1700000000000, "ph": "555 0100", broken',
            '{"em": "[redacted]", "ts": 1700000000000, "ph": "[redacted]", broken',
        ),
        ("user ann.lee+ads@mail.example.co.uk called", "user [redacted] called"),
        ("tel: +44 20 7946 0958.", "tel: [redacted]."),
        ("(555) 010-0199", REDACTED),
        ("encoded ann%40x.com", f"encoded {REDACTED}"),
        (
            '"revision": 12345678901, "id": 12345678901',
            f'"revision": 12345678901, "id": {REDACTED}',
        ),
        (
            "at 2024-01-31T12:00:00+01:00 ip 203.0.113.200",
            "at 2024-01-31T12:00:00+01:00 ip 203.0.113.200",
        ),
        (f'"em": "{H}"', f'"em": "{H}"'),
        ("id 550e8400-e29b-41d4-a716-446655440000", "id 550e8400-e29b-41d4-a716-446655440000"),
        ("pi 3.14159265 or 555.0100", f"pi {REDACTED} or {REDACTED}"),
        ('"score": 0.123456789', '"score": 0.123456789'),
        ("short 123456 kept", "short 123456 kept"),
        ('{"Work_Email": "x", "PH": 12345}', '{"Work_Email": "[redacted]", "PH": "[redacted]"}'),
    ],
)
def test_redact_text(text, expected):
    assert redact_pii(text) == expected


def test_redact_bytes_not_json_not_utf8():
    raw = b"\xff\xfe garbage ann@x.com 5550100199 \x00"
    out = redact_pii(raw)
    assert isinstance(out, bytes)
    assert out == b"\xff\xfe garbage [redacted] [redacted] \x00"


@given(email=emails, phone=written_phones)
def test_redact_catches_generated_pii(email, phone):
    text = f"x {email} y {phone} z"
    out = redact_pii(text)
    assert email not in out
    assert normalize_phone(phone) not in normalize_phone(out)
    nested = redact_pii({"a": [{"b": text}], "em": email, "ph": phone})
    assert email not in json.dumps(nested) and phone not in json.dumps(nested)
