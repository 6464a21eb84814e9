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
from collections.abc import Callable
from typing import Any

IdentifierKind = str
IdentifierKey = str
UserData = dict[str, str | None]

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


def normalize_email(raw: str) -> str:
    """Trim and lowercase.

    >>> normalize_email("  Ann.Lee@Example.COM ")
    'ann.lee@example.com'
    """
    return raw.strip().lower()


def normalize_phone(raw: str) -> str:
    """Keep the digits only (country code included as given, no leading ``+``).

    >>> normalize_phone("+1 (555) 010-0199")
    '15550100199'
    """
    return "".join(ch for ch in raw if "0" <= ch <= "9")


def _clean(v: object) -> str | None:
    """``v`` as a stripped string, None when missing or blank."""
    if v is None:
        return None
    s = (v if isinstance(v, str) else str(v)).strip()
    return s or None


def hash_email(v: object) -> str | None:
    """SHA-256 of the normalized email; an already hashed value passes through lowercased.

    >>> hash_email(" Ann@X.com ") == hash_email("ann@x.com") == sha256_hex("ann@x.com")
    True
    >>> hash_email(hash_email("ann@x.com")) == hash_email("ann@x.com")
    True
    >>> hash_email("   ") is None
    True
    """
    s = _clean(v)
    if s is None:
        return None
    if is_sha256_hex(s):
        return s.lower()
    return sha256_hex(normalize_email(s))


def hash_phone(v: object) -> str | None:
    """SHA-256 of the digits of the phone; a hash passes through; no digits gives None.

    >>> hash_phone("+1 555 010 0199") == hash_phone("15550100199") == sha256_hex("15550100199")
    True
    >>> hash_phone("n/a") is None
    True
    """
    s = _clean(v)
    if s is None:
        return None
    if is_sha256_hex(s):
        return s.lower()
    digits = normalize_phone(s)
    return sha256_hex(digits) if digits else None


def hash_generic(v: object) -> str | None:
    """SHA-256 of a trimmed, lowercased id (external_id, device_id); a hash passes through.

    >>> hash_generic(" ABC-123 ") == sha256_hex("abc-123")
    True
    """
    s = _clean(v)
    if s is None:
        return None
    if is_sha256_hex(s):
        return s.lower()
    return sha256_hex(s.lower())


_FIELD_HASHERS: dict[str, Callable[[object], str | None]] = {
    "em": hash_email,
    "ph": hash_phone,
    "external_id": hash_generic,
    "device_id": hash_generic,
    "click_id": _clean,
    "client_ip_address": _clean,
    "client_user_agent": _clean,
}


def _first_value(v: object, fn: Callable[[object], str | None]) -> str | None:
    """Apply ``fn``; for a list (CAPI allows arrays) take the first element that survives."""
    if isinstance(v, list | tuple):
        for item in v:
            out = fn(item)
            if out is not None:
                return out
        return None
    return fn(v)


