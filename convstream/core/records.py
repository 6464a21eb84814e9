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
convstream.core.records.Invalid: missing_field: ts
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from convstream.core.identifier_quality import phone_notes
from convstream.core.identity import (
    JunkIdentifier,
    Rejection,
    device_id_hash,
    email_hash,
    forwarded_text,
    normalize_user_data,
    phone_hash,
    redact_pii,
    valid_ip,
)

MAX_FIELD_LEN = 1024
MAX_UA_LEN = 2048
EVENT_NAME_LEN = 64
SOURCES = ("capi", "pixel")
# Epoch milliseconds between 2001 and 2286: anything else is seconds, microseconds or garbage.
MIN_TS_MS = 10**12
MAX_TS_MS = 10**13
#: Largest value parsed: any single record the field limits allow fits many times over. orjson
#: caps nesting at 1024 levels itself (``invalid_json``), in microseconds.
MAX_VALUE_BYTES = 65536
#: Largest conversions record parsed: a batch envelope of up to MAX_BATCH_EVENTS events (about
#: 600 KB of Pinterest events), below Kafka's default 1 MB message limit.
MAX_ENVELOPE_BYTES = 900 * 1024
#: Events in one batch envelope: Meta's Conversions API takes at most 1000 per request.
MAX_BATCH_EVENTS = 1000
#: ``data_processing_options`` (Meta) and ``opt_out_type`` (Pinterest) values that restrict use.
RESTRICTED_PROCESSING = frozenset({"ldu", "ldp"})


