"""An evaluation report as one self-contained HTML file: headline figures and three inline SVG
charts (reliability diagram, match methods, attribution lag); no scripts, no external assets."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from convstream.core.evaluation import evaluate, latest_labels
from convstream.core.incrementality_evaluation import IncrementalityScore, score_incrementality

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH, HEIGHT = 540, 330
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 30, 50
#: Attribution lag bins: quarter decades from 10 s to 10^6.5 s (about 37 days).
LAG_EDGES_S = tuple(10 ** (1 + k / 4) for k in range(23))
LAG_TICKS = ((60, "1m"), (600, "10m"), (3600, "1h"), (6 * 3600, "6h"), (86400, "1d"),
             (7 * 86400, "7d"), (30 * 86400, "30d"))  # fmt: skip
HEADLINES = (
    ("coverage", "coverage"),
    ("match_precision", "match precision"),
    ("match_recall", "match recall"),
    ("recall_of_linkable", "recall of linkable"),
    ("ece", "ECE (matched)"),
    ("attribution_accuracy", "attribution accuracy"),
)
DETAILS = (
    ("n_truth", "truth conversions"),
    ("n_labels", "labelled keys"),
    ("label_rows", "label rows"),
    ("missing_keys", "missing keys"),
    ("unexpected_keys", "unexpected keys"),
    ("duplicate_keys", "duplicate keys"),
    ("linkable_ceiling", "linkable ceiling"),
    ("stranger_false_match_rate", "stranger false-match rate"),
    ("brier", "Brier (matched)"),
    ("attribution_over_recall", "attribution / recall"),
    ("label_weight_precision", "label-weight precision"),
    ("label_weight_ratio", "label weight / last touch"),
    ("total_label_weight", "total label weight"),
)
#: What each figure means, for the terminal (glossary_text) and the page (its last section).
GLOSSARY = (
    ("coverage", "share of truth conversions that got a label at all (want 1.000)"),
    ("precision", "of the labels that name a user, the share naming the true converter"),
    ("recall", "of the conversions by platform users, the share matched correctly"),
    (
        "linkable ceiling",
        "share of platform conversions whose identifiers the platform saw before the "
        "conversion: no matcher can recall more than this",
    ),
    ("recall of linkable", "recall among the linkable conversions: how close to the ceiling"),
    (
        "stranger false matches",
        "share of conversions by non-users (strangers) given a user anyway",
    ),
    (
        "ECE, Brier",
        "calibration of match_confidence on labels with a user (0 = perfect); ECE is the "
        "mean gap between confidence and observed precision",
    ),
    ("last-touch accuracy", "share of conversions whose top credit is the true last touch"),
    (
        "label-weight precision",
        "share of all label weight on the true user's true last touch: how much of what a "
        "trainer is fed is right",
    ),
)


def glossary_text(width: int = 96) -> str:
    """:data:`GLOSSARY` as an indented two-column block for a terminal.

    >>> print(glossary_text().splitlines()[1])
      coverage                share of truth conversions that got a label at all (want 1.000)
    """
    import textwrap

    term_width = max(len(term) for term, _ in GLOSSARY) + 2
    out = ["what the figures mean"]
    for term, meaning in GLOSSARY:
        lines = textwrap.wrap(meaning, width - term_width - 2)
        out.append(f"  {term.ljust(term_width)}{lines[0]}")
        out.extend(" " * (term_width + 2) + line for line in lines[1:])
    return "\n".join(out)


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1180px; }
h1 { font-size: 22px; margin: 0 0 12px; } h2 { font-size: 16px; margin: 0 0 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 16px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 110px; }
.card b { display: block; font-size: 24px; }
.charts { display: flex; flex-wrap: wrap; gap: 20px; }
figure { margin: 0; } figcaption { color: #555; max-width: 540px; font-size: 12px; }
table { border-collapse: collapse; align-self: flex-start; margin-top: 30px; }
td { padding: 2px 12px 2px 0; } td.v { text-align: right; font-variant-numeric: tabular-nums; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; max-width: 900px; }
dt { font-weight: bold; } dd { margin: 0; }
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _svg(height: int, title: str, body: Iterable[str]) -> str:
    return (
        f'<svg xmlns="{SVG_NS}" class="chart" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">'
        f'<text x="{LEFT}" y="18" font-weight="bold">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "middle", **attrs: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="11"{extra}>'
        f"{escape(text)}</text>"
    )


def _axes(
    x: Callable[[float], float], y: Callable[[float], float], x_ticks, y_ticks, x_title, y_title
) -> list[str]:
    """Grid lines, tick labels and axis titles; ticks are (value, text)."""
    bottom, top, left, right = y(0.0), TOP + 10, LEFT, WIDTH - RIGHT
    out = [
        f'<line class="axis" x1="{left}" y1="{bottom:.1f}" x2="{right}" y2="{bottom:.1f}" '
        'stroke="#444"/>'
    ]
    for value, text in y_ticks:
        out.append(
            f'<line x1="{left}" y1="{y(value):.1f}" x2="{right}" y2="{y(value):.1f}" '
            'stroke="#eee"/>'
        )
        out.append(_text(left - 6, y(value) + 4, text, "end"))
    for value, text in x_ticks:
        out.append(
            f'<line x1="{x(value):.1f}" y1="{bottom:.1f}" x2="{x(value):.1f}" '
            f'y2="{bottom + 4:.1f}" stroke="#444"/>'
        )
        out.append(_text(x(value), bottom + 16, text))
    out.append(_text((left + right) / 2, bottom + 36, x_title))
    mid = (top + bottom) / 2
    out.append(_text(16, mid, y_title, transform=f"rotate(-90 16 {mid:.1f})"))
    return out


def reliability_svg(bins: Sequence[Mapping[str, Any]]) -> str:
    """Reliability diagram: per confidence bin a bar of observed precision, a point at (mean
    confidence, precision) and the count; the diagonal is perfect calibration."""
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - 10 - BOTTOM

    def x(v: float) -> float:
        return LEFT + v * width

    def y(v: float) -> float:
        return TOP + 10 + (1.0 - v) * height

    ticks = [(i / 5, f"{i / 5:.1f}") for i in range(6)]
    body = _axes(x, y, ticks, ticks, "match confidence", "observed precision")
    for b in bins:
        body.append(f'<g class="bin" data-bin="{b["bin"]}" data-count="{b["count"]}">')
        body.append(f"<title>{b['lo']:.1f}-{b['hi']:.1f}: {b['count']} labels</title>")
        if b["count"]:
            acc, conf = b["accuracy"], b["mean_confidence"]
            body.append(
                f'<rect class="bar" x="{x(b["lo"]) + 2:.1f}" y="{y(acc):.1f}" '
                f'width="{x(b["hi"]) - x(b["lo"]) - 4:.1f}" height="{y(0) - y(acc):.1f}" '
                'fill="#9ecae1"/>'
            )
            body.append(
                f'<circle class="point" cx="{x(conf):.1f}" cy="{y(acc):.1f}" r="4" fill="#08519c"/>'
            )
            body.append(_text(x((b["lo"] + b["hi"]) / 2), y(acc) - 7, f"n={b['count']}"))
        body.append("</g>")
    body.append(
        f'<line class="diagonal" x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" '
        f'y2="{y(1):.1f}" stroke="#555" stroke-dasharray="4 4"/>'
    )
    return _svg(HEIGHT, "Reliability of match_confidence (labels with a user)", body)


def methods_svg(methods: Mapping[str, Mapping[str, Any]], n_labels: int) -> str:
    """One horizontal bar per match method: its share of the labelled conversions, with the
    count and the precision against truth."""
    rows = sorted(methods.items(), key=lambda item: (-item[1]["count"], item[0]))
    row_h, label_w = 26, 150
    height = TOP + 20 + row_h * max(len(rows), 1) + 20
    width = WIDTH - label_w - RIGHT - 150
    body = []
    for i, (method, m) in enumerate(rows):
        share = m["count"] / n_labels if n_labels else 0.0
        top = TOP + 16 + i * row_h
        colour = "#bbb" if method == "none" else "#74c476"
        body.append(f'<g class="method" data-method="{escape(method)}">')
        body.append(_text(label_w - 8, top + 15, method, "end"))
        body.append(
            f'<rect class="bar" x="{label_w}" y="{top + 3}" '
            f'width="{max(share * width, 1):.1f}" height="{row_h - 8}" fill="{colour}"/>'
        )
        note = f"{m['count']} ({share:.0%})  precision {_fmt(m.get('precision'))}"
        body.append(_text(label_w + share * width + 6, top + 15, note, "start"))
        body.append("</g>")
    return _svg(height, "Share of labelled conversions by match method", body)


def attribution_lags(labels: Iterable[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """(lag in seconds, credit) of every credited engagement: label ts minus engagement_ts.

    >>> attribution_lags([{"ts": 61_000, "credits": [{"engagement_ts": 1_000, "credit": 0.5}]}])
    [(60.0, 0.5)]
    """
    out = []
    for label in labels:
        ts = label.get("ts")
        for credit in label.get("credits") or ():
            engagement_ts, share = credit.get("engagement_ts"), credit.get("credit")
            if ts is None or engagement_ts is None or not share or ts < engagement_ts:
                continue
            out.append(((ts - engagement_ts) / 1000.0, float(share)))
    return out


def lag_histogram(lags: Iterable[tuple[float, float]]) -> list[float]:
    """Credit per log-spaced bin of :data:`LAG_EDGES_S`; lags outside go to the end bins.

    >>> h = lag_histogram([(1.0, 1.0), (60.0, 0.5), (1e9, 1.0)])
    >>> len(h), h[0], h[-1], sum(h)
    (22, 1.0, 1.0, 2.5)
    """
    bins = [0.0] * (len(LAG_EDGES_S) - 1)
    for lag, weight in lags:
        k = math.floor(4 * (math.log10(max(lag, 1e-3)) - 1))
        bins[min(max(k, 0), len(bins) - 1)] += weight
    return bins


def lag_svg(histogram: Sequence[float]) -> str:
    """Histogram of attribution lag on a log time axis, in credited conversions."""
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - 10 - BOTTOM
    lo, hi = math.log10(LAG_EDGES_S[0]), math.log10(LAG_EDGES_S[-1])
    peak = max(histogram, default=0.0) or 1.0
    step = 10 ** math.floor(math.log10(peak)) if peak >= 1 else 0.1
    top_value = math.ceil(peak / step) * step

    def x(seconds: float) -> float:
        return LEFT + (math.log10(seconds) - lo) / (hi - lo) * width

    def y(v: float) -> float:
        return TOP + 10 + (1.0 - v / top_value) * height

    y_ticks = [(top_value * i / 4, f"{top_value * i / 4:g}") for i in range(5)]
    body = _axes(
        x, y, LAG_TICKS, y_ticks, "engagement to conversion (log scale)", "credited conversions"
    )
    for k, value in enumerate(histogram):
        left, right = x(LAG_EDGES_S[k]), x(LAG_EDGES_S[k + 1])
        body.append(
            f'<rect class="bar" data-bin="{k}" x="{left + 1:.1f}" y="{y(value):.1f}" '
            f'width="{right - left - 2:.1f}" height="{y(0) - y(value):.1f}" fill="#fd8d3c">'
            f"<title>{LAG_EDGES_S[k]:,.0f}-{LAG_EDGES_S[k + 1]:,.0f} s: {value:g}</title></rect>"
        )
    return _svg(HEIGHT, "Attribution lag (credited engagement to conversion)", body)


#: Qini chart lines: name, colour, dash pattern.
QINI_LINES = (
    ("perfect", "#999", "2 3"),
    ("oracle", "#31a354", ""),
    ("incremental_probability", "#08519c", ""),
)


def qini_svg(curves: Mapping[str, Sequence[tuple[float, float]]]) -> str:
    """The uplift (Qini) chart: per ranking, the share of the true incremental conversions
    among the top fraction of attributed labels; the diagonal is random targeting, and the
    Qini coefficient is the area between a curve and it (``incrementality_evaluation.qini``)."""
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - 10 - BOTTOM

    def x(v: float) -> float:
        return LEFT + v * width

    def y(v: float) -> float:
        return TOP + 10 + (1.0 - max(0.0, min(1.0, v))) * height

    ticks = [(i / 5, f"{i / 5:.1f}") for i in range(6)]
    body = _axes(
        x, y, ticks, ticks, "share of attributed labels, by score", "share of incremental truth"
    )
    body.append(
        f'<line class="diagonal" x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" '
        f'y2="{y(1):.1f}" stroke="#555" stroke-dasharray="4 4"/>'
    )
    legend = 0
    for name, colour, dash in QINI_LINES:
        points = curves.get(name)
        if not points:
            continue
        path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in points)
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        body.append(
            f'<polyline class="qini" data-name="{name}" points="{path}" fill="none" '
            f'stroke="{colour}" stroke-width="2"{dashed}/>'
        )
        body.append(_text(x(0.62), y(0.3) + 14 * legend, name, "start", fill=colour))
        legend += 1
    return _svg(HEIGHT, "Uplift (Qini) curve of incremental_probability", body)


def qini_chart(score: IncrementalityScore) -> tuple[str, str]:
    """The Qini chart of a score and its caption."""
    curves = {"incremental_probability": score.qini.curve}
    if score.qini.perfect_curve:
        curves["perfect"] = score.qini.perfect_curve
    if score.oracle_qini is not None:
        curves["oracle"] = score.oracle_qini.curve
    oracle = score.oracle_qini.q if score.oracle_qini is not None else None
    caption = (
        f"{score.qini.n} attributed labels with an incremental_probability, ranked by it; "
        f"the truth's incremental conversions among them: {score.qini.total:.1f}. Qini "
        f"coefficient {_fmt(score.qini.q)} (perfect ranking {_fmt(score.qini.q_perfect)}, "
        f"oracle: the same estimator trained on the truth, {_fmt(oracle)}); "
        f"ECE {_fmt(score.ece)}."
    )
    return qini_svg(curves), caption


def report_html(
    labels: Iterable[Mapping[str, Any]],
    truth: Iterable[Mapping[str, Any]],
    incremental_labels: Iterable[Mapping[str, Any]] | None = None,
    oracle: Mapping[str, float | None] | None = None,
) -> str:
    """The report page as a string (well-formed XML, so every SVG part parses on its own);
    when ``incremental_labels`` (by default ``labels``) carry ``incremental_probability``, the
    Qini chart too (``oracle``: the truth-trained probabilities, drawn beside)."""
    labels = list(labels)
    truth = list(truth)
    figures = evaluate(labels, truth).as_dict()
    kept = list(latest_labels(labels)[0].values())
    matched = sum(1 for label in kept if label.get("user_id"))
    match_rate = matched / len(kept) if kept else None
    lags = attribution_lags(kept)
    headline = [(title, figures.get(key)) for key, title in HEADLINES]
    headline.append(("match rate", match_rate))
    cards = "".join(
        f'<div class="card">{escape(title)}<b>{_fmt(value)}</b></div>' for title, value in headline
    )
    details = "".join(
        f'<tr><td>{escape(title)}</td><td class="v">{_fmt(figures.get(key))}</td></tr>'
        for key, title in DETAILS
    )
    charts = [
        (
            reliability_svg(figures["reliability"]),
            f"10 equal-width bins of match_confidence over the {figures['n_with_user']} judged "
            "labels that name a user; bar height is the share naming the true converter, the "
            f"point sits at the bin's mean confidence. ECE {_fmt(figures['ece'])}.",
        ),
        (
            methods_svg(figures["methods"], sum(m["count"] for m in figures["methods"].values())),
            f"Latest revision of each judged label. Match rate {_fmt(match_rate)} "
            f"({matched} of {len(kept)} labelled keys name a user).",
        ),
        (
            lag_svg(lag_histogram(lags)),
            f"{len(lags)} credited engagements of the latest labels, each counted with its "
            "credit; bins are quarter decades, lags below 10 s or above 37 days go to the end "
            "bins.",
        ),
    ]
    scored = labels if incremental_labels is None else list(incremental_labels)
    if any("incremental_probability" in label for label in scored):
        charts.append(qini_chart(score_incrementality(scored, truth, oracle)))
    glossary = "".join(
        f"<dt>{escape(term)}</dt><dd>{escape(meaning)}</dd>" for term, meaning in GLOSSARY
    )
    figures_html = "".join(
        f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"
        for svg, caption in charts
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        "<title>convstream evaluation report</title>"
        f"<style>{CSS}</style></head><body>"
        "<h1>convstream evaluation report</h1>"
        f'<div class="cards">{cards}</div>'
        f'<div class="charts">{figures_html}<table>{details}</table></div>'
        f'<h2>What the figures mean</h2><dl class="glossary">{glossary}</dl>'
        "</body></html>\n"
    )


def render_report(
    labels: Iterable[Mapping[str, Any]],
    truth: Iterable[Mapping[str, Any]],
    path: str | Path,
    incremental_labels: Iterable[Mapping[str, Any]] | None = None,
    oracle: Mapping[str, float | None] | None = None,
) -> Path:
    """Write the HTML report of ``labels`` against ``truth`` to ``path``; returns the path."""
    out = Path(path)
    out.write_text(report_html(labels, truth, incremental_labels, oracle), encoding="utf-8")
    return out
