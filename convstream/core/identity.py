"""Identity: normalize and hash user identifiers, build identifier keys, redact raw PII.

Every identifier that reaches state or a topic goes through here, so the users agent (sightings)
and the conversions agent (lookups) build byte-identical keys (see docs/design.md):

>>> ud = hash_user_data({"em": " Ann@X.com ", "ph": "+1 5550100"})
>>> conv = conversion_identifiers("adv-1", ud)
>>> seen = dict(engagement_identifiers(None, None, None, em="ann@x.com", ph="15550100"))
>>> conv == seen == {"em": "em:" + sha256_hex("ann@x.com"), "ph": "ph:" + sha256_hex("15550100")}
True
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import unicodedata
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IdentifierKind = str
IdentifierKey = str
UserData = dict[str, Any]

DETERMINISTIC_KINDS: tuple[IdentifierKind, ...] = ("click", "em", "ph", "dev", "ext")
PROBABILISTIC_KINDS: tuple[IdentifierKind, ...] = ("ipua", "ip")
#: All kinds, strongest first: click > em > ph > dev > ext > ipua > ip.
KIND_PRIORITY: tuple[IdentifierKind, ...] = DETERMINISTIC_KINDS + PROBABILISTIC_KINDS
#: Rank of each kind, 0 is the strongest; ``sorted(kinds, key=KIND_RANK.__getitem__)``.
KIND_RANK: dict[IdentifierKind, int] = {kind: rank for rank, kind in enumerate(KIND_PRIORITY)}

USER_DATA_FIELDS: tuple[str, ...] = (
    "em",
    "ph",
    "external_id",
    "device_id",
    "click_id",
    "client_ip_address",
    "client_user_agent",
)

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_MD5_RE = re.compile(r"[0-9a-f]{32}")
#: Meta SDK rule for a plausible email (normalize.py, email_pattern), matched at the start.
_EMAIL_RE = re.compile(r".+@.+\..+")
#: What people put between the digits of a phone: any whitespace (NBSP too), hyphens and dashes
#: of every width, dots, slashes, brackets, apostrophes and underscores.
_PHONE_SEPARATORS_RE = re.compile(
    r"[\s\-\u2010-\u2015\u2212.\u00b7/()\[\]'_\u200b-\u200d\u2060\ufeff]+"
)
#: An extension or dial suffix after the number: "x12", "ext. 12", "#12", ";ext=12", ",,12".
_PHONE_EXTENSION_RE = re.compile(r"\s*(?:ext(?:ension)?\.?|x|#|;|,|~)[\s\S]*$")
#: E.164: at most 15 digits with the country code; both platforms: at least 7 after normalizing.
PHONE_MIN_DIGITS = 7
PHONE_MAX_DIGITS = 15
#: Values per identifier field kept from one event; the rest are rejected as ``too_many``.
MAX_VALUES_PER_FIELD = 10
#: Elements of one list read at all; beyond them the rest is one ``too_many`` rejection.
MAX_ITEMS_READ = 4 * MAX_VALUES_PER_FIELD

#: Placeholders people and tag managers send instead of leaving a field out, compared lowercased.
PLACEHOLDERS: frozenset[str] = frozenset(
    {"n/a", "na", "n.a.", "null", "none", "nil", "nan", "undefined", "unknown", "unk", "-", "--"}
    | {"0", "-1", "[]", "{}", "false", "true", "test", "testing", "blank", "empty", "x", "xx"}
    | {"xxx", "asdf", "abc", "noemail", "no-email", "no_email", "nomail", "noreply", "no-reply"}
    | {"donotreply", "do-not-reply", "nobody", "anonymous", "anon", "guest", "email", "user"}
    | {"not available", "not provided", "not_set", "notset", "(not set)", "missing", "default"}
    | {"redacted", "[redacted]", "***", "private", "optout", "opt-out", "no", "yes", "void"}
    | {"00000000-0000-0000-0000-000000000000", "{{email}}", "${email}", "%email%"}
)
#: Local parts of placeholder emails (``noemail@shop.com``, ``none@none.com``).
EMAIL_PLACEHOLDER_LOCALS: frozenset[str] = frozenset(
    {"noemail", "no-email", "no_email", "nomail", "noreply", "no-reply", "donotreply", "none"}
    | {"do-not-reply", "null", "nil", "n/a", "na", "test", "unknown", "undefined", "email"}
    | {"nobody", "anonymous", "guest", "example", "xxx", "asdf", "optout", "redacted", "void"}
)
#: SHA-256 of the empty string and of every placeholder as sent (any common case): an advertiser
#: who hashes before checking sends these, and they join strangers as surely as the raw values.
JUNK_HASHES: frozenset[str] = frozenset(
    hashlib.sha256(v.encode()).hexdigest()
    for word in PLACEHOLDERS | {"", "0" * 32}
    for v in {word, word.upper(), word.capitalize()}
)


class JunkIdentifier(ValueError):
    """An identifier value that must never become a matching key; ``reason`` names why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sha256_hex(s: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of ``s``.

    >>> sha256_hex("abc")[:16]
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(s.encode("utf-8")).hexdigest()


def is_sha256_hex(v: object) -> bool:
    """True when ``v`` is exactly 64 hex digits (either case, no surrounding whitespace).

    >>> is_sha256_hex("A" * 64), is_sha256_hex("a" * 63), is_sha256_hex(None)
    (True, False, False)
    """
    return isinstance(v, str) and _SHA256_RE.fullmatch(v) is not None


def _hash_passthrough(s: str) -> str | None:
    """A lowercased SHA-256 passed through (None when ``s`` is no hash); junk hashes refused."""
    if _SHA256_RE.fullmatch(s) is None:
        return None
    low = s.lower()
    if low in JUNK_HASHES:
        raise JunkIdentifier("placeholder")
    return low


def _text(v: object, reason: str) -> str | None:
    """``v`` as text for an identifier field: None when missing or blank; numbers as digits."""
    if v is None:
        return None
    if isinstance(v, bool) or isinstance(v, dict | list | tuple):
        raise JunkIdentifier(reason)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")) or not v.is_integer():
            raise JunkIdentifier(reason)
        v = int(v)
    s = v if isinstance(v, str) else str(v)
    return s.strip() or None


def normalize_email(raw: str) -> str:
    """Lowercase and trim, as Meta's SDK does (``data.lower().strip()``).

    >>> normalize_email("  Ann.Lee@Example.COM ")
    'ann.lee@example.com'
    """
    return raw.lower().strip()


def email_hash(v: object) -> str | None:
    """The SHA-256 key of an email, None when absent; :class:`JunkIdentifier` when it is junk.

    Equal to ``Normalize.normalize_field("em", v)`` of Meta's SDK for every value the SDK takes,
    except that placeholders (``none@x.com``, ``n/a``), the hash of one, and MD5 hashes (which
    never join a SHA-256 key) are refused.

    >>> email_hash(" Ann@X.com ") == sha256_hex("ann@x.com")
    True
    >>> for bad in ("not-an-email", "noemail@example.com", sha256_hex("")):
    ...     try:
    ...         email_hash(bad)
    ...     except JunkIdentifier as exc:
    ...         print(exc.reason)
    invalid_email
    placeholder
    placeholder
    """
    s = _text(v, "invalid_email")
    if s is None:
        return None
    s = normalize_email(s)
    if (h := _hash_passthrough(s)) is not None:
        return h
    if _MD5_RE.fullmatch(s):
        raise JunkIdentifier("md5")
    if s in PLACEHOLDERS:
        raise JunkIdentifier("placeholder")
    if _EMAIL_RE.match(s) is None:
        raise JunkIdentifier("invalid_email")
    if s.rsplit("@", 1)[0] in EMAIL_PLACEHOLDER_LOCALS:
        raise JunkIdentifier("placeholder")
    return sha256_hex(s)


def normalize_phone(raw: str) -> str:
    """Digits only, extension and leading ``+``/zeros cut, any script's digits as ASCII.

    The result is what both platforms hash: country code, area code and number, no leading
    zeros (``0044 20 7946 0958`` and ``+44 20 7946 0958`` alike). Validity is
    :func:`phone_hash`'s business; this only normalizes.

    >>> normalize_phone("+1 (555) 010-0199"), normalize_phone("0044 20 7946 0958 ext. 12")
    ('15550100199', '442079460958')
    """
    s = unicodedata.normalize("NFKC", raw.lower().strip()).removeprefix("tel:")
    s = _PHONE_EXTENSION_RE.sub("", s)
    s = _PHONE_SEPARATORS_RE.sub("", s)
    digits = "".join(str(unicodedata.decimal(ch, "")) if ch.isdecimal() else ch for ch in s)
    return digits.lstrip("+0")


def phone_hash(v: object) -> str | None:
    """The SHA-256 key of a phone number, None when absent; :class:`JunkIdentifier` when junk.

    Equal to Meta's SDK (``Normalize.normalize_field("ph", v)``) for every value it takes, but
    for digits outside ASCII (folded here, hashed as they are there), more than 15 digits
    (longer than E.164 allows) and the junk this refuses: fewer than 7 digits, one digit
    repeated, a counting run, a placeholder or the hash of one, MD5. Numbers (a JSON float too)
    are read as their digits.

    >>> phone_hash("+44 20 7946 0958") == phone_hash(442079460958.0) == sha256_hex("442079460958")
    True
    >>> for bad in ("123", "0000000", "1234567890", "call me", "1-800-FLOWERS"):
    ...     try:
    ...         phone_hash(bad)
    ...     except JunkIdentifier as exc:
    ...         print(exc.reason)
    too_short
    too_short
    sequence
    invalid_phone
    invalid_phone
    """
    s = _text(v, "invalid_phone")
    if s is None:
        return None
    low = s.lower()
    if (h := _hash_passthrough(low)) is not None:
        return h
    if _MD5_RE.fullmatch(low):
        raise JunkIdentifier("md5")
    if low in PLACEHOLDERS:
        raise JunkIdentifier("placeholder")
    digits = normalize_phone(s)
    if not digits.isdigit() and digits:
        raise JunkIdentifier("invalid_phone")
    if len(digits) < PHONE_MIN_DIGITS:
        raise JunkIdentifier("too_short")
    if len(digits) > PHONE_MAX_DIGITS:
        raise JunkIdentifier("too_long")
    if len(set(digits)) == 1:
        raise JunkIdentifier("repeated_digits")
    if digits in "1234567890123456789" or digits in "9876543210987654321":
        raise JunkIdentifier("sequence")
    return sha256_hex(digits)


def external_id_hash(v: object) -> str | None:
    """The SHA-256 of an advertiser's customer id, exactly as sent after trimming.

    Case is kept (neither platform changes it: ``U1`` and ``u1`` are two customers); an id that
    is already a SHA-256 passes through (hex lowercased), so a pre-hashed id joins its raw form.

    >>> external_id_hash(" U1 ") == sha256_hex("U1") != external_id_hash("u1")
    True
    >>> external_id_hash(sha256_hex("U1").upper()) == sha256_hex("U1")
    True
    """
    s = _text(v, "invalid_external_id")
    if s is None:
        return None
    if (h := _hash_passthrough(s)) is not None:
        return h
    if s.lower() in PLACEHOLDERS or not s.strip("0-"):
        raise JunkIdentifier("placeholder")
    return sha256_hex(s)


def device_id_hash(v: object) -> str | None:
    """The SHA-256 key of a mobile ad id (IDFA, GAID) or device id: trimmed, **lowercased**.

    IDFAs are written upper case and GAIDs lower case, but both are UUIDs, whose case carries
    nothing, so the convention is lowercase before hashing; ``device_id``, Meta's ``madid`` and
    Pinterest's ``hashed_maids`` all follow it (a hash passes through). The all-zero id (what a
    phone sends when ad tracking is limited) and any id of one repeated character are refused.

    >>> device_id_hash("6D92078A-8246-4BA4-AE5B-76104861E7DC") == sha256_hex(
    ...     "6d92078a-8246-4ba4-ae5b-76104861e7dc")
    True
    >>> device_id_hash("00000000-0000-0000-0000-000000000000")
    Traceback (most recent call last):
    ...
    convstream.core.identity.JunkIdentifier: all_zero
    """
    s = _text(v, "invalid_device_id")
    if s is None:
        return None
    s = s.lower()
    if (h := _hash_passthrough(s)) is not None:
        return h
    core = s.replace("-", "")
    if set(core) == {"0"}:
        raise JunkIdentifier("all_zero")
    if s in PLACEHOLDERS:
        raise JunkIdentifier("placeholder")
    if len(set(core)) == 1:
        raise JunkIdentifier("repeated_digits")
    return sha256_hex(s)


def click_id_value(v: object) -> str | None:
    """A platform click id, trimmed (ids are compared as issued); placeholders refused.

    >>> click_id_value(" c9 ")
    'c9'
    """
    s = _text(v, "invalid_click_id")
    if s is None:
        return None
    if s.lower() in PLACEHOLDERS:
        raise JunkIdentifier("placeholder")
    return s


def fbc_click_id(v: object) -> str | None:
    """The click id inside Meta's ``fbc`` value ``fb.<subdomain index>.<creation ms>.<click id>``.

    >>> fbc_click_id("fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890")
    'AbCdEfGhIjKlMnOpQrStUvWxYz1234567890'
    >>> fbc_click_id("AbCdEf")
    Traceback (most recent call last):
    ...
    convstream.core.identity.JunkIdentifier: invalid_fbc
    """
    s = _text(v, "invalid_fbc")
    if s is None:
        return None
    parts = s.split(".", 3)
    if len(parts) != 4 or parts[0] != "fb" or not (parts[1].isdigit() and parts[2].isdigit()):
        raise JunkIdentifier("invalid_fbc")
    return click_id_value(parts[3])


def _or_none(fn: Callable[[object], str | None]) -> Callable[[object], str | None]:
    """``fn`` with junk read as absent: for callers that only build keys."""

    @functools.wraps(fn)
    def wrapper(v: object) -> str | None:
        try:
            return fn(v)
        except JunkIdentifier:
            return None

    return wrapper


def _clean(v: object) -> str | None:
    """``v`` as a stripped string, None when missing or blank."""
    if v is None:
        return None
    s = (v if isinstance(v, str) else str(v)).strip()
    return s or None


#: Key-building forms: the hash, or None when the value is absent or junk.
hash_email = _or_none(email_hash)
hash_phone = _or_none(phone_hash)
hash_external_id = _or_none(external_id_hash)
hash_device_id = _or_none(device_id_hash)
#: Device ids: the name the engagement parsers used before external ids kept their case.
hash_generic = hash_device_id


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def ip_value(v: object) -> str | None:
    """A client IP address in canonical text; junk (unparsable, unspecified, loopback,
    broadcast, multicast: a server's own address, never a user's) refused.

    >>> ip_value(" 2001:DB8::1 "), ip_value(None)
    ('2001:db8::1', None)
    """
    s = _text(v, "invalid_ip")
    if s is None:
        return None
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        raise JunkIdentifier("invalid_ip") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast or addr == _BROADCAST:
        raise JunkIdentifier("not_routable")
    return str(addr)


def user_agent_value(v: object) -> str | None:
    """A user agent, trimmed; a placeholder refused."""
    s = _text(v, "invalid_user_agent")
    if s is not None and s.lower() in PLACEHOLDERS:
        raise JunkIdentifier("placeholder")
    return s


@dataclass(frozen=True, slots=True)
class Rejection:
    """One identifier value dropped at ingestion: the field it came in and why."""

    field: str
    reason: str


#: user_data fields built at ingestion: output field -> the input fields read, in order, and
#: each one's normalizer. Several values (lists, or madid beside hashed_maids) are all kept.
_SOURCES: dict[str, tuple[tuple[str, Callable[[object], str | None]], ...]] = {
    "em": (("em", email_hash),),
    "ph": (("ph", phone_hash),),
    "external_id": (("external_id", external_id_hash),),
    "device_id": (
        ("device_id", device_id_hash),
        ("madid", device_id_hash),
        ("hashed_maids", device_id_hash),
    ),
    "click_id": (("click_id", click_id_value), ("fbc", fbc_click_id)),
    "client_ip_address": (("client_ip_address", ip_value),),
    "client_user_agent": (("client_user_agent", user_agent_value),),
}
#: Fields that hold one value: the first usable one is kept, the rest are ignored.
SINGLE_VALUED = frozenset({"client_ip_address", "client_user_agent"})


#: The ``field`` label values of rejections: user_data fields as sent.
REJECTION_FIELDS: tuple[str, ...] = tuple(f for sources in _SOURCES.values() for f, _ in sources)
#: The ``reason`` label values of rejections.
REJECTION_REASONS: tuple[str, ...] = (
    "placeholder", "invalid_email", "invalid_phone", "too_short", "too_long", "repeated_digits",
    "sequence", "all_zero", "md5", "invalid_fbc", "invalid_ip", "not_routable", "too_many",
    "invalid_external_id", "invalid_device_id", "invalid_click_id", "invalid_user_agent",
    "shared",
)  # fmt: skip


def normalize_user_data(ud: dict[str, Any] | None) -> tuple[UserData, tuple[Rejection, ...]]:
    """Hashed user_data and the values rejected from it.

    All seven ``USER_DATA_FIELDS`` are present. ``em``, ``ph``, ``external_id``, ``device_id``
    and ``click_id`` hold one value as a string, several distinct ones as a list (any may
    match), None when none survives; every other field (``fn``, ``ln``, ``fbp``...) is dropped.

    >>> ud, rejected = normalize_user_data({"em": ["Ann@x.com", "n/a", "bo@y.org"],
    ...                                     "madid": "0000-00", "fbc": "fb.1.1700000000000.c9"})
    >>> len(ud["em"]), ud["click_id"], ud["device_id"]
    (2, 'c9', None)
    >>> rejected
    (Rejection(field='em', reason='placeholder'), Rejection(field='madid', reason='all_zero'))
    """
    ud = ud or {}
    out: UserData = {}
    rejected: list[Rejection] = []
    for name, sources in _SOURCES.items():
        values: list[str] = []
        for field, fn in sources:
            raw = ud.get(field)
            items = raw if isinstance(raw, list | tuple) else (raw,)
            if len(items) > MAX_ITEMS_READ:  # a hostile list costs no more than a long one
                items = items[:MAX_ITEMS_READ]
                rejected.append(Rejection(field, "too_many"))
            for item in items:
                try:
                    value = fn(item)
                except JunkIdentifier as exc:
                    rejected.append(Rejection(field, exc.reason))
                    continue
                if value is None or value in values:
                    continue
                if len(values) >= (1 if name in SINGLE_VALUED else MAX_VALUES_PER_FIELD):
                    if name not in SINGLE_VALUED:
                        rejected.append(Rejection(field, "too_many"))
                    continue
                values.append(value)
        out[name] = None if not values else values[0] if len(values) == 1 else values
    return out, tuple(rejected)


def hash_user_data(ud: dict[str, Any] | None) -> UserData:
    """:func:`normalize_user_data` without the rejections.

    >>> ud = hash_user_data({"em": ["", "A@b.co"], "client_ip_address": " 1.2.3.4 ", "fn": "ann"})
    >>> ud["em"] == sha256_hex("a@b.co"), ud["client_ip_address"], ud["ph"], "fn" in ud
    (True, '1.2.3.4', None, False)
    """
    return normalize_user_data(ud)[0]


def values_of(v: object) -> list[str]:
    """The values of a user_data field: ``[]``, ``[one]`` or the list itself.

    >>> values_of(None), values_of("h1"), values_of(["h1", "h2"])
    ([], ['h1'], ['h1', 'h2'])
    """
    if v is None:
        return []
    if isinstance(v, list | tuple):
        return [x for x in v if x is not None]
    return [v]  # type: ignore[list-item]


def normalize_ip(s: object) -> str | None:
    """Canonical text of an IP address (IPv6 compressed, IPv4-mapped IPv6 as IPv4), else None.

    >>> normalize_ip(" 2001:DB8:0::1 "), normalize_ip("::ffff:10.0.0.1"), normalize_ip("1.2.3")
    ('2001:db8::1', '10.0.0.1', None)
    """
    text = _clean(s)
    if text is None:
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def valid_ip(s: object) -> bool:
    """True for a well-formed IPv4 or IPv6 address.

    >>> valid_ip("192.168.0.1"), valid_ip("::1"), valid_ip("256.1.1.1"), valid_ip("")
    (True, True, False, False)
    """
    return normalize_ip(s) is not None


def ua_hash(ua: str) -> str:
    """First 16 hex digits of the SHA-1 of the user agent, as used in ``ipua`` keys.

    >>> ua_hash("Mozilla/5.0")
    '82aa6a482bd276cf'
    """
    return hashlib.sha1(ua.encode("utf-8")).hexdigest()[:16]


# Order matters: Edge/Opera/Samsung UAs also say "Chrome" and "Safari"; Chrome says "Safari".
_BROWSERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("edge", ("edg/", "edge/", "edga/", "edgios/")),
    ("opera", ("opr/", "opera", "opt/")),
    ("samsung", ("samsungbrowser/",)),
    ("firefox", ("firefox/", "fxios/")),
    ("chrome", ("chrome/", "crios/", "chromium/")),
    ("safari", ("safari/",)),
)
# iOS UAs say "like Mac OS X"; Android UAs say "Linux".
_OSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ios", ("iphone", "ipad", "ipod")),
    ("android", ("android",)),
    ("windows", ("windows",)),
    ("chromeos", ("cros ",)),
    ("macos", ("macintosh", "mac os x")),
    ("linux", ("linux",)),
)
_BOT_MARKERS = ("bot/", "googlebot", "bingbot", "crawler", "spider")