class Invalid(ValueError):
    """A record that cannot enter the pipeline; ``reason`` is a short fixed vocabulary word.

    For one event of a batch envelope, ``index`` is its position in ``data`` and ``payload``
    the event alone (JSON bytes, PII already redacted), to dead-letter instead of the envelope.
    """

    def __init__(
        self, reason: str, detail: str = "", *, index: int | None = None, payload: bytes = b""
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.index = index
        self.payload = payload


@dataclass(slots=True, frozen=True)
class Engagement:
    """An impression (``kind="view"``) or a click on the platform, keyed by user_id.

    ``holdout`` marks a ghost impression: the ad the server would have shown a user held out of
    the campaign, logged and not shown. It is a sighting of the user's identifiers, never an
    engagement (``convstream.core.engagements.engagement_row``), and exposure for lift.
    """

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
    #: Identifier values dropped as junk (an all-zero device id): never sighted.
    rejected: tuple[Rejection, ...] = ()
    holdout: bool = False


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
    #: Identifier values dropped as junk (a placeholder email): never sighted.
    rejected: tuple[Rejection, ...] = ()


@dataclass(slots=True, frozen=True)
class Conversion:
    """One CAPI or pixel copy of a conversion, user_data hashed.

    ``rejected`` lists the identifier values dropped as junk (counted, explained, never
    matched). ``opt_out`` (Pinterest ``opt_out``, Meta or Pinterest limited data use) empties
    ``user_data`` but for ``opt_out: True``: the label is made, with no user and nothing learned.
    """

    event_id: str
    event_name: str
    source: str
    ts: int
    advertiser_id: str
    value: float | None
    currency: str | None
    user_data: dict[str, Any]
    rejected: tuple[Rejection, ...] = field(default=())
    opt_out: bool = False
    #: Values kept but unlikely to match (a phone without country code), for quality advice.
    notes: tuple[Rejection, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.advertiser_id}:{self.event_name}:{self.event_id}"

    def as_dict(self) -> dict[str, Any]:
        """The lifecycle's conversion; ``rejected_identifiers`` (``[[field, reason], ...]``)
        only when some value was rejected."""
        out = {
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
        if self.rejected:
            out["rejected_identifiers"] = [[r.field, r.reason] for r in self.rejected]
        return out

    def as_event(self) -> dict[str, Any]:
        """This copy as a single event in today's shape, identifiers hashed: what to forward
        when one event of an envelope must move to its own key's partition (never the raw
        event, which may carry raw PII). :func:`parse_conversion` reads it back to this copy,
        less ``rejected`` and ``notes`` (counted once, on first reading).

        >>> c = parse_conversions(b'{"advertiser_id": "a", "data": [{"event_name": "lead",'
        ...     b' "event_id": "e1", "event_time": 1767571200, "user_data": {"em": "A@b.co"}}]}')[0]
        >>> back = parse_conversion(orjson.dumps(c.as_event()))
        >>> back == c, "A@b.co" in str(c.as_event())
        (True, False)
        """
        event: dict[str, Any] = {
            "event_id": self.event_id,
            "event_name": self.event_name,
            "source": self.source,
            "ts": self.ts,
            "advertiser_id": self.advertiser_id,
            "value": self.value,
            "currency": self.currency,
            "user_data": {k: v for k, v in self.user_data.items() if k != "opt_out"},
        }
        if self.opt_out:
            event["opt_out"] = True
        return event


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


def _load(raw: bytes | str | None, *, limit: int = MAX_VALUE_BYTES) -> dict[str, Any]:
    if raw is None:
        raise Invalid("invalid_json", "empty value")
    if len(raw) > limit:  # bytes from Kafka; a str (tests, replays) in characters
        raise Invalid("too_large", f"value over {limit} bytes")
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


def _hashed(obj: dict[str, Any], name: str, hasher: Any, rejected: list[Rejection]) -> str | None:
    """The field's key, None when absent or junk (then noted in ``rejected``)."""
    value = _opt_str(obj, name)
    if value is None:
        return None
    try:
        return hasher(value)
    except JunkIdentifier as exc:
        rejected.append(Rejection(name, exc.reason))
        return None


def _holdout(obj: dict[str, Any]) -> bool:
    value = obj.get("holdout")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise Invalid("schema", "holdout must be true or false")
    return value


def parse_engagement(raw: bytes | str | None, kind: str) -> Engagement:
    """Parse an impression (``kind="view"``) or a click (``kind="click"``).

    >>> parse_impression(b'{"event_id":"i1","ts":1767571200000,"user_id":"u","advertiser_id":"a",'
    ...                  b'"campaign_id":"c","ad_id":"d","holdout":true}').holdout
    True
    >>> parse_click(b'{"click_id":"k1","ts":1767571200000,"user_id":"u","advertiser_id":"a",'
    ...             b'"campaign_id":"c","ad_id":"d","holdout":true}')
    Traceback (most recent call last):
    ...
    convstream.core.records.Invalid: schema: a ghost impression has no click
    """
    obj = _load(raw)
    click_id = None
    event_id = _opt_str(obj, "event_id")
    holdout = _holdout(obj)
    if kind == "click":
        click_id = _str(obj, "click_id")
        if event_id is not None and event_id != click_id:
            raise Invalid("schema", "a click's event_id must equal its click_id")
        if holdout:
            raise Invalid("schema", "a ghost impression has no click")
        event_id = click_id
    elif event_id is None:
        raise Invalid("missing_field", "event_id")
    rejected: list[Rejection] = []
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
        device_id=_hashed(obj, "device_id", device_id_hash, rejected),
        click_id=click_id,
        rejected=tuple(rejected),
        holdout=holdout,
    )


def parse_impression(raw: bytes | str | None) -> Engagement:
    return parse_engagement(raw, "view")


def parse_click(raw: bytes | str | None) -> Engagement:
    return parse_engagement(raw, "click")


def parse_identity(raw: bytes | str | None) -> IdentitySighting:
    obj = _load(raw)
    rejected: list[Rejection] = []
    return IdentitySighting(
        user_id=_str(obj, "user_id"),
        ts=_ts(obj),
        em=_hashed(obj, "em", email_hash, rejected),
        ph=_hashed(obj, "ph", phone_hash, rejected),
        device_id=_hashed(obj, "device_id", device_id_hash, rejected),
        ip=_ip(obj, "ip"),
        user_agent=_opt_str(obj, "user_agent", limit=MAX_UA_LEN),
        rejected=tuple(rejected),
    )


#: user_data fields that may hold one value or a list of them; each element is a string.
_LIST_FIELDS = ("em", "ph", "external_id", "device_id", "madid", "hashed_maids", "click_id")
_TEXT_FIELDS = ("fbc", "client_user_agent", "client_ip_address")


def _check_user_data(user_data: dict[str, Any]) -> None:
    """Size limits only: types and junk are judged per value, by normalize_user_data."""
    for name in (*_LIST_FIELDS, *_TEXT_FIELDS):
        value = user_data.get(name)
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, str) and len(item) > MAX_UA_LEN:
                raise Invalid("too_long", f"user_data.{name}")


