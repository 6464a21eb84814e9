"""Dedupe of the CAPI and pixel copies of one conversion, in event time.

Copies with the same ``advertiser_id:event_name:event_id`` within the dedupe window are one
conversion: the first copy is stored, later copies only fill in user_data fields it lacked. All
times are event times (the conversions partition clock), never the wall clock, so a replay makes
the same decisions.

>>> state = None
>>> classify_copy(state, copy_ts=1_000, clock_ts=1_000, window_ms=500)
'new'
>>> state = first_copy_state(1_000, clock_ts=1_000)
>>> classify_copy(state, copy_ts=1_200, clock_ts=1_200, window_ms=500)
'duplicate'
>>> classify_copy(None, copy_ts=100, clock_ts=1_200, window_ms=500)
'late'
"""

from __future__ import annotations

from typing import Any, Literal

ConversionKey = str
DedupeDecision = Literal["new", "duplicate", "late"]

DEFAULT_DEDUPE_WINDOW_MS = 48 * 60 * 60 * 1000


def conversion_key(advertiser_id: str, event_name: str, event_id: str) -> ConversionKey:
    """The key that CAPI and pixel copies of one conversion share.

    >>> conversion_key("adv-7", "Purchase", "ord-42")
    'adv-7:Purchase:ord-42'
    """
    return f"{advertiser_id}:{event_name}:{event_id}"


def _missing(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == ()


def merge_user_data(first: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """A new user_data: the first copy's fields win; ``later`` fills only the ones it lacked.

    A field is lacking when missing, None or empty; a list counts as one value (the first
    copy's list is kept whole). An opt-out (``"opt_out": True``, see records.Conversion) on
    either copy wins over everything: the merged copy keeps no identifier at all.

    >>> merge_user_data({"em": "h1", "ph": None}, {"em": "h2", "ph": "h3", "click_id": "c"})
    {'em': 'h1', 'ph': 'h3', 'click_id': 'c'}
    >>> merge_user_data({"em": "h1", "ph": None}, {"em": None, "opt_out": True})
    {'em': None, 'ph': None, 'opt_out': True}
    """
    if first.get("opt_out") or later.get("opt_out"):
        return {**dict.fromkeys(first), **dict.fromkeys(later), "opt_out": True}
    merged = dict(first)
    for name, value in later.items():
        if _missing(merged.get(name)) and not _missing(value):
            merged[name] = value
    return merged


def identifier_gain(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """user_data fields present in ``after`` but not in ``before``, in ``after``'s order.

    Non-empty means a later copy brought new identifiers, so a corrected label may be due.

    >>> identifier_gain({"em": "h1", "ph": None}, {"em": "h1", "ph": "h3", "click_id": None})
    ['ph']
    """
    return [
        name for name, value in after.items() if not _missing(value) and _missing(before.get(name))
    ]


def first_copy_state(copy_ts: int, clock_ts: int) -> dict[str, int]:
    """The stored summary of a conversion's first copy, as :func:`classify_copy` reads it.

    >>> first_copy_state(1_000, clock_ts=1_500)
    {'ts': 1000, 'first_seen_clock': 1500}
    """
    return {"ts": copy_ts, "first_seen_clock": clock_ts}


def expired(existing: dict[str, Any] | None, clock_ts: int, window_ms: int) -> bool:
    """True when the stored first copy can be dropped: the clock moved past the window.

    The window runs from the later of the copy's event time and the clock when it was first
    seen, so a first copy that arrived late still dedupes the copies that follow it. It expires
    strictly after ``window_ms`` (at exactly the window it is still live). No state is expired.

    >>> state = first_copy_state(1_000, clock_ts=1_000)
    >>> expired(state, 1_500, 500), expired(state, 1_501, 500), expired(None, 0, 500)
    (False, True, True)
    """
    if existing is None:
        return True
    anchor = max(existing["ts"], existing.get("first_seen_clock", existing["ts"]))
    return clock_ts - anchor > window_ms


def classify_copy(
    existing: dict[str, Any] | None,
    copy_ts: int,
    clock_ts: int,
    window_ms: int = DEFAULT_DEDUPE_WINDOW_MS,
) -> DedupeDecision:
    """Decide what a conversion copy is, given the stored first copy (or None).

    - ``"duplicate"``: a live first copy exists and the two event times are at most
      ``window_ms`` apart (inclusive): merge its user_data, emit no new conversion;
    - ``"late"``: no live state and the copy is older than ``clock_ts - window_ms`` (strictly):
      its dedupe state would already be gone, so it is counted and dropped;
    - ``"new"``: otherwise, a conversion to store and resolve. This includes a copy whose event
      time is more than the window away from a live first copy (a distinct conversion that
      reuses the event id, as CAPI dedupe rules have it).

    >>> state = first_copy_state(10_000, clock_ts=10_000)
    >>> [classify_copy(state, ts, clock_ts=10_000, window_ms=1_000) for ts in (9_000, 8_999)]
    ['duplicate', 'late']
    >>> classify_copy(None, 9_000, clock_ts=10_000, window_ms=1_000)
    'new'
    """
    if (
        existing is not None
        and not expired(existing, clock_ts, window_ms)
        and abs(copy_ts - existing["ts"]) <= window_ms
    ):
        return "duplicate"
    if copy_ts < clock_ts - window_ms:
        return "late"
    return "new"