@functools.lru_cache(maxsize=4096)
def ua_family(ua: str | None) -> str:
    """Coarse ``browser/os`` family without versions; ``bot`` for crawlers, ``other`` if unknown.

    >>> ua_family("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    ...           "(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36")
    'chrome/android'
    >>> ua_family("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    ...           "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
    'safari/ios'
    >>> ua_family("Mozilla/5.0 (Windows NT 10.0; rv:121.0) Gecko/20100101 Firefox/121.0")
    'firefox/windows'
    >>> ua_family("curl/8.4.0"), ua_family(None)
    ('other', 'other')
    """
    text = (ua or "").lower()
    if any(marker in text for marker in _BOT_MARKERS):
        return "bot"
    browser = next((name for name, marks in _BROWSERS if any(m in text for m in marks)), None)
    os_name = next((name for name, marks in _OSES if any(m in text for m in marks)), None)
    if browser is None and os_name is None:
        return "other"
    return f"{browser or 'other'}/{os_name or 'other'}"


def sighting_families(user_agent: object, ts: int) -> dict[str, int] | None:
    """The user agent family an ``ip`` sighting at ``ts`` records, None without a user agent.

    >>> sighting_families("Mozilla/5.0 (Windows NT 10.0; rv:121.0) Firefox/121.0", 7)
    {'firefox/windows': 7}
    >>> sighting_families("  ", 7) is None
    True
    """
    agent = _clean(user_agent)
    return None if agent is None else {ua_family(agent): ts}


