"""Ghost impressions (``"holdout": true``): identity evidence, never an engagement."""

from __future__ import annotations

import orjson
import pytest

from convstream.core.engagements import engagement_row
from convstream.core.engine import run_offline
from convstream.core.matching.model import MatchModel
from convstream.core.records import Invalid, parse_click, parse_impression
from convstream.synth.generate import GeneratorConfig, generate

T = 1_767_571_200_000
MIN = 60_000
DEVICE = "ab" * 32


def _impression(event_id: str, ts: int, *, holdout: bool | None) -> dict:
    value = {
        "event_id": event_id,
        "ts": ts,
        "user_id": "u1",
        "advertiser_id": "a",
        "campaign_id": "c",
        "ad_id": "ad",
        "ip": "10.0.0.1",
        "user_agent": "UA-1",
        "device_id": DEVICE,
    }
    if holdout is not None:
        value["holdout"] = holdout
    return {"topic": "impressions", "value": value}


def _replay(*, holdout: bool | None) -> list[dict]:
    """One impression, then a conversion from the same device a few minutes later (in the view
    window), then engagements past the watermark so the lookup is answered."""
    conversion = {
        "event_id": "o1",
        "event_name": "Purchase",
        "source": "pixel",
        "ts": T + 5 * MIN,
        "advertiser_id": "a",
        "value": 10.0,
        "currency": "USD",
        "user_data": {"device_id": DEVICE, "client_ip_address": "10.0.0.1"},
    }
    later = _impression("i-later", T + 60 * MIN, holdout=None)
    later["value"]["advertiser_id"] = "other"
    return [
        _impression("i1", T, holdout=holdout),
        {"topic": "conversions", "value": conversion},
        later,
    ]


def _final(labels: list[dict]) -> dict:
    (key,) = {label["conversion_key"] for label in labels}
    return max((x for x in labels if x["conversion_key"] == key), key=lambda x: x["revision"])


def test_a_shown_impression_gets_the_credit_the_same_ghost_never_does():
    shown = _final(run_offline(_replay(holdout=False), MatchModel))
    ghost = _final(run_offline(_replay(holdout=True), MatchModel))
    # The control: the same replay with the ad shown credits that impression.
    assert shown["user_id"] == "u1"
    assert [c["engagement_id"] for c in shown["credits"]] == ["i1"]
    # The ghost still identifies the user (its device id is a sighting) but gets no credit.
    assert ghost["user_id"] == "u1" and ghost["match_method"] == "deterministic:dev"
    assert ghost["credits"] == [] and ghost["label_weight"] == 0.0


def test_no_label_of_a_generated_replay_credits_a_ghost_impression():
    lines, _ = generate(GeneratorConfig(seed=3, users=250, days=4, holdout_share=0.3))
    ghosts = {
        line["value"]["event_id"]
        for line in lines
        if line["topic"] == "impressions" and line["value"].get("holdout")
    }
    credited = {
        c["engagement_id"] for label in run_offline(lines, MatchModel) for c in label["credits"]
    }
    assert ghosts and credited
    assert not ghosts & credited


def test_parser_reads_holdout_and_refuses_a_ghost_click():
    ghost = _impression("g1", T, holdout=True)["value"]
    assert parse_impression(orjson.dumps(ghost)).holdout is True
    assert parse_impression(orjson.dumps({**ghost, "holdout": None})).holdout is False
    assert engagement_row(parse_impression(orjson.dumps(ghost))) is None
    shown = parse_impression(orjson.dumps({**ghost, "holdout": False}))
    assert engagement_row(shown) == [T, "view", "g1", "a", "c", "ad"]
    for bad in ("yes", 1, 0):
        with pytest.raises(Invalid) as exc:
            parse_impression(orjson.dumps({**ghost, "holdout": bad}))
        assert exc.value.reason == "schema"
    with pytest.raises(Invalid) as exc:
        parse_click(orjson.dumps({**ghost, "event_id": "k1", "click_id": "k1"}))
    assert exc.value.reason == "schema"
