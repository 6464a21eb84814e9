"""Issue 21, done-when: a placeholder email on 50 unrelated conversions across advertisers links
none of them to a user (before, one learned link matched them all at 0.93-0.97)."""

from __future__ import annotations

from convstream.core.engine import run_offline
from convstream.core.identity import sha256_hex
from convstream.core.matching.model import MatchModel

T = 1_767_571_200_000
MIN = 60_000
PLACEHOLDERS = ["noemail@example.com", "n/a", " NULL ", sha256_hex(""), "none@none.com"]


def _engagement(topic: str, user: str, ts: int, event_id: str, ip: str, **extra) -> dict:
    value = {
        "event_id": event_id, "ts": ts, "user_id": user, "advertiser_id": "adv-0",
        "campaign_id": "c", "ad_id": "ad", "ip": ip, "user_agent": "UA-1", "device_id": None,
    }  # fmt: skip
    return {"topic": topic, "value": {**value, **extra}}


def _conversion(advertiser: str, event_id: str, ts: int, **user_data) -> dict:
    return {
        "topic": "conversions",
        "value": {
            "event_id": event_id, "event_name": "Purchase", "source": "capi", "ts": ts,
            "advertiser_id": advertiser, "value": 10.0, "currency": "USD", "user_data": user_data,
        },
    }  # fmt: skip


def test_a_placeholder_email_links_no_conversion_to_a_user():
    lines = [
        # u1 signs in with the placeholder, clicks, and converts with the click id and the
        # placeholder: the conversion that used to teach "this placeholder is u1".
        {"topic": "identity", "value": {"user_id": "u1", "ts": T, "em": "noemail@example.com",
                                        "ph": "0", "device_id": "0000-0000", "ip": "10.0.0.1",
                                        "user_agent": "UA-1"}},
        _engagement("clicks", "u1", T + MIN, "k1", "10.0.0.1", click_id="k1"),
        _conversion("adv-0", "o-0", T + 2 * MIN, click_id="k1", em="noemail@example.com",
                    ph="0"),
    ]  # fmt: skip
    for i in range(50):
        ts = T + (10 + i) * MIN
        lines.append(_engagement("impressions", f"v{i}", ts, f"i{i}", f"10.1.{i}.1"))
        lines.append(
            _conversion(f"adv-{1 + i % 5}", f"o{i}", ts, em=PLACEHOLDERS[i % len(PLACEHOLDERS)])
        )
    lines.append(_engagement("impressions", "z", T + 200 * MIN, "iz", "10.9.9.9"))
    labels = {x["conversion_key"]: x for x in run_offline(lines, MatchModel)}
    assert labels["adv-0:Purchase:o-0"]["user_id"] == "u1"  # matched by its click id
    assert labels["adv-0:Purchase:o-0"]["match_method"] == "deterministic:click"
    strangers = [x for k, x in labels.items() if k != "adv-0:Purchase:o-0"]
    assert len(strangers) == 50
    assert [x["user_id"] for x in strangers] == [None] * 50
    assert {x["match_method"] for x in strangers} == {"none"}