def _identifiers(
    *,
    click_id: object = None,
    em: object = None,
    ph: object = None,
    device_id: object = None,
    external_id: object = None,
    advertiser_id: str | None = None,
    ip: object = None,
    user_agent: object = None,
) -> list[tuple[IdentifierKind, IdentifierKey]]:
    """All identifier keys of one event, strongest kind first; a list field gives one key per
    usable value, in its order. Junk gives no key."""
    out: list[tuple[IdentifierKind, IdentifierKey]] = []

    def add(kind: IdentifierKind, values: object, fn: Callable[[object], str | None], prefix: str):
        for value in values_of(values):
            if (h := fn(value)) is not None and (kind, prefix + h) not in out:
                out.append((kind, prefix + h))

    add("click", click_id, _or_none(click_id_value), "click:")
    add("em", em, hash_email, "em:")
    add("ph", ph, hash_phone, "ph:")
    add("dev", device_id, hash_device_id, "dev:")
    if advertiser_id:
        add("ext", external_id, hash_external_id, f"ext:{advertiser_id}:")
    addr = normalize_ip(next(iter(values_of(ip)), None))
    agent = _clean(next(iter(values_of(user_agent)), None))
    if addr is not None and agent is not None:
        out.append(("ipua", f"ipua:{addr}|{ua_hash(agent)}"))
    if addr is not None:
        out.append(("ip", f"ip:{addr}"))
    return out