def hash_user_data(ud: dict[str, Any] | None) -> UserData:
    """A new user_data with em/ph/external_id/device_id hashed and unknown fields dropped.

    All seven ``USER_DATA_FIELDS`` are present (None when missing). click_id, IP and user agent
    are kept, stripped. For a list value the first usable element is taken.

    >>> ud = hash_user_data({"em": ["", "A@b.co"], "client_ip_address": " 1.2.3.4 ", "fn": "ann"})
    >>> ud["em"] == sha256_hex("a@b.co"), ud["client_ip_address"], ud["ph"], "fn" in ud
    (True, '1.2.3.4', None, False)
    """
    ud = ud or {}
    return {name: _first_value(ud.get(name), fn) for name, fn in _FIELD_HASHERS.items()}


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
    """All identifier keys of one event, strongest kind first."""
    out: list[tuple[IdentifierKind, IdentifierKey]] = []
    if (click := _clean(click_id)) is not None:
        out.append(("click", f"click:{click}"))
    if (h := hash_email(em)) is not None:
        out.append(("em", f"em:{h}"))
    if (h := hash_phone(ph)) is not None:
        out.append(("ph", f"ph:{h}"))
    if (h := hash_generic(device_id)) is not None:
        out.append(("dev", f"dev:{h}"))
    if advertiser_id and (h := hash_generic(external_id)) is not None:
        out.append(("ext", f"ext:{advertiser_id}:{h}"))
    addr = normalize_ip(ip)
    agent = _clean(user_agent)
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

    Raw or already hashed em/ph/device_id give the same key; an invalid IP gives no ip keys.

    >>> [kind for kind, _ in engagement_identifiers("1.2.3.4", "UA", "d-1", click_id="c9")]
    ['click', 'dev', 'ipua', 'ip']
    >>> engagement_identifiers("1.2.3.4", "Mozilla/5.0", None)
    [('ipua', 'ipua:1.2.3.4|82aa6a482bd276cf'), ('ip', 'ip:1.2.3.4')]
    """
    return _identifiers(
        click_id=click_id, em=em, ph=ph, device_id=device_id, ip=ip, user_agent=user_agent
    )


def conversion_identifiers(
    advertiser_id: str, user_data: dict[str, Any]
) -> dict[IdentifierKind, IdentifierKey]:
    """Identifier keys of a conversion's (hashed) user_data by kind, strongest kind first.

    >>> keys = conversion_identifiers("adv-7", {"click_id": "c9", "external_id": "U1",
    ...                                          "client_ip_address": "1.2.3.4"})
    >>> list(keys), keys["ext"] == "ext:adv-7:" + sha256_hex("u1")
    (['click', 'ext', 'ip'], True)
    """
    ud = user_data or {}
    return dict(
        _identifiers(
            click_id=ud.get("click_id"),
            em=ud.get("em"),
            ph=ud.get("ph"),
            device_id=ud.get("device_id"),
            external_id=ud.get("external_id"),
            advertiser_id=advertiser_id,
            ip=ud.get("client_ip_address"),
            user_agent=ud.get("client_user_agent"),
        )
    )


def kind_of(key: IdentifierKey) -> IdentifierKind:
    """The kind of an identifier key.

    >>> kind_of("ipua:1.2.3.4|82aa6a482bd276cf")
    'ipua'
    """
    return key.split(":", 1)[0]


# --- PII redaction -----------------------------------------------------------------------------

REDACTED = "[redacted]"

#: Keys whose non-hash values are PII whatever they look like (CAPI user_data names included).
PII_KEYS = frozenset(
    {"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "email", "phone", "external_id"}
    | {"device_id"}
)
#: Keys whose numbers are counters, times or money, never phone numbers.
SAFE_NUMBER_KEYS = frozenset(
    {"ts", "value", "offset", "partition", "revision", "count", "degree", "d", "n", "timestamp"}
    | {"time", "watermark", "clock", "first_seen_clock", "n_adv", "n_clicks", "score", "weight"}
    | {"credit", "confidence", "label_weight", "price", "amount", "currency_value", "seq"}
)
_SAFE_SUFFIXES = ("_ts", "_ms", "_at", "_count", "_weight", "_offset")

# Epoch milliseconds from 2000-01-01 to 2100-01-01: 13-digit integers that are times, not phones.
_EPOCH_MS_MIN = 946_684_800_000
_EPOCH_MS_MAX = 4_102_444_800_000

_SAFE_KEY_ALT = "|".join(sorted(SAFE_NUMBER_KEYS, key=len, reverse=True))
_PII_KEY_ALT = "|".join(sorted(PII_KEYS, key=len, reverse=True))
_TEXT_RE = re.compile(
    rf"""
    (?P<safe_num>(?<![\w])"?(?:{_SAFE_KEY_ALT}|\w*(?:{"|".join(_SAFE_SUFFIXES)}))"?
        \s*[:=]\s*-?\d+(?:\.\d+)?(?![\d.]))
    | (?P<pii_head>(?<![\w])"?(?:{_PII_KEY_ALT}|(?=\w*(?:email|phone))\w++)"?\s*[:=]\s*)
        (?: "(?P<pii_str>(?:[^"\\]|\\.)*)" | (?P<pii_num>\+?\d(?:[\ .\-()]{{0,4}}\d)*) )
    | (?P<hex>(?<![\w])[0-9a-fA-F]{{64}}(?![\w]))
    | (?P<uahash>(?<=\|)[0-9a-f]{{16}}(?![\w]))
    | (?P<uuid>(?<![\w])[0-9a-fA-F]{{8}}(?:-[0-9a-fA-F]{{4}}){{3}}-[0-9a-fA-F]{{12}}(?![\w]))
    | (?P<iso>(?<![\w])\d{{4}}-\d{{2}}-\d{{2}}
        (?:[T\ ]\d{{2}}:\d{{2}}(?::\d{{2}}(?:[.,]\d+)?)?(?:Z|[+-]\d{{2}}:?\d{{2}})?)?)
    | (?P<ipv4>(?<![\w.])(?:\d{{1,3}}\.){{3}}\d{{1,3}}(?!\.?\d))
    | (?P<email>(?<![\w.!#$%&'*+/=?^`{{|}}~\-])[\w.!#$%&'*+/=?^`{{|}}~\-]+(?:@|%40)
        [A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)
    | (?P<phone>(?:(?<![\w+])|(?<=\\[nrtbf]))\+?\(?\d(?:[\ .\-()]{{0,4}}\d){{6,}}(?![\w]))
    """,
    re.VERBOSE | re.IGNORECASE,
)


_HASH_VALUE_RE = re.compile(r"(?:[\w.\-]+:)*[0-9a-fA-F]{64}")


def _is_hash_value(value: str) -> bool:
    """Blank, a hash, or an identifier key around one (``em:<sha256>``): safe under a PII key."""
    value = value.strip()
    return value == "" or _HASH_VALUE_RE.fullmatch(value) is not None


def _is_epoch_ms(digits: str) -> bool:
    # Length first: int() refuses runs of more than 4300 digits, and no timestamp is that long.
    return len(digits) == 13 and digits.isdigit() and _EPOCH_MS_MIN <= int(digits) < _EPOCH_MS_MAX


def _text_repl(m: re.Match[str]) -> str:
    if m.group("pii_head") is not None:
        value = m.group("pii_str") if m.group("pii_str") is not None else m.group("pii_num")
        if _is_hash_value(value):
            return m.group(0)
        return m.group("pii_head") + f'"{REDACTED}"'
    if m.group("email") is not None:
        return REDACTED
    if m.group("phone") is not None and not _is_epoch_ms(m.group("phone")):
        return REDACTED
    return m.group(0)


def _redact_text(text: str) -> str:
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
            if isinstance(key, str):
                ctx = "pii" if _is_pii_key(key) else "safe" if _is_safe_key(key) else ""
                out[_redact_text(key)] = _redact(value, ctx)
            else:
                out[key] = _redact(value, "")
        return out
    if isinstance(obj, list | tuple):
        items = [_redact(item, context) for item in obj]
        return items if isinstance(obj, list) else tuple(items)
    if obj is None or isinstance(obj, bool | float):
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

    - email-like substrings anywhere (``@`` or URL-encoded ``%40``);
    - phone-like digit runs: 7+ digits, optional leading ``+`` and `` .-()`` separators, in
      strings (so a decimal like ``3.14159265`` in free text goes too: it cannot be told from a
      dotted phone), and integers of 7+ digits outside the keys below;
    - any value (string, number, list items) under a PII key unless it is a hash or an
      identifier key around one (``em:<sha256>``). PII keys: ``em``, ``ph``, ``email``,
      ``phone`` (or any key containing them, any case), the CAPI ``fn ln db ge ct st zp``,
      ``external_id`` and ``device_id``.

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
