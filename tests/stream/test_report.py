"""convstream.stream.report: a self-contained HTML page with three well-formed inline SVG charts."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET

import pytest

from convstream.stream.report import LAG_EDGES_S, lag_histogram, render_report
from convstream.synth.generate import config_from_args, generate

SVG = "{http://www.w3.org/2000/svg}"
METHODS = ("deterministic:click", "deterministic:em", "model", "none")


def hand_made_labels(truth):
    """Labels for every truth row: right, wrong or unmatched, with click credits an hour to a
    few days before the conversion; a few keys get a second revision."""
    rng = random.Random(5)
    labels = []
    for i, row in enumerate(truth):
        method = METHODS[i % len(METHODS)]
        user = None if method == "none" else row["user_id"] or "u-stranger"
        if method == "model" and rng.random() < 0.3:
            user = "u-wrong"
        confidence = 0.0 if user is None else rng.uniform(0.05, 1.0)
        credits = []
        if user is not None:
            lag_ms = int(3_600_000 * 10 ** rng.uniform(-1.5, 2.5))
            credits.append(
                {
                    "engagement_id": f"e{i}",
                    "engagement_type": "click",
                    "engagement_ts": row["ts"] - lag_ms,
                    "credit": 1.0,
                    "label_weight": confidence,
                }
            )
        label = {
            "conversion_key": row["conversion_key"],
            "advertiser_id": row["advertiser_id"],
            "ts": row["ts"],
            "user_id": user,
            "match_confidence": confidence,
            "match_method": method,
            "credits": credits,
            "label_weight": confidence if credits else 0.0,
            "revision": 0,
        }
        labels.append(label)
        if i % 7 == 0:
            labels.append({**label, "revision": 1})
    return labels


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    _, truth = generate(config_from_args("default", users=150, days=4))
    labels = hand_made_labels(truth)
    path = render_report(labels, truth, tmp_path_factory.mktemp("report") / "report.html")
    return path.read_text(encoding="utf-8"), labels, truth


def charts(html):
    svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    return {svg.get("aria-label"): svg for svg in map(ET.fromstring, svgs)}


def test_page_is_self_contained_and_well_formed(page):
    html, _, _ = page
    assert html.startswith("<!DOCTYPE html>")
    root = ET.fromstring(html.split("\n", 1)[1])  # the whole page parses as XML
    assert root.tag == "html"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script" not in html
    assert len(charts(html)) == 3


def test_headline_figures(page):
    html, _, _ = page
    for title in ("coverage", "match precision", "match recall", "ECE (matched)", "match rate"):
        assert f"{title}<b>" in html
    assert "<td>truth conversions</td>" in html


def test_reliability_diagram_has_ten_bins_and_a_diagonal(page):
    html, labels, _ = page
    svg = next(s for name, s in charts(html).items() if name.startswith("Reliability"))
    bins = svg.findall(f"{SVG}g[@class='bin']")
    assert len(bins) == 10
    assert len(svg.findall(f".//{SVG}line[@class='diagonal']")) == 1
    counts = [int(b.get("data-count")) for b in bins]
    latest = {lab["conversion_key"]: lab for lab in labels}
    assert sum(counts) == sum(1 for lab in latest.values() if lab["user_id"])
    non_empty = [b for b in bins if int(b.get("data-count"))]
    assert len(svg.findall(f".//{SVG}rect[@class='bar']")) == len(non_empty)
    assert len(svg.findall(f".//{SVG}circle[@class='point']")) == len(non_empty)
    texts = {t.text for b in non_empty for t in b.iter(f"{SVG}text")}
    assert {f"n={b.get('data-count')}" for b in non_empty} <= texts


def test_one_bar_per_match_method(page):
    html, _, _ = page
    svg = next(s for name, s in charts(html).items() if "match method" in name)
    groups = svg.findall(f"{SVG}g[@class='method']")
    assert sorted(g.get("data-method") for g in groups) == sorted(METHODS)
    assert len(svg.findall(f".//{SVG}rect[@class='bar']")) == len(METHODS)


def test_lag_histogram_has_log_spaced_bins(page):
    html, labels, _ = page
    svg = next(s for name, s in charts(html).items() if name.startswith("Attribution lag"))
    bars = svg.findall(f"{SVG}rect[@class='bar']")
    assert len(bars) == len(LAG_EDGES_S) - 1 == 22
    ratios = {round(b / a, 6) for a, b in zip(LAG_EDGES_S, LAG_EDGES_S[1:], strict=False)}
    assert ratios == {round(10**0.25, 6)}
    heights = [float(b.get("height")) for b in bars]
    assert sum(h > 0 for h in heights) >= 5
    tick_labels = {t.text for t in svg.iter(f"{SVG}text")}
    assert {"1m", "1h", "1d", "7d"} <= tick_labels


def test_lag_histogram_counts_credit_by_bin():
    hist = lag_histogram([(60.0, 1.0), (61.0, 0.5), (3600.0, 1.0), (0.0, 1.0), (1e8, 0.25)])
    assert hist[0] == 1.0 and hist[-1] == 0.25
    assert hist[3] == 1.5  # 60 s = 10^1.78: the bin from 10^1.75 to 10^2
    assert hist[10] == 1.0  # 1 h = 10^3.56
    assert sum(hist) == pytest.approx(3.75)


def test_empty_inputs_still_render(tmp_path):
    html = render_report([], [], tmp_path / "empty.html").read_text()
    svgs = charts(html)
    assert len(svgs) == 3


def test_page_says_what_every_figure_means(page):
    from convstream.stream.report import GLOSSARY

    html, _, _ = page
    glossary = ET.fromstring(re.search(r'<dl class="glossary">.*?</dl>', html, flags=re.S)[0])
    assert [dt.text for dt in glossary.iter("dt")] == [term for term, _ in GLOSSARY]


def test_the_glossary_explains_the_rows_of_the_printed_table(page):
    """Each glossary term names a row of the table the demo and evaluate print, so the two
    cannot drift apart silently."""
    from convstream.core.evaluation import evaluate
    from convstream.stream.report import GLOSSARY

    _, labels, truth = page
    table = evaluate(labels, truth).format_table()
    for term, _ in GLOSSARY:
        assert term.split(",")[0] in table, term


def test_qini_chart_when_labels_carry_incremental_probability(tmp_path):
    _, truth = generate(config_from_args("default", users=150, days=4))
    labels = hand_made_labels(truth)
    true_p = {row["conversion_key"]: row["incremental_probability"] for row in truth}
    for label in labels:
        # A score that knows the truth, blurred: its curve lies above the diagonal.
        p = min(1.0, true_p[label["conversion_key"]] + 0.05) if label["credits"] else None
        label["incremental_probability"] = p
        label["incremental_weight"] = None if p is None else label["label_weight"] * p
    html = render_report(labels, truth, tmp_path / "r.html", oracle=dict(true_p)).read_text()
    found = charts(html)
    assert len(found) == 4
    svg = next(s for name, s in found.items() if name.startswith("Uplift (Qini)"))
    lines = {p.get("data-name"): p for p in svg.findall(f"{SVG}polyline[@class='qini']")}
    assert set(lines) == {"perfect", "oracle", "incremental_probability"}
    assert len(svg.findall(f".//{SVG}line[@class='diagonal']")) == 1
    # Without the fields, no Qini chart (the page of the first test has three charts).
    plain = [{k: v for k, v in x.items() if not k.startswith("incremental")} for x in labels]
    assert len(charts(render_report(plain, truth, tmp_path / "p.html").read_text())) == 3