def engagement_identifiers(
    ip: str | None,
    user_agent: str | None,
    device_id: str | None,
    click_id: str | None = None,
    em: str | None = None,
    ph: str | None = None,
) -> list[tuple[IdentifierKind, IdentifierKey]]:
    """Identifier keys sighted by an impression, click or identity event, strongest first.

    Raw or already hashed em/ph/device_id give the same key; an invalid IP gives no ip keys,
    junk (``n/a``, an all-zero device id) no key at all.

    >>> [kind for kind, _ in engagement_identifiers("1.2.3.4", "UA", "d-1", click_id="c9")]
    ['click', 'dev', 'ipua', 'ip']
    >>> engagement_identifiers("1.2.3.4", "Mozilla/5.0", None)
    [('ipua', 'ipua:1.2.3.4|82aa6a482bd276cf'), ('ip', 'ip:1.2.3.4')]
    """
    return _identifiers(
        click_id=click_id, em=em, ph=ph, device_id=device_id, ip=ip, user_agent=user_agent
    )


def conversion_identifier_keys(
    advertiser_id: str, user_data: dict[str, Any]
) -> list[tuple[IdentifierKind, IdentifierKey]]:
    """Every identifier key of a conversion's (hashed) user_data, strongest kind first.

    A field holding several values (a list) gives a key for each: any of them may match.

    >>> keys = conversion_identifier_keys("adv-7", {"em": ["a" * 64, "b" * 64], "click_id": "c9"})
    >>> [kind for kind, _ in keys]
    ['click', 'em', 'em']
    """
    ud = user_data or {}
    return _identifiers(
        click_id=ud.get("click_id"),
        em=ud.get("em"),
        ph=ud.get("ph"),
        device_id=ud.get("device_id"),
        external_id=ud.get("external_id"),
        advertiser_id=advertiser_id,
        ip=ud.get("client_ip_address"),
        user_agent=ud.get("client_user_agent"),
    )


