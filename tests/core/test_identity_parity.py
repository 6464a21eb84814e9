"""Email and phone keys against Meta's SDK (``facebook_business``, pinned in pyproject.toml).

For every spelling in the corpus that the SDK accepts, our key equals the SDK's hash, except
the documented, counted rejections (placeholders, MD5, over-long numbers) and digits outside
ASCII (folded here). Where the SDK refuses a value we may still read it (a dotted phone) or
refuse it too; the test pins which.
"""

from __future__ import annotations

import pytest
from facebook_business.adobjects.serverside.normalize import Normalize
from hypothesis import given
from hypothesis import strategies as st

from convstream.core.identity import (
    JunkIdentifier,
    email_hash,
    normalize_phone,
    phone_hash,
    sha256_hex,
)


def sdk(field: str, value: str) -> str | None:
    """The SDK's hash, None where it raises (it raises on values it will not send)."""
    try:
        return Normalize.normalize_field(field, value)
    except (TypeError, ValueError):
        return None


def ours(fn, value) -> str | None:
    try:
        return fn(value)
    except JunkIdentifier as exc:
        return f"rejected:{exc.reason}"


H_ANN = sha256_hex("ann.lee@example.com")

EMAILS = [
    # case and surrounding space
    "ann.lee@example.com",
    "Ann.Lee@Example.com",
    "ANN.LEE@EXAMPLE.COM",
    " ann.lee@example.com",
    "ann.lee@example.com ",
    "\tann.lee@example.com\n",
    "\u00a0ann.lee@example.com\u00a0",
    "  Ann.Lee@EXAMPLE.Com  ",
    # tags, dots, subdomains, long TLDs
    "ann.lee+shop@example.com",
    "Ann.Lee+Promo2024@Example.com",
    "ann_lee@mail.example.co.uk",
    "ann-lee@sub.domain.example.travel",
    "a.n.n.l.e.e@gmail.com",
    "ann.lee@googlemail.com",
    "o'brien@example.ie",
    "first.last@example.museum",
    "1234567@example.com",
    "user%tag@example.org",
    "x@y.io",
    "ann@example.c",
    # unicode
    "jos\u00e9@example.es",
    "JOS\u00c9@EXAMPLE.ES",
    "ann@ex\u00e4mple.de",
    "ANN@EX\u00c4MPLE.DE",
    "\u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9@example.com",
    "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a",
    "\u043f\u043e\u043b\u044c\u0437\u043e\u0432\u0430\u0442\u0435\u043b\u044c@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
    "ann@xn--exmple-cua.de",
    # odd but accepted by the SDK's rule
    "ann lee@example.com",
    "mailto:ann.lee@example.com",
    "<ann.lee@example.com>",
    "ann.lee@@example.com",
    "ann.lee@example.com.",
    # already hashed, either case, padded
    H_ANN,
    H_ANN.upper(),
    f"  {H_ANN}  ",
    H_ANN[:32].upper() + H_ANN[32:],
    # junk the SDK takes and we refuse
    "noemail@example.com",
    "NoEmail@shop.example",
    "none@none.com",
    "test@test.com",
    "n/a@n/a.com",
    "null@null.null",
    sha256_hex(""),
    sha256_hex("n/a"),
    "d41d8cd98f00b204e9800998ecf8427e",
    # refused by both
    "not-an-email",
    "ann.lee@example",
    "@example.com",
    "ann.lee@",
    "ann.lee.example.com",
    "n/a",
    "null",
    "-",
    "ann\n@example.com",
]

PHONES = [
    # E.164 and the ways people write it
    "+442079460958",
    "+44 20 7946 0958",
    "+44 (20) 7946-0958",
    "+44-20-7946-0958",
    "+44 (0)20 7946 0958",
    "442079460958",
    " +44 20 7946 0958 ",
    "+44\u00a020\u00a07946\u00a00958",
    "+44\t20\t7946\t0958",
    "+1 (555) 010-0199",
    "+1 555 010 0199",
    "1-555-010-0199",
    "1 (555) 010-0199",
    "15550100199",
    "+15550100199",
    "(555) 010-0199",
    "555-010-0199",
    "+33 1 23 45 67 89",
    "+33123456789",
    "+49 30 901820",
    "+49 (0)30 901820",
    "+61 2 9374 4000",
    "+81 3-1234-5678",
    "+86 10 1234 5678",
    "+91 98765 43210",
    "+55 11 91234-5678",
    "+7 (495) 123-45-67",
    "+972-3-1234567",
    "+353 1 234 5678",
    "+27 21 123 4567",
    # international prefixes and trunk zeros
    "0044 20 7946 0958",
    "00442079460958",
    "000442079460958",
    "0044 (0)20 7946 0958",
    "+0044 20 7946 0958",
    "++44 20 7946 0958",
    "0033 1 23 45 67 89",
    "001 555 010 0199",
    "011 44 20 7946 0958",
    "020 7946 0958",
    "07946 095812",
    "030 901820",
    "0049 30 901820",
    "0000442079460958",
    # separators the SDK does not strip (we read them; it refuses)
    "+44.20.7946.0958",
    "555.010.0199",
    "+44/20/7946/0958",
    "030/901820",
    "+44 20 7946\u20130958",
    "+44 20 7946\u20140958",
    "+44_20_7946_0958",
    "+44 20 7946 0958 ext. 12",
    "+1 555 010 0199 x123",
    "+1 555 010 0199 #9",
    "tel:+442079460958",
    "+44\u200b2079460958",
    # numbers as numbers
    "4.42079460958e11",
    # unicode digits (the SDK hashes them as they are: never a match for anyone)
    "\uff0b\uff14\uff14\uff12\uff10\uff17\uff19\uff14\uff16\uff10\uff19\uff15\uff18",
    "+\u0664\u0664\u0662\u0660\u0667\u0669\u0664\u0666\u0660\u0669\u0665\u0668",
    # already hashed
    sha256_hex("442079460958"),
    sha256_hex("442079460958").upper(),
    # junk: too short, repeated, counting, placeholders, hashes of nothing, too long
    "0",
    "123",
    "555-0100",
    "12345",
    "0000000",
    "1111111",
    "9999999999",
    "1234567",
    "1234567890",
    "0123456789",
    "n/a",
    "none",
    "null",
    "-",
    sha256_hex(""),
    "1234567890123456789",
    "442079460958442079460958",
    # letters
    "1-800-FLOWERS",
    "call me",
    "+44 20 79A6 0958",
]

