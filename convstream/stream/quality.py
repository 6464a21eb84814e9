"""Event quality out of the pipeline: the ``convstream_eq_*`` gauges of a worker, and the
``convstream quality`` command that scores the ``conversions`` and ``labels`` topics."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from convstream.core.dedupe import merge_user_data
from convstream.core.evaluation import latest_labels
from convstream.core.identifier_quality import IdentifierTally, format_rejections
from convstream.core.identity import Rejection
from convstream.core.quality import (
    USER_DATA_FIELDS,
    QualityRow,
    QualityTracker,
    format_table,
)
from convstream.core.records import Conversion, Invalid, parse_conversions
from convstream.core.resolve import dropped_identifiers
from convstream.core.shared_values import REASON
from convstream.core.units import DAY_MS
from convstream.stream import metrics
from convstream.stream.kafka import _at_end, _partitions, client_options, read_topic, start_client
from convstream.stream.settings import Settings

_published: set[tuple[str, str]] = set()


def publish(tracker: QualityTracker) -> list[QualityRow]:
    """Set the event-quality gauges from ``tracker``; returns the rows published.

    Advertisers off the allow-list are pooled into one "other" row per event name (as
    ``metrics.set_event_quality`` asks), and rows that left the window lose their series.
    """
    rows = tracker.report(advertiser_group=metrics.advertiser_label)
    current = {(row.advertiser_id, row.event_name) for row in rows}
    if _published - current:
        for gauge in (
            metrics.EQ_PARAM_COVERAGE,
            metrics.EQ_DEDUPE_RATE,
            metrics.EQ_MATCH_RATE,
            metrics.EQ_SCORE,
        ):
            gauge.clear()
    for row in rows:
        metrics.set_event_quality(
            row.advertiser_id,
            row.event_name,
            param_coverage={USER_DATA_FIELDS[p]: share for p, share in row.coverage.items()},
            dedupe_rate=row.dedupe_rate,
            match_rate=row.match_rate,
            score=row.score,
        )
    _published.clear()
    _published.update(current)
    return rows


async def read_raw(settings: Settings, topic: str) -> AsyncIterator[tuple[str | None, bytes]]:
    """(key, raw value) of every record of ``topic`` up to its current end.

    ``convstream.stream.kafka.read_topic`` decodes every value as JSON, which stops at the first
    malformed
    record; the input topics may hold some, so they are read undecoded here.
    """
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await start_client(consumer, settings)
    try:
        physical = settings.topic(topic)
        tps = [TopicPartition(physical, p) for p in await _partitions(consumer, physical)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=1000)
            for records in batch.values():
                for r in records:
                    yield (r.key.decode("utf-8", "replace") if r.key else None), r.value
            if not batch and all([await _at_end(consumer, tp) for tp in tps]):
                return
    finally:
        await consumer.stop()


async def merged_conversions(
    settings: Settings, tally: IdentifierTally | None = None
) -> dict[str, dict[str, Any]]:
    """Valid conversions by key (every event of a batch envelope too), copies merged as the
    worker does (first copy wins); ``tally`` counts every copy's junk identifiers, site events'
    too. Site events (not conversions under the worker's attribution settings) get no label
    and are left out."""
    config = settings.attribution()
    merged: dict[str, dict[str, Any]] = {}
    async for _, raw in read_raw(settings, "conversions"):
        try:
            items = parse_conversions(raw)
        except Invalid:
            continue
        for copy in items:
            if isinstance(copy, Conversion):
                if tally is not None:
                    tally.observe(copy.advertiser_id, copy.user_data, copy.rejected, copy.notes)
                if config.is_conversion(copy.advertiser_id, copy.event_name):
                    _merge(merged, copy)
    return merged


def _merge(merged: dict[str, dict[str, Any]], copy: Conversion) -> None:
    first = merged.get(copy.key)
    if first is None:
        merged[copy.key] = copy.as_dict()
    else:
        first["user_data"] = merge_user_data(first["user_data"], dict(copy.user_data))
        first["sources"] = sorted({*first["sources"], copy.source})


async def load_tracker(
    settings: Settings, window_ms: int, tally: IdentifierTally | None = None
) -> tuple[QualityTracker, int]:
    """A tracker fed with every labelled conversion of the topics; and how many conversions
    had no label yet (left out). ``tally`` gets every copy's rejected identifiers."""
    conversions = await merged_conversions(settings, tally)
    labels, _, _ = latest_labels([r["value"] async for r in read_topic(settings, "labels")])
    tracker = QualityTracker(window_ms=window_ms)
    unlabelled = 0
    for key, conv in sorted(conversions.items(), key=lambda item: item[1]["ts"]):
        label = labels.get(key)
        if label is None:
            unlabelled += 1
            continue
        tracker.observe(conv, label)
        if tally is not None:
            shared = [Rejection(f, why) for f, why in dropped_identifiers(label) if why == REASON]
            tally.observe_dropped(conv["advertiser_id"], shared)
    return tracker, unlabelled


def run_quality(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """``convstream quality``: print the event quality table of the topics."""
    if settings is None:
        settings = Settings.from_env(
            broker=getattr(args, "broker", None), topic_prefix=getattr(args, "topic_prefix", None)
        )
    window_days = getattr(args, "window_days", None) or 7.0
    tally = IdentifierTally()
    tracker, unlabelled = asyncio.run(load_tracker(settings, int(window_days * DAY_MS), tally))
    rows = tracker.report()
    if getattr(args, "json", False):
        print(orjson.dumps([_as_dict(row) for row in rows], option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"event quality over the last {window_days:g} days of event time")
    print(format_table(rows))
    if unlabelled:
        print(f"({unlabelled} conversions without a label yet are left out)")
    print(
        "\nidentifiers rejected (whole topic: junk at ingestion in every copy; values shared"
        " by too many users once per labelled conversion)"
    )
    print(format_rejections(tally))
    for line in tally.advice():
        print(f"- {line}")
    return 0


def _as_dict(row: QualityRow) -> dict[str, Any]:
    return {
        "advertiser_id": row.advertiser_id,
        "event_name": row.event_name,
        "n": row.n,
        "coverage": row.coverage,
        "dedupe_rate": row.dedupe_rate,
        "match_rate": row.match_rate,
        "score": row.score,
        "advice": [{"param": a.param, "gain": a.gain, "text": a.text} for a in row.advice],
    }