def conversion_identifiers(
    advertiser_id: str, user_data: dict[str, Any]
) -> dict[IdentifierKind, IdentifierKey]:
    """The first identifier key of each kind of a conversion's user_data, strongest kind first
    (:func:`conversion_identifier_keys` has them all).

    >>> keys = conversion_identifiers("adv-7", {"click_id": "c9", "external_id": "U1",
    ...                                          "client_ip_address": "1.2.3.4"})
    >>> list(keys), keys["ext"] == "ext:adv-7:" + sha256_hex("U1")
    (['click', 'ext', 'ip'], True)
    """
    out: dict[IdentifierKind, IdentifierKey] = {}
    for kind, key in conversion_identifier_keys(advertiser_id, user_data):
        out.setdefault(kind, key)
    return out


def kind_of(key: IdentifierKey) -> IdentifierKind:
    """The kind of an identifier key.

    >>> kind_of("ipua:1.2.3.4|82aa6a482bd276cf")
    'ipua'
    """
    return key.split(":", 1)[0]


_EMAIL_ANYWHERE_RE = re.compile(r"[^\s@]+(?:@|%40)[^\s@]+\.[^\s@]+", re.IGNORECASE)
_PHONE_SHAPED_RE = re.compile(r"\+?[\d\s().\-/\u2010-\u2015]+")


