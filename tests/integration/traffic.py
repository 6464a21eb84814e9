"""Small hand-made traffic for integration tests, where the exact answer is known."""

from __future__ import annotations

from typing import Any

T0 = 1_767_571_200_000  # 2026-01-05T00:00Z, event time of every test stream
MIN = 60_000


def click(i: int, ts: int, advertiser: str = "adv-1") -> dict[str, Any]:
    return {
        "topic": "clicks",
        "value": {
            "event_id": f"clk-{i}",
            "click_id": f"clk-{i}",
            "ts": ts,
            "user_id": f"user-{i}",
            "advertiser_id": advertiser,
            "campaign_id": "camp-1",
            "ad_id": f"ad-{i % 7}",
            "ip": f"198.51.{i // 250}.{i % 250}",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
            "device_id": None,
        },
    }


def impression(i: int, ts: int, advertiser: str = "adv-1") -> dict[str, Any]:
    line = click(i, ts, advertiser)
    value = dict(line["value"])
    del value["click_id"]
    value["event_id"] = f"imp-{i}-{ts}"
    return {"topic": "impressions", "value": value}


def conversion(
    i: int, ts: int, *, source: str = "pixel", advertiser: str = "adv-1", **user_data: Any
) -> dict[str, Any]:
    return {
        "topic": "conversions",
        "value": {
            "event_id": f"order-{i}",
            "event_name": "Purchase",
            "source": source,
            "ts": ts,
            "advertiser_id": advertiser,
            "value": 10.0 + i,
            "currency": "EUR",
            "user_data": user_data,
        },
    }


def key(i: int, advertiser: str = "adv-1") -> str:
    return f"{advertiser}:Purchase:order-{i}"
