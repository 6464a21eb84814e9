from __future__ import annotations

import math
import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convstream.core.attribution import (
    ATTRIBUTION_MODELS,
    DAY_MS,
    AttributionConfig,
    AttributionSettings,
    Credit,
    Engagement,
    attribute,
    eligible,
    label_weight,
    normalize,
    weigh,
)
from convstream.core.settings_file import (
    AttributionConfigWatcher,
    load_attribution_config,
    parse_attribution_config,
)

T = 100 * DAY_MS
CLICK_W = 30 * DAY_MS
VIEW_W = DAY_MS


def click(ts: int, eid: str, ad: str = "ad") -> Engagement:
    return Engagement(ts, "click", eid, "adv", "camp", ad)


def view(ts: int, eid: str, ad: str = "ad") -> Engagement:
    return Engagement(ts, "view", eid, "adv", "camp", ad)


def ids(items) -> list[str]:
    return [(c.engagement if isinstance(c, Credit) else c).engagement_id for c in items]


def credits_by_id(credits: list[Credit]) -> dict[str, float]:
    return {c.engagement.engagement_id: c.credit for c in credits}


# --- Engagement and settings -----------------------------------------------------------------


def test_engagement_row_round_trip():
    row = [5, "view", "i1", "adv", "c1", "ad1"]
    e = Engagement.from_row(row)
    assert e == Engagement(5, "view", "i1", "adv", "c1", "ad1")
    assert e.to_row() == row


def test_settings_defaults():
    s = AttributionSettings()
    assert (s.model, s.click_window_ms, s.view_window_ms, s.half_life_ms) == (
        "last_touch",
        30 * DAY_MS,
        DAY_MS,
        7 * DAY_MS,
    )
    assert s.position_weights == (0.4, 0.2, 0.4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "u_shaped"},
        {"click_window_ms": -1},
        {"view_window_ms": -1},
        {"half_life_ms": 0},
        {"position_weights": (0.5, 0.5)},
        {"position_weights": (-0.1, 0.6, 0.5)},
        {"position_weights": (0, 0, 0)},
    ],
)
def test_settings_validation(kwargs):
    with pytest.raises(ValueError):
        AttributionSettings(**kwargs)


# --- eligibility -----------------------------------------------------------------------------


def test_click_window_inclusive_edge():
    s = AttributionSettings()
    assert ids(eligible(T, [click(T - CLICK_W, "k")], s)) == ["k"]
    assert eligible(T, [click(T - CLICK_W - 1, "k")], s) == []


def test_view_window_inclusive_edge():
    s = AttributionSettings()
    assert ids(eligible(T, [view(T - VIEW_W, "i")], s)) == ["i"]
    assert eligible(T, [view(T - VIEW_W - 1, "i")], s) == []


def test_engagement_after_conversion_is_not_eligible():
    s = AttributionSettings()
    assert ids(eligible(T, [click(T, "at")], s)) == ["at"]
    assert eligible(T, [click(T + 1, "after"), view(T + 1, "v")], s) == []


def test_click_beats_view():
    s = AttributionSettings()
    touches = [view(T - 10, "i_late"), click(T - 5 * DAY_MS, "k_old")]
    assert ids(eligible(T, touches, s)) == ["k_old"]
    assert ids(attribute(T, touches, s)) == ["k_old"]


def test_views_count_when_no_click_is_eligible():
    s = AttributionSettings()
    touches = [view(T - 10, "i"), click(T - CLICK_W - 1, "k_expired")]
    assert ids(eligible(T, touches, s)) == ["i"]


def test_eligible_sorted_by_ts_then_id_and_deduped():
    s = AttributionSettings()
    touches = [click(T - 1, "b"), click(T - 2, "z"), click(T - 1, "a"), click(T - 1, "a")]
    assert ids(eligible(T, touches, s)) == ["z", "a", "b"]