def looks_like_pii(text: str) -> bool:
    """True when free text is, or contains, an email, or is as a whole shaped like a phone
    number (7 to 15 digits with the usual separators; an epoch-millisecond time is not one).

    >>> looks_like_pii("ann@example.com"), looks_like_pii("+1 (555) 010-0199")
    (True, True)
    >>> looks_like_pii("ord-1234567"), looks_like_pii("1767571200000"), looks_like_pii("42")
    (False, False, False)
    """
    if _EMAIL_ANYWHERE_RE.search(text):
        return True
    stripped = text.strip()
    if not _PHONE_SHAPED_RE.fullmatch(stripped):
        return False
    digits = "".join(ch for ch in stripped if ch.isdigit())
    return PHONE_MIN_DIGITS <= len(digits) <= PHONE_MAX_DIGITS and not _is_epoch_ms(digits)


def forwarded_text(text: str) -> str:
    """Free text that leaves the worker (an event id, an event name): as it is, or
    ``sha256:<hex>`` of it when it looks like an email or a phone number. Every input topic
    applies the same rule, so the CAPI and pixel copies and the feedback still share one key.

    >>> forwarded_text("ord-42")
    'ord-42'
    >>> forwarded_text("ann@example.com") == "sha256:" + sha256_hex("ann@example.com")
    True
    """
    return "sha256:" + sha256_hex(text) if looks_like_pii(text) else text


# --- PII redaction -----------------------------------------------------------------------------

REDACTED = "[redacted]"

