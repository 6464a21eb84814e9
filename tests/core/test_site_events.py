"""Which event names are conversions: advertiser configuration; the others feed the graph.

The offline engine labels conversions only and counts the rest by name; on generated traffic
with site events the labels are those of the same traffic without them.
"""

from __future__ import annotations

import copy

import pytest

from convstream.core.attribution import AttributionConfig, AttributionSettings
from convstream.core.engine import OfflineEngine, run_offline
from convstream.core.matching.baseline import RuleBaseline
from convstream.core.settings_file import parse_attribution_config

T = 1_767_571_200_000


def _event(event_id: str, name: str, **user_data: str) -> dict:
    value = {
        "event_id": event_id,
        "event_name": name,
        "source": "pixel",
        "ts": T + 60_000,
        "advertiser_id": "a",
        "value": 5.0,
        "currency": "USD",
        "user_data": user_data,
    }
    return {"topic": "conversions", "value": value}


CLICK = {"topic": "clicks", "value": {"event_id": "k1", "click_id": "k1", "ts": T,
         "user_id": "u1", "advertiser_id": "a", "campaign_id": "c", "ad_id": "ad",
         "ip": "10.0.0.1", "user_agent": "UA", "device_id": None}}  # fmt: skip


def test_settings_file_names_the_conversions_per_advertiser():
    config = parse_attribution_config(
        '[default]\nsite_events = ["PageView"]\n'
        '[advertiser."b"]\nconversion_events = ["Purchase"]\n'
    )
    assert config.is_conversion("a", "Login") and not config.is_conversion("a", "PageView")
    assert config.is_conversion("b", "Purchase") and not config.is_conversion("b", "AddToCart")
    assert not AttributionConfig().is_conversion("a", "ViewContent")
    with pytest.raises(ValueError, match="conversion_events"):
        parse_attribution_config('[default]\nconversion_events = "Purchase"\n')
    with pytest.raises(ValueError, match="site_events"):
        AttributionSettings(site_events=("PageView", 3))  # type: ignore[arg-type]


def test_engine_labels_conversions_and_counts_site_events():
    lines = [
        CLICK,
        _event("p1", "PageView", fbc="fb.1.1.k1"),
        _event("o1", "Purchase", click_id="k1"),
        _event("c1", "AddToCart", click_id="k1"),
    ]
    engine = OfflineEngine(RuleBaseline)
    for line in lines:
        engine.feed(line)
    assert sorted(x["conversion_key"] for x in engine.finish()) == [
        "a:AddToCart:c1",
        "a:Purchase:o1",
    ]
    assert engine.site_events == {"PageView": 1}
    only = parse_attribution_config('[advertiser."a"]\nconversion_events = ["Purchase"]\n')
    engine = OfflineEngine(RuleBaseline, attribution_config=only)
    for line in lines:
        engine.feed(line)
    assert [x["conversion_key"] for x in engine.finish()] == ["a:Purchase:o1"]
    assert engine.site_events == {"PageView": 1, "AddToCart": 1}


def test_labels_on_generated_traffic_do_not_change_with_site_events():
    from convstream.synth.generate import config_from_args, generate, is_site_event

    lines, _ = generate(config_from_args("ip-loss", users=300, days=5, seed=4))
    site = sum(map(is_site_event, lines))
    assert site > 500
    stripped = []
    for line in lines:
        if not is_site_event(line):
            line = copy.deepcopy(line)
            if line["topic"] == "conversions":
                line["value"]["user_data"].pop("fbp", None)
            stripped.append(line)
    with_site = run_offline(lines, RuleBaseline)
    assert with_site == run_offline(stripped, RuleBaseline)
    assert len(with_site) > 50
