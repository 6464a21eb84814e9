"""Junk identifiers: dropped per field with a reason, never hashed into a matching key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convstream.core.identity import (
    JUNK_HASHES,
    MAX_VALUES_PER_FIELD,
    JunkIdentifier,
    Rejection,
    conversion_identifier_keys,
    conversion_identifiers,
    device_id_hash,
    email_hash,
    engagement_identifiers,
    external_id_hash,
    fbc_click_id,
    hash_user_data,
    ip_value,
    normalize_user_data,
    phone_hash,
    sha256_hex,
)


def reason(fn, value) -> str | None:
    try:
        fn(value)
    except JunkIdentifier as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(
    ("fn", "value", "why"),
    [
        (email_hash, "n/a", "placeholder"),
        (email_hash, "NULL", "placeholder"),
        (email_hash, "not-an-email", "invalid_email"),
        (email_hash, "noemail@example.com", "placeholder"),
        (email_hash, sha256_hex(""), "placeholder"),
        (email_hash, sha256_hex("None"), "placeholder"),
        (email_hash, "d41d8cd98f00b204e9800998ecf8427e", "md5"),
        (email_hash, True, "invalid_email"),
        (email_hash, ["a@b.co"], "invalid_email"),
        (phone_hash, "0", "placeholder"),
        (phone_hash, "123", "too_short"),
        (phone_hash, 123, "too_short"),
        (phone_hash, "0000000000", "too_short"),
        (phone_hash, "5555555555", "repeated_digits"),
        (phone_hash, "1234567890", "sequence"),
        (phone_hash, "9876543210", "sequence"),
        (phone_hash, "12345678901234567", "too_long"),
        (phone_hash, "unknown", "placeholder"),
        (phone_hash, "call me", "invalid_phone"),
        (phone_hash, 5.5, "invalid_phone"),
        (phone_hash, float("nan"), "invalid_phone"),
        (external_id_hash, "null", "placeholder"),
        (external_id_hash, "0", "placeholder"),
        (external_id_hash, "-1", "placeholder"),
        (external_id_hash, "000-000", "placeholder"),
        (external_id_hash, "guest", "placeholder"),
        (external_id_hash, sha256_hex("undefined"), "placeholder"),
        (device_id_hash, "00000000-0000-0000-0000-000000000000", "all_zero"),
        (device_id_hash, "0" * 32, "all_zero"),
        (device_id_hash, "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "repeated_digits"),
        (device_id_hash, sha256_hex("00000000-0000-0000-0000-000000000000"), "placeholder"),
        (device_id_hash, sha256_hex("00000000-0000-0000-0000-000000000000".upper()), "placeholder"),
        (device_id_hash, "none", "placeholder"),
        (fbc_click_id, "AbC123", "invalid_fbc"),
        (fbc_click_id, "fb.1.x.AbC", "invalid_fbc"),
        (fbc_click_id, "fb.1.1700000000000.undefined", "placeholder"),
        (ip_value, "0.0.0.0", "not_routable"),
        (ip_value, "127.0.0.1", "not_routable"),
        (ip_value, "::", "not_routable"),
        (ip_value, "255.255.255.255", "not_routable"),
        (ip_value, "1.2.3", "invalid_ip"),
    ],
)
def test_junk_is_refused_with_its_reason(fn, value, why):
    assert reason(fn, value) == why


@pytest.mark.parametrize(
    ("fn", "value"),
    [
        (email_hash, "ann@example.com"),
        (email_hash, "0@example.com"),
        (phone_hash, "+1 555 010 0199"),
        (phone_hash, "+44 20 7946 0958"),
        (external_id_hash, "cust-0001"),
        (external_id_hash, "0000042"),
        (external_id_hash, "1"),
        (device_id_hash, "6D92078A-8246-4BA4-AE5B-76104861E7DC"),
        (ip_value, "10.0.0.1"),
        (ip_value, "192.168.1.255"),
    ],
)
def test_plausible_values_are_kept(fn, value):
    assert reason(fn, value) is None and fn(value) is not None


def test_junk_hashes_include_the_hash_of_nothing_and_of_placeholders():
    assert sha256_hex("") in JUNK_HASHES
    assert {sha256_hex(v) for v in ("n/a", "N/A", "null", "NULL", "Null", "none")} <= JUNK_HASHES


def test_rejections_are_per_field_and_the_rest_survives():
    ud, rejected = normalize_user_data(
        {
            "em": ["n/a", "Ann@Example.com"],
            "ph": "0",
            "external_id": "null",
            "madid": "00000000-0000-0000-0000-000000000000",
            "client_ip_address": "0.0.0.0",
            "click_id": "c9",
        }
    )
    assert ud["em"] == sha256_hex("ann@example.com")
    assert ud["click_id"] == "c9"
    assert ud["ph"] is ud["external_id"] is ud["device_id"] is ud["client_ip_address"] is None
    assert rejected == (
        Rejection("em", "placeholder"),
        Rejection("ph", "placeholder"),
        Rejection("external_id", "placeholder"),
        Rejection("madid", "all_zero"),
        Rejection("client_ip_address", "not_routable"),
    )


def test_a_placeholder_email_never_becomes_a_key():
    """The failure issue 21 measured: one junk key linking strangers at 0.93-0.97."""
    for junk in ("n/a", "null", "noemail@example.com", sha256_hex(""), "not-an-email"):
        ud = hash_user_data({"em": junk, "ph": "123"})
        assert conversion_identifier_keys("adv", ud) == []
        assert conversion_identifiers("adv", {"em": junk, "ph": "123"}) == {}
        assert engagement_identifiers(None, None, "0000-0000", em=junk, ph="0") == []


def test_too_many_values_are_cut_and_counted():
    many = [f"user{i}@example.com" for i in range(MAX_VALUES_PER_FIELD + 3)]
    ud, rejected = normalize_user_data({"em": many})
    assert len(ud["em"]) == MAX_VALUES_PER_FIELD
    assert rejected == (Rejection("em", "too_many"),) * 3


def test_device_ids_from_every_field_share_one_convention():
    idfa = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
    key = sha256_hex(idfa.lower())
    for field, value in (("device_id", idfa), ("madid", idfa.lower()), ("hashed_maids", [key])):
        assert hash_user_data({field: value})["device_id"] == key
    both = hash_user_data({"madid": idfa, "hashed_maids": [key.upper(), sha256_hex("other")]})
    assert both["device_id"] == [key, sha256_hex("other")]


def test_fbc_gives_the_click_id_and_click_id_comes_first():
    ud = hash_user_data({"fbc": "fb.1.1554763741205.IwAR2abc"})
    assert ud["click_id"] == "IwAR2abc"
    ud = hash_user_data({"click_id": "pin-1", "fbc": "fb.1.1554763741205.IwAR2abc"})
    assert ud["click_id"] == ["pin-1", "IwAR2abc"]
    assert [k for _, k in conversion_identifier_keys("a", ud)] == [
        "click:pin-1",
        "click:IwAR2abc",
    ]


def test_external_id_keeps_case_and_pre_hashed_ids_join_raw_ones():
    raw = hash_user_data({"external_id": " Cust-42 "})["external_id"]
    pre = hash_user_data({"external_id": sha256_hex("Cust-42").upper()})["external_id"]
    assert raw == pre == sha256_hex("Cust-42")
    assert hash_user_data({"external_id": "cust-42"})["external_id"] != raw


identifier_values = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.emails(),
    st.from_regex(r"\+?[0-9 ()\-.]{0,20}", fullmatch=True),
)
user_data = st.dictionaries(
    st.sampled_from(
        ["em", "ph", "external_id", "device_id", "madid", "hashed_maids", "click_id", "fbc"]
        + ["client_ip_address", "client_user_agent", "fn", "ln"]
    ),
    st.one_of(identifier_values, st.lists(identifier_values, max_size=4)),
)


@given(user_data)
def test_normalizing_twice_changes_nothing(ud):
    """Idempotence: hashed user_data fed back in (a replay of our own output, a dedupe merge)
    gives the same keys; nothing raises, whatever the input."""
    once, _ = normalize_user_data(ud)
    twice, rejected_again = normalize_user_data(once)
    assert twice == once
    assert rejected_again == ()
    assert conversion_identifier_keys("a", once) == conversion_identifier_keys("a", twice)


@given(user_data)
def test_every_value_is_kept_or_rejected(ud):
    """Nothing vanishes silently: every non-blank value of a matched field is kept or counted."""
    out, rejected = normalize_user_data(ud)
    for field in ("em", "ph", "external_id"):
        raw = ud.get(field)
        items = raw if isinstance(raw, list) else [raw]
        given_values = [v for v in items if v is not None and str(v).strip()]
        kept = (
            out[field] if isinstance(out[field], list) else [out[field]] * (out[field] is not None)
        )
        dropped = [r for r in rejected if r.field == field]
        assert len(given_values) >= len(kept)
        if given_values:
            assert kept or dropped


@given(user_data)
def test_every_rejection_is_in_the_metric_vocabulary(ud):
    from convstream.core.identity import REJECTION_FIELDS, REJECTION_REASONS

    for r in normalize_user_data(ud)[1]:
        assert r.field in REJECTION_FIELDS and r.reason in REJECTION_REASONS


def test_a_hostile_list_is_read_only_so_far():
    from convstream.core.identity import MAX_ITEMS_READ

    ud, rejected = normalize_user_data(
        {"em": ["n/a"] * 100_000, "ph": [f"+1555010{i:04d}" for i in range(10_000)]}
    )
    assert ud["em"] is None and len(ud["ph"]) == MAX_VALUES_PER_FIELD
    assert len(rejected) <= 2 * (MAX_ITEMS_READ + 1)
    assert Rejection("em", "too_many") in rejected and Rejection("ph", "too_many") in rejected