def test_eligible_accepts_rows_and_ignores_unknown_types():
    s = AttributionSettings()
    rows = [[T - 1, "click", "k", "adv", "c", "ad"], [T - 1, "install", "x", "adv", "c", "ad"]]
    assert ids(eligible(T, rows, s)) == ["k"]


# --- models on a hand example ----------------------------------------------------------------

HOUR = 3600 * 1000
EXAMPLE = [
    click(T - 4 * DAY_MS, "k1"),
    click(T - 2 * DAY_MS, "k2"),
    click(T - DAY_MS, "k3"),
    click(T - HOUR, "k4"),
    view(T - HOUR, "v1"),
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("last_touch", {"k4": 1.0}),
        ("first_touch", {"k1": 1.0}),
        ("linear", {"k1": 0.25, "k2": 0.25, "k3": 0.25, "k4": 0.25}),
        ("position_based", {"k1": 0.4, "k2": 0.1, "k3": 0.1, "k4": 0.4}),
    ],
)
def test_models_exact_credits(model, expected):
    credits = attribute(T, EXAMPLE, AttributionSettings(model=model))
    assert credits_by_id(credits) == pytest.approx(expected, abs=1e-15)
    assert math.fsum(c.credit for c in credits) == 1.0


def test_time_decay_exact_credits():
    s = AttributionSettings(model="time_decay", half_life_ms=DAY_MS)
    touches = [click(T - 2 * DAY_MS, "a"), click(T - DAY_MS, "b"), click(T, "c")]
    # weights 1/4, 1/2, 1 -> 1/7, 2/7, 4/7
    assert credits_by_id(attribute(T, touches, s)) == pytest.approx(
        {"a": 1 / 7, "b": 2 / 7, "c": 4 / 7}, abs=1e-15
    )


def test_time_decay_tiny_half_life_does_not_divide_by_zero():
    s = AttributionSettings(model="time_decay", half_life_ms=1)
    credits = attribute(T, [click(T - DAY_MS, "old"), click(T - DAY_MS + 1, "new")], s)
    assert credits_by_id(credits) == pytest.approx({"old": 1 / 3, "new": 2 / 3})


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, [1.0]), (2, [0.5, 0.5]), (3, [0.4, 0.2, 0.4]), (5, [0.4, 0.2 / 3, 0.2 / 3, 0.2 / 3, 0.4])],
)
def test_position_based_by_touch_count(n, expected):
    touches = [click(T - i * HOUR, f"k{i}") for i in range(n)]
    credits = attribute(T, touches, AttributionSettings(model="position_based"))
    assert [c.credit for c in credits] == pytest.approx(expected, abs=1e-15)


def test_ties_last_touch_greatest_id_first_touch_smallest_id():
    touches = [click(T - 5, "b"), click(T - 5, "c"), click(T - 5, "a")]
    assert ids(attribute(T, touches, AttributionSettings(model="last_touch"))) == ["c"]
    assert ids(attribute(T, touches, AttributionSettings(model="first_touch"))) == ["a"]


def test_nothing_eligible_gives_no_credit():
    assert attribute(T, [], AttributionSettings()) == []
    assert attribute(T, [view(T - 2 * DAY_MS, "i")], AttributionSettings()) == []


def test_normalize_puts_residue_on_top_credit():
    for n in range(1, 40):
        weights = [1.0 / (i + 1) for i in range(n)]
        assert math.fsum(normalize(weights)) == 1.0
    with pytest.raises(ValueError):
        normalize([0.0, 0.0])


# --- weigh -----------------------------------------------------------------------------------


def test_weigh_and_label_weight():
    credits = attribute(T, EXAMPLE, AttributionSettings(model="linear"))
    rows = weigh(credits, match_confidence=0.8)
    assert rows[0] == {
        "engagement_id": "k1",
        "engagement_type": "click",
        "ad_id": "ad",
        "campaign_id": "camp",
        "engagement_ts": T - 4 * DAY_MS,
        "credit": 0.25,
        "label_weight": 0.2,
    }
    assert label_weight(rows) == pytest.approx(0.8, abs=1e-12)
    assert label_weight([]) == 0.0


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan")])
def test_weigh_rejects_bad_confidence(bad):
    with pytest.raises(ValueError):
        weigh([], bad)


