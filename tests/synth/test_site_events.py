"""Advertiser site events in generated traffic: the old traffic reproduced, cookies that churn,
landing page views with the click id, logins with identifiers, and the truth's graph reach."""

from __future__ import annotations

import copy
import hashlib
from collections import defaultdict
from typing import Any

import orjson
import pytest

from convstream.core.records import Conversion, parse_conversions
from convstream.core.units import DAY_MS
from convstream.synth.generate import (
    Generated,
    GeneratorConfig,
    config_from_args,
    generate_all,
    is_site_event,
)
from convstream.synth.site import SITE_EVENT_NAMES, CookieJar

#: sha256 of the replay (orjson line + newline) for users=300, days=4, seed=7, computed on main
#: before site events existed (commit d5c2a9e): site_events=False must give these bytes.
BEFORE_SITE_EVENTS = {
    "default": "fe10a08afe089d45a1cfb809e9e0f6f87867ee62b508fe1e5b435a7baff82ceb",
    "ip-loss": "7aed5472fbebd26abadaa9ecae9bc8d786a920a1544b356c1de82639213ac4d5",
    "heavy-sharing": "513052eda7434c9896c9eb7d68ea6d83c0a1ef492e94006ab1f29412f63f7234",
    "hard": "4791bd021191f00694818e818667965ec89f156094bb6b6eccf68984d19636bb",
    "ua-drift": "a77f99ac5dc2be8fcc66f9ecaa7f924a9c95b9351570867269cd0d7ee824265c",
}
SMALL = {"users": 500, "days": 10}


