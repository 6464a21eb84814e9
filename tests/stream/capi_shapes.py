"""Today's conversion events rewritten as advertisers send them to Pinterest and Meta.

For tests that compare the shapes (here, and for the lifecycle's end-to-end test): the same
conversion in another shape must give the same key and the same identifier keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _listed(value: Any) -> list[Any] | None:
    return None if value is None else [value]


def _click_id(ud: dict[str, Any]) -> Any:
    """The click id of today's shape: ``click_id``, else the one inside Meta's ``fbc`` (site
    events of the generator carry it that way)."""
    fbc = ud.get("fbc")
    if ud.get("click_id") is None and isinstance(fbc, str) and fbc.count(".") >= 3:
        return fbc.split(".", 3)[3]
    return ud.get("click_id")


def to_pinterest(event: dict[str, Any]) -> dict[str, Any]:
    """A Pinterest v5 CAPI event (``event_time`` in seconds, identifier arrays, custom_data)."""
    ud = event.get("user_data") or {}
    out: dict[str, Any] = {
        "event_name": event["event_name"],
        "action_source": "web",
        "event_time": event["ts"] // 1000,
        "event_id": event["event_id"],
        "user_data": {
            "em": _listed(ud.get("em")),
            "ph": _listed(ud.get("ph")),
            "external_id": _listed(ud.get("external_id")),
            "hashed_maids": _listed(ud.get("device_id")),
            "click_id": _click_id(ud),
            "client_ip_address": ud.get("client_ip_address"),
            "client_user_agent": ud.get("client_user_agent"),
        },
        "custom_data": {
            "currency": event.get("currency"),
            "value": None if event.get("value") is None else f"{event['value']}",
        },
    }
    if event.get("source") == "pixel":
        out["source"] = "pixel"
    return out


def to_meta(event: dict[str, Any]) -> dict[str, Any]:
    """A Meta CAPI event: lists where the SDK makes them, ``fbc`` with the click id, ``madid``."""
    ud = event.get("user_data") or {}
    click = _click_id(ud)
    out: dict[str, Any] = {
        "event_name": event["event_name"],
        "event_time": event["ts"] // 1000,
        "event_id": event["event_id"],
        "action_source": "website",
        "advertiser_id": event["advertiser_id"],
        "user_data": {
            "em": _listed(ud.get("em")),
            "ph": ud.get("ph"),  # Meta takes a string or a list
            "external_id": _listed(ud.get("external_id")),
            "madid": ud.get("device_id"),
            "fbc": None if click is None else f"fb.1.{event['ts']}.{click}",
            "fbp": ud.get("fbp"),
            "client_ip_address": ud.get("client_ip_address"),
            "client_user_agent": ud.get("client_user_agent"),
        },
        "custom_data": {"value": event.get("value"), "currency": event.get("currency")},
    }
    if event.get("source") == "pixel":
        out["source"] = "pixel"
    return out


def pinterest_envelopes(events: Iterable[dict[str, Any]], size: int = 5) -> list[dict[str, Any]]:
    """Consecutive events of one advertiser batched ``size`` at a time, as a CAPI client does."""
    out: list[dict[str, Any]] = []
    for event in events:
        last = out[-1] if out else None
        if (
            last is None
            or last["advertiser_id"] != event["advertiser_id"]
            or len(last["data"]) >= size
        ):
            last = {"advertiser_id": event["advertiser_id"], "data": []}
            out.append(last)
        last["data"].append(to_pinterest(event))
    return out
