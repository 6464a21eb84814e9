"""The generator's causal truth: holdouts, ghost impressions, lift shares, campaign truth."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest

from convstream.synth.generate import (
    CLICK_WINDOW_MS,
    Generated,
    GeneratorConfig,
    campaign_truth_path,
    config_from_args,
    generate,
    generate_all,
)

SMALL = {"users": 400, "days": 6}


def conv_key(v: dict[str, Any]) -> str:
    return f"{v['advertiser_id']}:{v['event_name']}:{v['event_id']}"


@pytest.fixture(scope="module")
def world() -> Generated:
    return generate_all(GeneratorConfig(seed=5, holdout_share=0.2, **SMALL))


@pytest.fixture(scope="module")
def no_holdout() -> Generated:
    return generate_all(GeneratorConfig(seed=5, holdout_share=0.0, **SMALL))


def _held_pairs(g: Generated) -> set[tuple[str, str]]:
    return {
        (line["value"]["user_id"], line["value"]["campaign_id"])
        for line in g.lines
        if line["topic"] == "impressions" and line["value"].get("holdout")
    }


def test_exposed_users_traffic_is_the_world_without_holdouts(world, no_holdout):
    """Holdouts draw from streams of their own: users held out of nothing see, click and
    convert exactly as in a world without holdouts, line for line and in the same order."""
    held_users = {user for user, _ in _held_pairs(world)}
    truth_user = {r["conversion_key"]: r["user_id"] for r in no_holdout.truth + world.truth}
    # Site events too: each person's come from a stream of their own.
    truth_user |= no_holdout.site_senders | world.site_senders

    def user_of(line: dict[str, Any]) -> str | None:
        v = line["value"]
        return truth_user[conv_key(v)] if line["topic"] == "conversions" else v["user_id"]

    def untouched(g: Generated) -> list[dict[str, Any]]:
        return [line for line in g.lines if user_of(line) not in held_users]

    assert len(untouched(world)) > 500
    assert untouched(world) == untouched(no_holdout)
    assert not _held_pairs(no_holdout)


def test_holdout_is_per_user_and_campaign_stable_and_never_clicked(world):
    flags: dict[tuple[str, str], set[bool]] = defaultdict(set)
    clicked: set[tuple[str, str]] = set()
    for line in world.lines:
        v = line["value"]
        if line["topic"] == "impressions":
            flags[(v["user_id"], v["campaign_id"])].add(bool(v.get("holdout")))
        elif line["topic"] == "clicks":
            clicked.add((v["user_id"], v["campaign_id"]))
    assert all(len(f) == 1 for f in flags.values())
    held = {pair for pair, f in flags.items() if f == {True}}
    assert 0.15 < len(held) / len(flags) < 0.25  # holdout_share 0.2
    assert not held & clicked
    # The same user is held out of one campaign and shown another.
    users_held = {u for u, _ in held}
    assert any((u, c) not in held for u, c in flags if u in users_held)
    # Stable: another run, another holdout share draws from the same hash.
    again = _held_pairs(generate_all(GeneratorConfig(seed=5, holdout_share=0.2, **SMALL)))
    assert again == held


def test_truth_incremental_probability_and_holdout_flags(world):
    held = _held_pairs(world)
    zero = {c["campaign_id"] for c in world.campaigns if c["zero_lift"]}
    positive = 0
    for row in world.truth:
        p = row["incremental_probability"]
        assert 0.0 <= p <= 1.0
        if row["kind"] in ("organic", "stranger"):
            assert p == 0.0
        if row["user_id"] is None:
            assert row["holdout"] is False
            continue
        if row["campaign_id"] is not None:
            assert row["holdout"] == ((row["user_id"], row["campaign_id"]) in held)
        if row["holdout"]:
            # A held-out user's conversion was never caused by that campaign's ads.
            assert p == 0.0 and row["kind"] == "organic"
        if row["campaign_id"] in zero:
            assert p == 0.0
        positive += p > 0
    assert positive > 10
    # Held-out users still convert on the visits they would have made anyway.
    assert any(row["holdout"] for row in world.truth)


def test_campaign_truth_counts_agree_with_a_recount(world):
    """Exposed and held-out users, and their conversions at the advertiser in the window after
    the first (ghost) impression, recounted from the replay and the truth rows."""
    first: dict[tuple[str, str], int] = {}
    holdout: dict[tuple[str, str], bool] = {}
    for line in world.lines:
        v = line["value"]
        if line["topic"] == "impressions":
            key = (v["user_id"], v["campaign_id"])
            first[key] = min(first.get(key, v["ts"]), v["ts"])
            holdout[key] = bool(v.get("holdout"))
    counts: Counter[tuple[str, bool, str]] = Counter()
    for user, campaign in first:
        counts[(campaign, holdout[(user, campaign)], "users")] += 1
    adv_of = {c["campaign_id"]: c["advertiser_id"] for c in world.campaigns}
    for row in world.truth:
        for (user, campaign), ts in first.items():
            if user == row["user_id"] and adv_of[campaign] == row["advertiser_id"]:
                if ts <= row["ts"] <= ts + CLICK_WINDOW_MS:
                    counts[(campaign, holdout[(user, campaign)], "conversions")] += 1
    for c in world.campaigns:
        cid = c["campaign_id"]
        assert c["exposed_users"] == counts[(cid, False, "users")]
        assert c["holdout_users"] == counts[(cid, True, "users")]
        assert c["exposed_conversions"] == counts[(cid, False, "conversions")]
        assert c["holdout_conversions"] == counts[(cid, True, "conversions")]


def test_campaign_truth_lift_zero_campaigns_and_shares(world):
    rows = world.campaigns
    zero = [c for c in rows if c["zero_lift"]]
    assert len(zero) == round(len(rows) * 0.25)
    for c in zero:
        assert c["true_incremental"] == 0.0 and c["lift_share"] == 0.0
        assert c["true_lift"] in (0.0, None)
    lifted = [c for c in rows if not c["zero_lift"] and c["true_lift"] is not None]
    assert all(c["true_incremental"] >= 0 and c["true_lift"] >= 0 for c in lifted)
    assert sum(c["true_lift"] > 0 for c in lifted) > len(lifted) / 2
    for c in rows:
        assert c["true_baseline"] >= 0 and c["holdout_share"] == 0.2


def test_zero_lift_everywhere_suppresses_no_visit(no_holdout):
    """With no lift anywhere a held-out user makes every visit anyway: as many conversions as
    in the world without holdouts (each ad-driven one of a held-out user now organic)."""
    cfg = GeneratorConfig(seed=5, holdout_share=0.2, zero_lift_campaign_share=1.0, **SMALL)
    _, truth = generate(cfg)
    assert len(truth) == len(no_holdout.truth)
    kinds = Counter(r["kind"] for r in truth)
    assert kinds["organic"] > Counter(r["kind"] for r in no_holdout.truth)["organic"]


def test_full_lift_makes_held_out_users_lose_ad_driven_visits(no_holdout):
    cfg = GeneratorConfig(seed=5, holdout_share=0.2, zero_lift_campaign_share=0.0, **SMALL)
    _, truth = generate(cfg)
    assert len(truth) < len(no_holdout.truth)


def test_profiles_all_have_holdouts_and_config_checks():
    for name in ("default", "heavy-sharing", "hard"):
        g = generate_all(config_from_args(name, seed=2, users=120, days=3))
        assert _held_pairs(g) and g.campaigns
    for bad in ({"holdout_share": 1.0}, {"zero_lift_campaign_share": 1.5}):
        with pytest.raises(ValueError):
            GeneratorConfig(**bad)
    with pytest.raises(ValueError):
        GeneratorConfig(campaign_lift_range=(0.8, 0.2))
    assert campaign_truth_path("a/t.jsonl").name == "t.campaigns.jsonl"