def test_config_for_advertiser():
    config = AttributionConfig(overrides={"adv-7": AttributionSettings(model="time_decay")})
    assert config.for_advertiser("adv-7").model == "time_decay"
    assert config.for_advertiser("other") == AttributionSettings()
    with pytest.raises(TypeError):
        config.overrides["x"] = AttributionSettings()  # type: ignore[index]


# --- property tests --------------------------------------------------------------------------

engagement_st = st.builds(
    Engagement,
    ts=st.integers(min_value=T - 40 * DAY_MS, max_value=T + DAY_MS),
    engagement_type=st.sampled_from(["click", "view"]),
    engagement_id=st.sampled_from([f"e{i}" for i in range(8)]),
    advertiser_id=st.just("adv"),
    campaign_id=st.sampled_from(["c1", "c2", None]),
    ad_id=st.sampled_from(["a1", "a2"]),
)
settings_st = st.builds(
    AttributionSettings,
    model=st.sampled_from(ATTRIBUTION_MODELS),
    click_window_ms=st.integers(min_value=0, max_value=35 * DAY_MS),
    view_window_ms=st.integers(min_value=0, max_value=2 * DAY_MS),
    half_life_ms=st.integers(min_value=1, max_value=10 * DAY_MS),
)


@given(st.lists(engagement_st, max_size=12), settings_st, st.randoms())
def test_credits_sum_to_one_and_ignore_input_order(touches, settings, rnd):
    credits = attribute(T, touches, settings)
    shuffled = list(touches)
    rnd.shuffle(shuffled)
    assert attribute(T, shuffled, settings) == credits
    if not credits:
        assert eligible(T, touches, settings) == []
        return
    assert abs(sum(c.credit for c in credits) - 1.0) <= 1e-12
    assert all(c.credit > 0 for c in credits)


@given(st.lists(engagement_st, max_size=12), settings_st)
def test_every_credited_engagement_is_eligible(touches, settings):
    credits = attribute(T, touches, settings)
    pool = set(eligible(T, touches, settings))
    for c in credits:
        assert c.engagement in pool
        window = (
            settings.click_window_ms
            if c.engagement.engagement_type == "click"
            else (settings.view_window_ms)
        )
        assert 0 <= T - c.engagement.ts <= window
        if any(e.engagement_type == "click" for e in pool):
            assert c.engagement.engagement_type == "click"


@given(st.lists(engagement_st, min_size=1, max_size=12))
def test_last_touch_goes_to_max_ts(touches):
    settings = AttributionSettings(model="last_touch")
    credits = attribute(T, touches, settings)
    pool = eligible(T, touches, settings)
    assert len(credits) == (1 if pool else 0)
    if credits:
        assert credits[0].engagement.ts == max(e.ts for e in pool)
        assert credits[0].credit == 1.0


def test_order_independence_on_large_random_input():
    rnd = random.Random(7)
    touches = [click(T - rnd.randrange(CLICK_W), f"k{i}") for i in range(300)]
    s = AttributionSettings(model="time_decay")
    expected = attribute(T, touches, s)
    for _ in range(5):
        rnd.shuffle(touches)
        assert attribute(T, touches, s) == expected


# --- settings file ---------------------------------------------------------------------------

GOOD = """
[default]
model = "last_touch"
click_window_days = 30
view_window_days = 1

[advertiser."adv-7"]
model = "time_decay"
half_life_days = 3
"""


def test_load_config(tmp_path):
    path = tmp_path / "attribution.toml"
    path.write_text(GOOD)
    config = load_attribution_config(path)
    assert config.default == AttributionSettings()
    adv = config.for_advertiser("adv-7")
    assert adv == AttributionSettings(model="time_decay", half_life_ms=3 * DAY_MS)
    assert config.for_advertiser("adv-1") is config.default


