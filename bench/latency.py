"""Conversion-to-label latency, split into the watermark (or bounded) wait and the rest.

The worker answers a conversion's lookups only once every users partition reports a watermark
at or past the conversion's event time T, or after ``max_wait_s``. A partition's watermark is
its newest engagement event time minus the allowed lateness once the worker has read every
engagement topic of it to the end (``convstream/stream/watermarks.py``), which a worker keeping up
with
paced input has. From the producer's send times we know when the *input* first allowed that:
every partition had an engagement event at ``T + lateness`` or later. The wait up to then is
inherent to the design; what remains is processing latency:

    total  = label.emitted_at - send time of the conversion's first copy
    wait   = clamp(watermark time - send time, 0, max_wait_s)   (0 if it has no identifiers)
    beyond = total - wait

A worker that falls behind reaches the watermark later than this; that lag counts as
processing, which is what it is.

>>> percentile([5, 1, 4, 2, 3], 50), percentile([5, 1, 4, 2, 3], 99)
(3, 5)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.replay import engagement_partition
from convstream.core.attribution import AttributionConfig
from convstream.core.identity import conversion_identifiers
from convstream.core.records import Invalid, parse_conversion
from convstream.stream.kafka import encode_value, message_key


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: the ``q`` (0..1) quantile of cumulative ``(le, count)``
    buckets, interpolated linearly inside the bucket that holds it (None without observations).

    >>> buckets = [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (math.inf, 100.0)]
    >>> histogram_quantile(0.5, buckets), round(histogram_quantile(0.7, buckets), 3)
    (0.1, 0.15)
    >>> round(histogram_quantile(0.99, buckets), 3), histogram_quantile(0.5, [(1.0, 0.0)])
    (0.47, None)
    """
    ordered = sorted(buckets)
    total = ordered[-1][1] if ordered else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_le  # past the last finite bound: its value is all we know
            span = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / span if span else 1.0)
        lower_le, lower_count = le, count
    return lower_le


class WatermarkClock:
    """When the produced input first reached event time ``T`` on every engagement partition.

    >>> lines = [{"topic": "clicks", "value": {"user_id": "u", "ts": ts}} for ts in (10, 20)]
    >>> clock = WatermarkClock(lines, [1.0, 2.0], partitions=1)
    >>> clock.covered_at(15), clock.covered_at(25)
    (2.0, inf)
    """

    def __init__(
        self, lines: Sequence[dict[str, Any]], sent_at: Sequence[float], *, partitions: int
    ) -> None:
        self.series: dict[int, tuple[list[int], list[float]]] = {
            p: ([], []) for p in range(partitions)
        }
        for line, at in zip(lines, sent_at, strict=False):
            p = engagement_partition(line, partitions)
            if p is None:
                continue
            maxima, times = self.series[p]
            ts = line["value"]["ts"]
            if not maxima or ts > maxima[-1]:
                maxima.append(ts)
                times.append(at)

    def covered_at(self, event_ts: int) -> float:
        """Send time after which every partition had an engagement at ``event_ts`` or later."""
        latest = 0.0
        for maxima, times in self.series.values():
            i = bisect.bisect_left(maxima, event_ts)
            if i == len(maxima):
                return math.inf
            latest = max(latest, times[i])
        return latest


@dataclass(frozen=True)
class Sample:
    key: str
    total_s: float
    wait_s: float

    @property
    def beyond_s(self) -> float:
        return self.total_s - self.wait_s


def first_copies(lines: Sequence[dict[str, Any]]) -> dict[str, tuple[int, dict[str, Any]]]:
    """Index and value of each conversion key's first copy in the replay."""
    first: dict[str, tuple[int, dict[str, Any]]] = {}
    config = AttributionConfig()
    for i, line in enumerate(lines):
        v = line["value"]
        if line["topic"] == "conversions" and config.is_conversion(
            v["advertiser_id"], v["event_name"]
        ):
            key = message_key("conversions", line["value"])
            if key is not None:
                first.setdefault(key.decode(), (i, line["value"]))
    return first


def gated(value: dict[str, Any]) -> bool:
    """Whether the worker looks this copy up in the index (so waits for the watermark)."""
    try:
        conv = parse_conversion(encode_value(value))
    except Invalid:
        return False
    return bool(conversion_identifiers(conv.advertiser_id, conv.user_data))


def samples(
    lines: Sequence[dict[str, Any]],
    sent_at: Sequence[float],
    first_label_ms: Mapping[str, int],
    *,
    partitions: int,
    lateness_ms: int,
    max_wait_s: float,
) -> list[Sample]:
    """One latency sample per labelled conversion key."""
    clock = WatermarkClock(lines, sent_at, partitions=partitions)
    out = []
    for key, (i, value) in first_copies(lines).items():
        emitted = first_label_ms.get(key)
        if emitted is None:
            continue
        sent = sent_at[i]
        wait = 0.0
        if gated(value):
            wait = min(max(clock.covered_at(value["ts"] + lateness_ms) - sent, 0.0), max_wait_s)
        out.append(Sample(key, emitted / 1000 - sent, wait))
    return out


def summarize(rows: Sequence[Sample], max_wait_s: float) -> dict[str, float]:
    """p50/p95/p99 (ms) of total, wait and beyond-wait latency, the wait's share of the mean
    latency, and how many conversions hit the bounded wait."""
    if not rows:
        return {}
    out: dict[str, float] = {"n": len(rows)}
    for name, values in (
        ("total", [r.total_s for r in rows]),
        ("wait", [r.wait_s for r in rows]),
        ("beyond", [r.beyond_s for r in rows]),
    ):
        for q in (50, 95, 99):
            out[f"{name}_p{q}_ms"] = round(percentile(values, q) * 1000, 1)
    mean_total = sum(r.total_s for r in rows) / len(rows)
    mean_wait = sum(r.wait_s for r in rows) / len(rows)
    out["wait_share"] = round(mean_wait / mean_total, 3) if mean_total > 0 else 0.0
    out["waited"] = sum(1 for r in rows if r.wait_s > 0)
    out["bounded"] = sum(1 for r in rows if r.wait_s >= max_wait_s)
    return out
