"""Dedupe of the CAPI and pixel copies of one conversion, in event time.

Copies with the same ``advertiser_id:event_name:event_id`` within the dedupe window are one
conversion: the first copy is stored, later copies only fill in user_data fields it lacked. All
times are event times (the conversions partition clock), never the wall clock, so a replay makes
the same decisions; :func:`convstream.core.coordinator.admit` applies these rules.

>>> merge_user_data({"em": "h1"}, {"em": "h2", "ph": "h3"})
{'em': 'h1', 'ph': 'h3'}
"""

from __future__ import annotations

from typing import Any

ConversionKey = str


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
