"""Typed records of the input topics: parsed and validated once, at ingestion.

Each ``parse_*`` takes the raw message value (bytes) and returns a record, or raises
:class:`Invalid` with a short, fixed reason that becomes the dead-letter reason and metric label.
Raw PII never survives parsing: emails and phones are hashed here.

>>> parse_impression(b'{"event_id":"i1","ts":1767571200000,"user_id":"u","advertiser_id":"a",'
...                  b'"campaign_id":"c","ad_id":"d","ip":"1.2.3.4"}').ip
'1.2.3.4'
>>> parse_impression(b'{"event_id":"i1"}')
Traceback (most recent call last):
...
convstream.stream.records.Invalid: missing_field: ts
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from convstream.core.identity import hash_email, hash_generic, hash_phone, hash_user_data, valid_ip

MAX_FIELD_LEN = 1024
MAX_UA_LEN = 2048
EVENT_NAME_LEN = 64
SOURCES = ("capi", "pixel")
# Epoch milliseconds between 2001 and 2286: anything else is seconds, microseconds or garbage.
MIN_TS_MS = 10**12
MAX_TS_MS = 10**13
#: Largest value parsed: any record the field limits allow fits many times over. orjson caps
#: nesting at 1024 levels itself (``invalid_json``), in microseconds.
MAX_VALUE_BYTES = 65536


class Invalid(ValueError):
    """A record that cannot enter the pipeline; ``reason`` is a short fixed vocabulary word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True, frozen=True)
class Engagement:
    """An impression (``kind="view"``) or a click on the platform, keyed by user_id."""

    kind: str
    event_id: str
    ts: int
    user_id: str
    advertiser_id: str
    campaign_id: str
    ad_id: str
    ip: str | None
    user_agent: str | None
    device_id: str | None
    click_id: str | None = None


@dataclass(slots=True, frozen=True)
class IdentitySighting:
    """A login or account sighting: which identifiers a user showed at ``ts``."""

    user_id: str
    ts: int
    em: str | None
    ph: str | None
    device_id: str | None
    ip: str | None
    user_agent: str | None


@dataclass(slots=True, frozen=True)
class Conversion:
    """One CAPI or pixel copy of a conversion, user_data hashed."""

    event_id: str
    event_name: str
    source: str
    ts: int
    advertiser_id: str
    value: float | None
    currency: str | None
    user_data: dict[str, str | None]

    @property
    def key(self) -> str:
        return f"{self.advertiser_id}:{self.event_name}:{self.event_id}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "conversion_key": self.key,
            "event_id": self.event_id,
            "event_name": self.event_name,
            "advertiser_id": self.advertiser_id,
            "ts": self.ts,
            "value": self.value,
            "currency": self.currency,
            "sources": [self.source],
            "user_data": dict(self.user_data),
        }


@dataclass(slots=True, frozen=True)
class Feedback:
    """Delayed truth for one conversion: who converted (None: not a platform user)."""

    advertiser_id: str
    event_id: str
    event_name: str
    user_id: str | None
    ts: int

    @property
    def key(self) -> str:
        return f"{self.advertiser_id}:{self.event_name}:{self.event_id}"