def _digest(lines: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(orjson.dumps(line) + b"\n")
    return h.hexdigest()


@pytest.mark.parametrize("profile", sorted(BEFORE_SITE_EVENTS))
def test_site_events_off_reproduces_the_traffic_before_them_byte_for_byte(profile):
    cfg = config_from_args(profile, users=300, days=4, seed=7, site_events=False)
    g = generate_all(cfg)
    assert _digest(g.lines) == BEFORE_SITE_EVENTS[profile]
    assert not any(is_site_event(line) for line in g.lines)


@pytest.fixture(scope="module")
def churn() -> Generated:
    return generate_all(config_from_args("cookie-churn", seed=3, **SMALL))


@pytest.fixture(scope="module")
def default() -> Generated:
    return generate_all(config_from_args("default", seed=3, **SMALL))


def _strip(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        if is_site_event(line):
            continue
        if line["topic"] == "conversions":
            line = copy.deepcopy(line)
            line["value"]["user_data"].pop("fbp", None)
        out.append(line)
    return out


@pytest.mark.parametrize("profile", ["default", "hard"])
def test_site_events_only_add_lines_and_fbp(profile):
    """The site's own streams: every other event, field and truth row is as without it."""
    on = generate_all(config_from_args(profile, seed=2, users=300, days=5))
    off = generate_all(config_from_args(profile, seed=2, users=300, days=5, site_events=False))
    assert sum(map(is_site_event, on.lines)) > 500
    assert _strip(on.lines) == off.lines

    def no_reach(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not k.startswith("graph_")} for r in rows]

    assert no_reach(on.truth) == no_reach(off.truth)
    # The site's events only add reach.
    assert all(
        a["graph_linkable"] >= b["graph_linkable"] for a, b in zip(on.truth, off.truth, strict=True)
    )
    assert on.campaigns == off.campaigns


def test_site_events_are_accepted_conversions_shapes_with_fbp_and_fbc(default):
    site = [line["value"] for line in default.lines if is_site_event(line)]
    names = {v["event_name"] for v in site}
    assert names == set(SITE_EVENT_NAMES)
    for v in site:
        ud = v["user_data"]
        assert ud["click_id"] is None and ud["device_id"] is None
        if v["source"] == "pixel":
            assert ud["fbp"].startswith("fb.1.") and ud["external_id"] is None
        if ud["fbc"] is not None:
            assert ud["fbc"].startswith(f"fb.1.{v['ts']}.") or v["event_name"] == "ViewContent"
        (item,) = parse_conversions(orjson.dumps(v))
        assert isinstance(item, Conversion), item
        assert "fbp" not in item.user_data  # dropped at ingestion until the graph reads it
    # Every site event is known to its sender; strangers browse too.
    keys = {f"{v['advertiser_id']}:{v['event_name']}:{v['event_id']}" for v in site}
    assert keys == set(default.site_senders)
    assert None in default.site_senders.values()


def test_landing_page_views_carry_the_click_id_of_a_click_seconds_before(default):
    clicks = {v["click_id"]: v for line in default.lines if line["topic"] == "clicks"
              for v in [line["value"]]}  # fmt: skip
    landings = [
        line["value"]
        for line in default.lines
        if is_site_event(line)
        and line["value"]["event_name"] == "PageView"
        and line["value"]["user_data"]["fbc"]
    ]
    assert len(landings) > 0.5 * len(clicks)
    for v in landings:
        click = clicks[v["user_data"]["fbc"].split(".", 3)[3]]
        assert click["advertiser_id"] == v["advertiser_id"]
        assert 0 <= v["ts"] - click["ts"] <= 60_000
        assert (
            default.site_senders[f"{v['advertiser_id']}:PageView:{v['event_id']}"]
            == (click["user_id"])
        )


def test_logins_carry_an_email_or_external_id(default):
    logins = [line["value"] for line in default.lines if is_site_event(line)
              and line["value"]["event_name"] == "Login"]  # fmt: skip
    assert len(logins) > 50
    for v in logins:
        ud = v["user_data"]
        assert ud["em"] or ud["external_id"]
    assert any(v["user_data"]["external_id"] for v in logins)


def _browser_ids_per_person(g: Generated) -> float:
    ids: dict[str, set[str]] = defaultdict(set)
    for line in g.lines:
        v = line["value"]
        if is_site_event(line) and v["user_data"]["fbp"]:
            user = g.site_senders[f"{v['advertiser_id']}:{v['event_name']}:{v['event_id']}"]
            if user is not None:
                ids[f"{user}/{v['advertiser_id']}"].add(v["user_data"]["fbp"])
    return sum(map(len, ids.values())) / len(ids)


def test_cookie_churn_gives_a_person_more_browser_ids_per_advertiser(default, churn):
    assert _browser_ids_per_person(default) > 1.0
    assert _browser_ids_per_person(churn) > _browser_ids_per_person(default) + 0.04


def test_cookie_jar_keeps_a_cookie_refreshed_and_loses_it_when_cleared_or_expired():
    jar = CookieJar(lifetime_ms=7 * DAY_MS, clears=[20 * DAY_MS])
    made = iter(f"fb.1.x.{i}" for i in range(10))

    def touch(day: float, adv: int = 0) -> str:
        return jar.touch(adv, int(day * DAY_MS), lambda ts: next(made))

    first = touch(0)
    assert touch(6) == touch(12) == touch(18) == first  # each visit refreshes it
    assert touch(18, adv=1) != first  # one per advertiser domain
    assert touch(21) != first  # cleared on day 20
    kept = touch(22)
    assert touch(29.5) != kept  # 7.5 days without a visit: Safari dropped it


def test_graph_hops_one_has_a_witness_event_in_the_replay(churn):
    """For a conversion reached in one hop, some event of the advertiser before it shares one
    of its non-address identifiers and carries one sighted for the converter by then."""
    sighted: dict[str, dict[str, int]] = defaultdict(dict)
    events: dict[str, list[tuple[int, set[str]]]] = defaultdict(list)
    own: dict[str, set[str]] = defaultdict(set)
    for line in churn.lines:
        v = line["value"]
        if line["topic"] in ("clicks", "identity", "impressions"):
            for f, kind in (("click_id", "click"), ("em", "em"), ("ph", "ph"),
                            ("device_id", "dev")):  # fmt: skip
                if v.get(f):
                    key = f"{kind}:{v[f]}"
                    sighted[key][v["user_id"]] = min(
                        sighted[key].get(v["user_id"], v["ts"]), v["ts"]
                    )
        elif line["topic"] == "conversions":
            ud = v["user_data"]
            nodes = {f"{k}:{ud[f]}" for f, k in (("click_id", "click"), ("em", "em"),
                     ("ph", "ph"), ("device_id", "dev"), ("external_id", "ext"),
                     ("fbp", "fbp")) if ud.get(f)}  # fmt: skip
            if ud.get("fbc"):
                nodes.add(f"click:{ud['fbc'].split('.', 3)[3]}")
            events[v["advertiser_id"]].append((v["ts"], nodes))
            own[f"{v['advertiser_id']}:{v['event_name']}:{v['event_id']}"] |= nodes
    one_hop = [r for r in churn.truth if r["graph_hops"] == 1 and not r["linkable"]]
    assert len(one_hop) >= 5
    for row in one_hop:
        mine, user, ts = own[row["conversion_key"]], row["user_id"], row["ts"]
        witnesses = [
            nodes
            for t, nodes in events[row["advertiser_id"]]
            if ts - 30 * DAY_MS <= t <= ts
            and nodes & mine
            and any(sighted.get(n, {}).get(user, ts + 1) <= ts for n in nodes - mine)
        ]
        assert witnesses, row


def test_cookie_churn_profile_gains_graph_reach(churn):
    platform = [r for r in churn.truth if r["user_id"] is not None]
    gained = sum(r["graph_linkable"] and not r["linkable"] for r in platform)
    assert gained / len(platform) > 0.02
    assert all(r["graph_hops"] <= 3 for r in platform if r["graph_hops"] is not None)


def test_generator_config_turns_site_events_off():
    assert GeneratorConfig().site_events is True
    assert config_from_args("cookie-churn", site_events=False).site_events is False