EXPECTED_DEVIATIONS = {
    # value -> why we differ from the SDK although it accepts the value
    "noemail@example.com": "placeholder",
    "NoEmail@shop.example": "placeholder",
    "none@none.com": "placeholder",
    "test@test.com": "placeholder",
    "n/a@n/a.com": "placeholder",
    "null@null.null": "placeholder",
    sha256_hex(""): "placeholder",
    sha256_hex("n/a"): "placeholder",
    "d41d8cd98f00b204e9800998ecf8427e": "md5",
    "9999999999": "repeated_digits",
    "1111111": "repeated_digits",
    "1234567": "sequence",
    "1234567890": "sequence",
    "0123456789": "sequence",
    "1234567890123456789": "too_long",
    "442079460958442079460958": "too_long",
}


def test_corpus_is_big_enough():
    assert len(EMAILS) + len(PHONES) >= 100
    assert len(set(EMAILS)) == len(EMAILS) and len(set(PHONES)) == len(PHONES)


@pytest.mark.parametrize("value", EMAILS)
def test_email_key_equals_the_sdk_wherever_it_accepts(value):
    theirs, mine = sdk("em", value), ours(email_hash, value)
    if value in EXPECTED_DEVIATIONS:
        assert theirs is not None and mine == f"rejected:{EXPECTED_DEVIATIONS[value]}"
    elif theirs is not None:
        assert mine == theirs
    else:
        assert mine is not None and mine.startswith("rejected:")


def test_every_spelling_of_one_address_gives_one_key():
    spellings = [e for e in EMAILS[:8]] + [H_ANN, H_ANN.upper(), f"  {H_ANN}  "]
    assert {email_hash(e) for e in spellings} == {H_ANN}


@pytest.mark.parametrize("value", PHONES)
def test_phone_key_equals_the_sdk_wherever_it_accepts(value):
    theirs, mine = sdk("ph", value), ours(phone_hash, value)
    if value in EXPECTED_DEVIATIONS:
        assert theirs is not None and mine == f"rejected:{EXPECTED_DEVIATIONS[value]}"
    elif theirs is not None and value.isascii():
        assert mine == theirs
    elif theirs is not None:  # non-ASCII digits: folded here, so the key is the ASCII one's
        assert mine == sha256_hex("442079460958")
    else:
        assert mine is not None


UK = sha256_hex("442079460958")


@pytest.mark.parametrize(
    "value",
    [
        "+44 20 7946 0958",
        "0044 20 7946 0958",
        "000442079460958",
        "+44.20.7946.0958",
        "+44/20/7946/0958",
        "+44 20 7946\u20130958",
        "+44\u00a020\u00a07946\u00a00958",
        "+44 20 7946 0958 ext. 12",
        "tel:+442079460958",
        442079460958,
        442079460958.0,
        "\uff0b\uff14\uff14\uff12\uff10\uff17\uff19\uff14\uff16\uff10\uff19\uff15\uff18",
    ],
)
def test_every_spelling_of_one_number_gives_the_documented_key(value):
    """Digits only, with country code, no leading zeros or ``00`` prefix: both platforms' rule."""
    assert phone_hash(value) == UK


def test_sdk_agrees_that_the_00_prefix_and_the_plus_are_one_number():
    assert sdk("ph", "0044 20 7946 0958") == sdk("ph", "+44 20 7946 0958") == UK


def test_the_sdk_rejections_we_read_are_read_as_digits():
    for value in ("555.010.0199", "030/901820", "+1 555 010 0199 x123"):
        assert sdk("ph", value) is None
    assert phone_hash("555.010.0199") == sha256_hex("5550100199")
    assert phone_hash("+1 555 010 0199 x123") == sha256_hex("15550100199")


@given(st.emails())
def test_generated_emails_agree_with_the_sdk(email):
    theirs, mine = sdk("em", email), ours(email_hash, email)
    if mine is not None and mine.startswith("rejected:"):
        assert mine == "rejected:placeholder"
    else:
        assert mine == theirs


@given(
    st.from_regex(r"(\+|00)?[1-9][0-9]{0,3}[ \-]?\(?[0-9]{2,3}\)?[ \-]?[0-9]{4,8}", fullmatch=True)
)
def test_generated_phones_agree_with_the_sdk(phone):
    theirs, mine = sdk("ph", phone), ours(phone_hash, phone)
    digits = normalize_phone(phone)
    if len(digits) > 15 or len(set(digits)) == 1 or digits in "1234567890123456789":
        assert mine is not None and mine.startswith("rejected:")
    else:
        assert theirs is not None and mine == theirs