#: Keys whose non-hash values are PII whatever they look like (CAPI user_data names included).
PII_KEYS = frozenset(
    {"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "email", "phone", "external_id"}
    | {"device_id", "country", "madid", "hashed_maids", "fbp", "fbc", "anon_id", "lead_id"}
    | {"subscription_id", "fb_login_id", "partner_id", "f5first", "f5last", "fi", "dobd"}
    | {"dobm", "doby", "first_name", "last_name", "zip", "postal_code", "address", "city"}
)
#: Keys whose numbers are counters, times or money, never phone numbers.
SAFE_NUMBER_KEYS = frozenset(
    {"ts", "value", "offset", "partition", "revision", "count", "degree", "d", "n", "timestamp"}
    | {"time", "watermark", "clock", "first_seen_clock", "n_adv", "n_clicks", "score", "weight"}
    | {"credit", "confidence", "label_weight", "price", "amount", "currency_value", "seq"}
    | {"event_time", "num_items", "quantity", "item_price", "predicted_ltv", "index"}
)
_SAFE_SUFFIXES = ("_ts", "_ms", "_at", "_count", "_weight", "_offset", "_time")

# Epoch milliseconds from 2000-01-01 to 2100-01-01: 13-digit integers that are times, not phones.
_EPOCH_MS_MIN = 946_684_800_000
_EPOCH_MS_MAX = 4_102_444_800_000

_SAFE_KEY_ALT = "|".join(sorted(SAFE_NUMBER_KEYS, key=len, reverse=True))
_PII_KEY_ALT = "|".join(sorted(PII_KEYS, key=len, reverse=True))
#: Between the digits of a written phone number: whitespace (NBSP too), dots, dashes of any
#: width, slashes, brackets, underscores, a URL-encoded byte (``%20``), an escaped newline.
_PHONE_SEP = r"(?:[\s.\-()/_\u2010-\u2015\u2212]|%[0-9A-Fa-f]{2}|\\[nrt])"
_TEXT_RE = re.compile(
    rf"""
    (?P<safe_num>(?<![\w])(?:\\*")?(?:{_SAFE_KEY_ALT}|\w*(?:{"|".join(_SAFE_SUFFIXES)}))(?:\\*")?
        \s*[:=]\s*-?\d+(?:\.\d+)?(?![\d.]))
    | (?P<pii_head>(?<![\w])(?:\\*")?(?:{_PII_KEY_ALT}|(?=\w*(?:email|phone))\w++)(?:\\*")?
        \s*[:=]\s*)
      (?P<pii_val>
          (?P<q>\\*)"(?P<pii_str>.*?)(?:(?<!\\)(?P=q)"|\Z)
        | \[[^\]]*(?:\]|\Z)
        | \{{[^}}]*(?:\}}|\Z)
        | [^\s,;&}}\]"\\]+ )
    | (?P<hex>(?<![\w])[0-9a-fA-F]{{64}}(?![\w]))
    | (?P<uahash>(?<=\|)[0-9a-f]{{16}}(?![\w]))
    | (?P<uuid>(?<![\w])[0-9a-fA-F]{{8}}(?:-[0-9a-fA-F]{{4}}){{3}}-[0-9a-fA-F]{{12}}(?![\w]))
    | (?P<iso>(?<![\w])\d{{4}}-\d{{2}}-\d{{2}}
        (?:[T\ ]\d{{2}}:\d{{2}}(?::\d{{2}}(?:[.,]\d+)?)?(?:Z|[+-]\d{{2}}:?\d{{2}})?)?)
    | (?P<ipv4>(?<![\w.])(?:\d{{1,3}}\.){{3}}\d{{1,3}}(?!\.?\d))
    | (?P<email>(?<![\w.!#$%&'*+/=?^`{{|}}~\-])[\w.!#$%&'*+/=?^`{{|}}~\-]+(?:@|%40)
        [\w\-]+(?:\.[\w\-]+)+)
    | (?P<phone>(?:(?<![\w+])|(?<=\\[nrtbf])|(?<=%[0-9A-Fa-f]{{2}}))(?:\+|%2[bB])?\(?\d
        (?:{_PHONE_SEP}{{0,4}}\d){{6,}}(?![\w]))
    """,
    re.VERBOSE | re.IGNORECASE | re.DOTALL,
)
#: One element of a list under a PII key: a string (any escaping depth, maybe cut) or a token.
_ITEM_RE = re.compile(r'(?P<q>\\*)"(?P<s>.*?)(?:(?<!\\)(?P=q)"|\Z)|[^\s,\[\]"\\]+', re.DOTALL)
_KEEP_TOKENS = frozenset({"null", "true", "false"})
#: A JSON ``\uXXXX`` escape, behind any number of backslashes (double-encoded JSON).
_UNICODE_ESCAPE_RE = re.compile(r"\\+u([0-9a-fA-F]{4})")
_URL_ESCAPE_RE = re.compile(r"%[0-9A-Fa-f]{2}")


_HASH_VALUE_RE = re.compile(r"(?:[\w.\-]+:)*[0-9a-fA-F]{64}")


def _is_hash_value(value: str) -> bool:
    """Blank, a hash, or an identifier key around one (``em:<sha256>``): safe under a PII key."""
    value = value.strip()
    return value == "" or _HASH_VALUE_RE.fullmatch(value) is not None


def _is_epoch_ms(digits: str) -> bool:
    # Length first: int() refuses runs of more than 4300 digits, and no timestamp is that long.
    return len(digits) == 13 and digits.isdigit() and _EPOCH_MS_MIN <= int(digits) < _EPOCH_MS_MAX


def _item_repl(m: re.Match[str]) -> str:
    if m.group("s") is not None:
        q = m.group("q")
        return m.group(0) if _is_hash_value(m.group("s")) else f'{q}"{REDACTED}{q}"'
    token = m.group(0)
    return token if token.lower() in _KEEP_TOKENS or _is_hash_value(token) else f'"{REDACTED}"'


def _text_repl(m: re.Match[str]) -> str:
    if m.group("pii_head") is not None:
        head, value = m.group("pii_head"), m.group("pii_val")
        if m.group("pii_str") is not None:
            if _is_hash_value(m.group("pii_str")):
                return m.group(0)
            q = m.group("q")
            return f'{head}{q}"{REDACTED}{q}"'
        if value.startswith("["):
            return head + _ITEM_RE.sub(_item_repl, value)
        if value.startswith("{") or not (value.lower() in _KEEP_TOKENS or _is_hash_value(value)):
            return f'{head}"{REDACTED}"'
        return m.group(0)
    if m.group("email") is not None:
        return REDACTED
    if m.group("phone") is not None and not _is_epoch_ms(m.group("phone")):
        return REDACTED
    return m.group(0)


def _unescape_char(m: re.Match[str]) -> str:
    code = int(m.group(1), 16)
    # Quotes, backslashes, controls and surrogates stay escaped: the JSON must stay JSON.
    if code < 0x20 or code in (0x22, 0x5C) or 0xD800 <= code <= 0xDFFF:
        return m.group(0)
    return chr(code)


def _redact_text(text: str) -> str:
    # Read what the text says, not how it is escaped: a form body or a URL-encoded JSON
    # (%22fn%22%3A...) is URL-decoded, JSON \uXXXX escapes are decoded (the output is then the
    # decoded text: it is for people to read in dead-letter, never parsed back).
    if "%" in text and _URL_ESCAPE_RE.search(text):
        text = urllib.parse.unquote(text, errors="surrogateescape")
    if "\\" in text and "u" in text:
        text = _UNICODE_ESCAPE_RE.sub(_unescape_char, text)
    return _TEXT_RE.sub(_text_repl, text)


def _is_pii_key(key: str) -> bool:
    low = key.lower()
    return low in PII_KEYS or "email" in low or "phone" in low


def _is_safe_key(key: str) -> bool:
    low = key.lower()
    return low in SAFE_NUMBER_KEYS or low.endswith(_SAFE_SUFFIXES)


def _redact(obj: Any, context: str) -> Any:
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            if context == "pii":  # everything under a PII key stays PII, however nested
                out[_redact_text(key) if isinstance(key, str) else key] = _redact(value, "pii")
            elif isinstance(key, str):
                ctx = "pii" if _is_pii_key(key) else "safe" if _is_safe_key(key) else ""
                out[_redact_text(key)] = _redact(value, ctx)
            else:
                out[key] = _redact(value, "")
        return out
    if isinstance(obj, list | tuple):
        items = [_redact(item, context) for item in obj]
        return items if isinstance(obj, list) else tuple(items)
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, float):
        if context == "pii":
            return REDACTED
        # A phone read into a float (4.42079460958e11) is an integer of 7+ digits.
        if context != "safe" and obj.is_integer() and _redact(int(obj), context) == REDACTED:
            return REDACTED
        return obj
    if isinstance(obj, int):
        if context == "pii":
            return REDACTED
        digits = str(abs(obj))
        if context == "safe" or len(digits) < 7 or _is_epoch_ms(digits):
            return obj
        return REDACTED
    if isinstance(obj, bytes | bytearray):
        text = bytes(obj).decode("utf-8", "surrogateescape")
        return _redact(text, context).encode("utf-8", "surrogateescape")
    if isinstance(obj, str):
        if context == "pii":
            return obj if _is_hash_value(obj) else REDACTED
        if context == "safe" and re.fullmatch(r"-?\d+(?:\.\d+)?", obj.strip()):
            return obj
        return _redact_text(obj)
    return _redact_text(str(obj))