def _event_time(obj: dict[str, Any]) -> int:
    """A CAPI ``event_time`` (epoch **seconds**) as epoch milliseconds."""
    value = obj.get("event_time")
    if value is None:
        raise Invalid("missing_field", "event_time")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("schema", "event_time must be epoch seconds")
    if not MIN_TS_MS <= value * 1000 < MAX_TS_MS:
        raise Invalid("bad_timestamp", "event_time out of the epoch-seconds range")
    return int(round(value * 1000))


def _money(value: Any, *, strings: bool) -> float | None:
    if value is None or (strings and isinstance(value, str) and not value.strip()):
        return None
    if strings and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise Invalid("schema", "value must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Invalid("schema", "value must be a number")
    return float(value)


def _restricted(obj: dict[str, Any], custom: dict[str, Any]) -> bool:
    """Opted out (Pinterest ``opt_out``) or limited data use (Meta ``data_processing_options``
    with ``LDU``, Pinterest ``custom_data.opt_out_type`` with ``LDP``)."""
    if obj.get("opt_out") is True:
        return True
    options = obj.get("data_processing_options") or []
    if isinstance(options, str):
        options = [options]
    kinds = [str(o).strip().lower() for o in options if isinstance(o, str)]
    kinds += [t.strip().lower() for t in str(custom.get("opt_out_type") or "").split(",")]
    return any(k in RESTRICTED_PROCESSING for k in kinds)


def _conversion_event(
    obj: dict[str, Any], envelope_advertiser: str | None, *, batched: bool
) -> Conversion:
    """One event of any accepted shape: today's (``ts`` in ms, top-level ``value``), or a
    Pinterest or Meta CAPI event (``event_time`` in s, ``custom_data``): any event of a batch
    without ``ts``, or a single one with ``event_time`` and no ``ts``."""
    capi_shape = "ts" not in obj and (batched or "event_time" in obj)
    custom = obj.get("custom_data") if capi_shape else None
    if custom is None:
        custom = {}
    if not isinstance(custom, dict):
        raise Invalid("schema", "custom_data must be an object")
    if capi_shape and obj.get("source") is None:
        source = "capi"
    else:
        source = _str(obj, "source").lower()
    if source not in SOURCES:
        raise Invalid("schema", "source must be capi or pixel")
    advertiser_id = _opt_str(obj, "advertiser_id")
    if envelope_advertiser is not None:
        if advertiser_id is not None and advertiser_id != envelope_advertiser:
            raise Invalid("schema", "advertiser_id differs from the envelope's")
        advertiser_id = envelope_advertiser
    elif advertiser_id is None:
        raise Invalid("missing_field", "advertiser_id")
    event_id = _opt_str(obj, "event_id")
    if event_id is None and capi_shape:
        event_id = _opt_str(custom, "order_id")  # Meta: event_id is optional, order_id is not
    if event_id is None:
        raise Invalid("missing_field", "event_id")
    user_data = obj.get("user_data") or {}
    if not isinstance(user_data, dict):
        raise Invalid("schema", "user_data must be an object")
    _check_user_data(user_data)
    if capi_shape:
        value = _money(custom.get("value"), strings=True)
        currency = _opt_str(custom, "currency", limit=8)
    else:
        value = _money(obj.get("value"), strings=False)
        currency = _opt_str(obj, "currency", limit=8)
    event_name = _str(obj, "event_name", limit=EVENT_NAME_LEN)
    ts = _event_time(obj) if capi_shape else _ts(obj)
    hashed, rejected = normalize_user_data(user_data)
    notes = phone_notes(user_data.get("ph"))
    opt_out = _restricted(obj, custom)
    if opt_out:
        hashed = {**dict.fromkeys(hashed), "opt_out": True}
        notes = ()
    return Conversion(
        event_id=forwarded_text(event_id),
        event_name=forwarded_text(event_name),
        source=source,
        ts=ts,
        advertiser_id=advertiser_id,
        value=value,
        currency=currency if currency is None or currency.isalpha() else None,
        user_data=hashed,
        rejected=rejected,
        opt_out=opt_out,
        notes=notes,
    )


def parse_conversion(raw: bytes | str | None) -> Conversion:
    """One conversion event, in any accepted shape (docs/contract.md); a batch envelope is
    :func:`parse_conversions`' to read."""
    obj = _load(raw)
    if "data" in obj:
        raise Invalid("schema", "a batch envelope: read it with parse_conversions")
    return _conversion_event(obj, None, batched=False)


def parse_conversions(raw: bytes | str | None) -> list[Conversion | Invalid]:
    """Every conversion of one record: a single event, or a batch envelope
    ``{"advertiser_id": ..., "data": [event, ...]}`` (what a CAPI endpoint receives).

    Raises :class:`Invalid` when the record as a whole is unusable (not JSON, not an object,
    ``data`` not a list, more than ``MAX_BATCH_EVENTS`` events). Otherwise one item per event,
    in order: its :class:`Conversion`, or the :class:`Invalid` that event alone goes to
    dead-letter with (``index`` its position, ``payload`` its JSON).

    >>> items = parse_conversions(b'{"advertiser_id": "adv-1", "data": [{"event_name": "lead",'
    ...     b' "event_id": "e1", "event_time": 1767571200, "user_data": {"em": ["A@b.co"]}},'
    ...     b' {"event_name": "lead"}]}')
    >>> items[0].key, items[0].ts, items[0].source
    ('adv-1:lead:e1', 1767571200000, 'capi')
    >>> items[1].index, str(items[1])
    (1, 'missing_field: data[1]: event_id')
    """
    return conversions_from_value(_load(raw, limit=MAX_ENVELOPE_BYTES))


def conversions_from_value(obj: Any) -> list[Conversion | Invalid]:
    """:func:`parse_conversions` of an already decoded value (a replay line's ``value``): the
    offline engine's way in, so that it reads every shape exactly as the worker does.

    >>> [c.key for c in conversions_from_value({"advertiser_id": "a", "data": [
    ...     {"event_name": "lead", "event_id": "e1", "event_time": 1767571200}]})]
    ['a:lead:e1']
    """
    if not isinstance(obj, dict):
        raise Invalid("schema", "value is not a JSON object")
    if "data" not in obj:
        try:
            return [_conversion_event(obj, None, batched=False)]
        except Invalid as exc:
            return [exc]
    events = obj["data"]
    if not isinstance(events, list):
        raise Invalid("schema", "data must be a list of events")
    if len(events) > MAX_BATCH_EVENTS:
        raise Invalid("too_long", f"data has more than {MAX_BATCH_EVENTS} events")
    advertiser_id = _opt_str(obj, "advertiser_id")
    out: list[Conversion | Invalid] = []
    for i, event in enumerate(events):
        try:
            if not isinstance(event, dict):
                raise Invalid("schema", "event is not a JSON object")
            out.append(_conversion_event(event, advertiser_id, batched=True))
        except Invalid as exc:
            detail = f"data[{i}]: {exc.detail}" if exc.detail else f"data[{i}]"
            # Redacted here already: a caller that forgets to cannot forward the raw event.
            payload = redact_pii(orjson.dumps(event))
            out.append(Invalid(exc.reason, detail, index=i, payload=payload))
    return out


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
        event_id=forwarded_text(_str(obj, "event_id")),
        event_name=forwarded_text(_str(obj, "event_name", limit=EVENT_NAME_LEN)),
        user_id=_opt_str(obj, "user_id"),
        ts=_ts(obj),
    )