def test_override_inherits_from_default():
    config = parse_attribution_config(
        "[default]\nview_window_days = 0.5\nclick_window_ms = 1000\n"
        '[advertiser."a"]\nmodel = "position_based"\nposition_weights = [0.3, 0.4, 0.3]\n'
    )
    a = config.for_advertiser("a")
    assert (a.view_window_ms, a.click_window_ms) == (DAY_MS // 2, 1000)
    assert a.position_weights == (0.3, 0.4, 0.3)


def test_empty_file_is_defaults():
    assert parse_attribution_config("") == AttributionConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[default]\nmodel = "lifo"', "unknown attribution model 'lifo'"),
        ("[default]\nclick_window_days = -1", "click_window_days must not be negative"),
        ('[advertiser."a"]\nview_window_ms = -5', "view_window_ms must not be negative"),
        ("[default]\nhalf_life_days = 0", "half_life_ms must be positive"),
        ("[default]\nmodle = 'linear'", "unknown keys ['modle']"),
        ("[defaults]\n", "unknown tables ['defaults']"),
        ("[default]\nclick_window_days = true", "must be a number"),
        ("[default]\nclick_window_days = 1\nclick_window_ms = 5", "not both"),
        ("[default\n", "invalid TOML"),
        ('[advertiser."a"]\nposition_weights = [1, 2]', "position_weights"),
    ],
)
def test_invalid_config_raises_clear_error(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_attribution_config(text)


def _rewrite(path, text: str, mtime_s: int) -> None:
    path.write_text(text)
    os.utime(path, (mtime_s, mtime_s))


def test_watcher_reloads_on_change_and_keeps_previous_when_invalid(tmp_path):
    path = tmp_path / "attribution.toml"
    _rewrite(path, GOOD, 1_000)
    watcher = AttributionConfigWatcher(path)
    first = watcher.current()
    assert first.for_advertiser("adv-7").model == "time_decay"
    assert watcher.current() is first  # unchanged file: no re-read

    _rewrite(path, GOOD.replace('"time_decay"', '"linear"'), 2_000)
    second = watcher.current()
    assert second.for_advertiser("adv-7").model == "linear"
    assert watcher.last_error is None and watcher.reloads == 1

    _rewrite(path, GOOD.replace('"time_decay"', '"bogus"'), 3_000)
    assert watcher.current() is second
    assert "bogus" in watcher.last_error

    path.unlink()
    assert watcher.current() is second
    assert watcher.last_error.startswith("FileNotFoundError")

    _rewrite(path, GOOD, 4_000)
    assert watcher.current().for_advertiser("adv-7").model == "time_decay"
    assert watcher.last_error is None


def test_watcher_sees_same_size_rewrite_by_mtime(tmp_path):
    path = tmp_path / "attribution.toml"
    _rewrite(path, '[default]\nmodel = "last_touch"\n', 1_000)
    watcher = AttributionConfigWatcher(path)
    _rewrite(path, '[default]\nmodel = "time_decay"\n', 2_000)
    assert watcher.current().default.model == "time_decay"


def test_watcher_throttles_stats(tmp_path):
    path = tmp_path / "attribution.toml"
    _rewrite(path, '[default]\nmodel = "linear"\n', 1_000)
    now = [0.0]
    watcher = AttributionConfigWatcher(path, min_check_interval_s=5.0, clock=lambda: now[0])
    _rewrite(path, '[default]\nmodel = "first_touch"\n', 2_000)
    now[0] = 4.0
    assert watcher.current().default.model == "linear"
    now[0] = 5.0
    assert watcher.current().default.model == "first_touch"


def test_watcher_refuses_to_start_on_invalid_file(tmp_path):
    path = tmp_path / "attribution.toml"
    path.write_text('[default]\nmodel = "bogus"\n')
    with pytest.raises(ValueError):
        AttributionConfigWatcher(path)