def redact_pii(obj: Any) -> Any:
    """A deep copy of a JSON-like value, or of a raw str/bytes payload, with raw PII redacted.

    What is replaced by ``"[redacted]"``:

    - email-like substrings anywhere (``@`` or URL-encoded ``%40``, any script in the domain);
    - phone-like digit runs: 7+ digits, optional leading ``+`` (or ``%2B``) and separators
      (whitespace, NBSP, dots, dashes of any width, ``/``, brackets, URL-encoded bytes), in
      strings (so a decimal like ``3.14159265`` in free text goes too: it cannot be told from a
      dotted phone), and integers (or integral floats) of 7+ digits outside the keys below;
    - any value (string, number, float, list items, a nested object) under a PII key unless it
      is a hash or an identifier key around one (``em:<sha256>``). PII keys: ``em``, ``ph``,
      ``email``, ``phone`` (or any key containing them, any case), every customer-information
      key of both platforms (``fn ln db ge ct st zp country external_id madid hashed_maids
      fbp fbc``...) and ``device_id``.

    Text is read with JSON ``\\uXXXX`` escapes decoded (at any depth: double-encoded JSON too),
    so ``ann\\u0040example.com`` is an email; a quoted value under a PII key is found whether
    its quotes are escaped once, twice or not closed (a payload cut mid-value).

    What is kept: 64-hex hashes, UUIDs, IPv4 addresses, ISO dates/times, JSON floats, numbers
    under time/counter/money keys (``ts``, ``value``, ``offset``, ``partition``, ``revision``, ...,
    and any key ending in ``_ts``/``_ms``/``_at``/``_count``), and bare 13-digit integers in the
    epoch-millisecond range 2000..2100 (engagement rows are ``[ts, ...]`` lists). Dict keys are
    scanned as text too. A str or bytes payload is scanned as text (it need not be valid JSON;
    bytes round-trip even when not UTF-8), with the same key rules for ``"key": value`` pairs.

    >>> redact_pii({"em": "Ann@x.com", "ph": "a" * 64, "ts": 15550100199,
    ...             "note": "call +1 (555) 010-0199 or ann@x.com", "e": [[1700000000000, "view"]]})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'em': '[redacted]', 'ph': 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
     'ts': 15550100199, 'note': 'call [redacted] or [redacted]', 'e': [[1700000000000, 'view']]}
    >>> redact_pii(b'{"ph": "555 0100", "ts": 1700000000000, "ip": "10.0.0.1", oops')
    b'{"ph": "[redacted]", "ts": 1700000000000, "ip": "10.0.0.1", oops'
    """
    return _redact(obj, "")