def _load(raw: bytes | str | None) -> dict[str, Any]:
    if raw is None:
        raise Invalid("invalid_json", "empty value")
    if len(raw) > MAX_VALUE_BYTES:  # bytes from Kafka; a str (tests, replays) in characters
        raise Invalid("too_large", f"value over {MAX_VALUE_BYTES} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid("invalid_json", str(exc)[:80]) from None
    if not isinstance(obj, dict):
        raise Invalid("schema", "value is not a JSON object")
    return obj


def _str(obj: dict[str, Any], name: str, *, limit: int = MAX_FIELD_LEN) -> str:
    value = obj.get(name)
    if value is None:
        raise Invalid("missing_field", name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid("schema", f"{name} must be a string")
    value = str(value).strip()
    if not value:
        raise Invalid("missing_field", name)
    if len(value) > limit:
        raise Invalid("too_long", name)
    return value


def _opt_str(obj: dict[str, Any], name: str, *, limit: int = MAX_FIELD_LEN) -> str | None:
    if obj.get(name) is None:
        return None
    if isinstance(obj[name], str) and not obj[name].strip():
        return None
    return _str(obj, name, limit=limit)


def _ts(obj: dict[str, Any], name: str = "ts") -> int:
    value = obj.get(name)
    if value is None:
        raise Invalid("missing_field", name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("schema", f"{name} must be epoch milliseconds")
    if not MIN_TS_MS <= value < MAX_TS_MS:
        raise Invalid("bad_timestamp", f"{name} out of the epoch-milliseconds range")
    return int(value)


def _ip(obj: dict[str, Any], name: str) -> str | None:
    value = _opt_str(obj, name, limit=64)
    if value is not None and not valid_ip(value):
        raise Invalid("invalid_ip", name)
    return value


def _hashed(obj: dict[str, Any], name: str, hasher: Any) -> str | None:
    value = _opt_str(obj, name)
    return hasher(value) if value is not None else None


def parse_engagement(raw: bytes | str | None, kind: str) -> Engagement:
    """Parse an impression (``kind="view"``) or a click (``kind="click"``)."""
    obj = _load(raw)
    click_id = None
    event_id = _opt_str(obj, "event_id")
    if kind == "click":
        click_id = _str(obj, "click_id")
        if event_id is not None and event_id != click_id:
            raise Invalid("schema", "a click's event_id must equal its click_id")
        event_id = click_id
    elif event_id is None:
        raise Invalid("missing_field", "event_id")
    return Engagement(
        kind=kind,
        event_id=event_id,
        ts=_ts(obj),
        user_id=_str(obj, "user_id"),
        advertiser_id=_str(obj, "advertiser_id"),
        campaign_id=_str(obj, "campaign_id"),
        ad_id=_str(obj, "ad_id"),
        ip=_ip(obj, "ip"),
        user_agent=_opt_str(obj, "user_agent", limit=MAX_UA_LEN),
        device_id=_hashed(obj, "device_id", hash_generic),
        click_id=click_id,
    )


def parse_impression(raw: bytes | str | None) -> Engagement:
    return parse_engagement(raw, "view")


def parse_click(raw: bytes | str | None) -> Engagement:
    return parse_engagement(raw, "click")


def parse_identity(raw: bytes | str | None) -> IdentitySighting:
    obj = _load(raw)
    return IdentitySighting(
        user_id=_str(obj, "user_id"),
        ts=_ts(obj),
        em=_hashed(obj, "em", hash_email),
        ph=_hashed(obj, "ph", hash_phone),
        device_id=_hashed(obj, "device_id", hash_generic),
        ip=_ip(obj, "ip"),
        user_agent=_opt_str(obj, "user_agent", limit=MAX_UA_LEN),
    )


def parse_conversion(raw: bytes | str | None) -> Conversion:
    obj = _load(raw)
    source = _str(obj, "source").lower()
    if source not in SOURCES:
        raise Invalid("schema", "source must be capi or pixel")
    user_data = obj.get("user_data") or {}
    if not isinstance(user_data, dict):
        raise Invalid("schema", "user_data must be an object")
    for name in ("em", "ph", "external_id", "click_id", "client_user_agent", "device_id"):
        _opt_str(user_data, name, limit=MAX_UA_LEN)  # null or blank: absent, like top level
    _ip(user_data, "client_ip_address")
    value = obj.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise Invalid("schema", "value must be a number")
    return Conversion(
        event_id=_str(obj, "event_id"),
        event_name=_str(obj, "event_name", limit=EVENT_NAME_LEN),
        source=source,
        ts=_ts(obj),
        advertiser_id=_str(obj, "advertiser_id"),
        value=float(value) if value is not None else None,
        currency=_opt_str(obj, "currency", limit=8),
        user_data=hash_user_data(user_data),
    )


@dataclass(slots=True, frozen=True)
class Deletion:
    """A user's right-to-be-forgotten request, effective for everything stored about them."""

    user_id: str
    ts: int


def parse_deletion(raw: bytes | str | None) -> Deletion:
    obj = _load(raw)
    return Deletion(user_id=_str(obj, "user_id"), ts=_ts(obj))


def parse_feedback(raw: bytes | str | None) -> Feedback:
    obj = _load(raw)
    return Feedback(
        advertiser_id=_str(obj, "advertiser_id"),
        event_id=_str(obj, "event_id"),
        event_name=_str(obj, "event_name", limit=EVENT_NAME_LEN),
        user_id=_opt_str(obj, "user_id"),
        ts=_ts(obj),
    )
