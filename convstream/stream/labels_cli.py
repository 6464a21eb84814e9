"""``convstream labels``: the labels topic as JSON Lines, read to its end, tailed, or read until
the worker has labelled every conversion on the ``conversions`` topic (``--wait``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from convstream.stream.kafka import read_topic
from convstream.stream.runner import (
    GroupProbe,
    ProgressLine,
    Stalled,
    expected_conversion_keys,
    wait_for_all_labels,
)
from convstream.stream.settings import Settings


def run_labels(args: argparse.Namespace, settings: Settings) -> int:
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        if args.follow:
            return asyncio.run(_follow(settings, args.topic, out))
        if args.wait:
            return _wait(settings, args.stall_timeout, out)
        return asyncio.run(_snapshot(settings, args.topic, out))
    except KeyboardInterrupt:
        return 130
    finally:
        out.flush()
        if args.output:
            out.close()


def _write(out: Any, labels: list[dict[str, Any]]) -> None:
    out.write(b"".join(orjson.dumps(label) + b"\n" for label in labels))


async def _follow(settings: Settings, topic: str, out: Any) -> int:
    async for record in read_topic(settings, topic, follow=True):
        out.write(orjson.dumps(record["value"]) + b"\n")
        out.flush()
    return 0


async def _snapshot(settings: Settings, topic: str, out: Any) -> int:
    """Read to the current end; warn when conversions on the topic still lack a label."""
    labels = [r["value"] async for r in read_topic(settings, topic)]
    _write(out, labels)
    if topic != "labels":
        return 0
    expected = await expected_conversion_keys(settings)
    missing = expected - {label["conversion_key"] for label in labels}
    if missing:
        probe = await GroupProbe(settings).start()
        try:
            _, lag = await probe.read()
        finally:
            await probe.stop()
        behind = f" (worker lag {lag:,} records)" if lag else ""
        print(
            f"convstream labels: warning: {len(expected) - len(missing):,} of {len(expected):,} "
            f"conversions on the topic have a label so far{behind}; the worker is still "
            "catching up: use --wait to read until all are labelled",
            file=sys.stderr,
        )
    return 0


def _wait(settings: Settings, stall_timeout: float, out: Any) -> int:
    expected = asyncio.run(expected_conversion_keys(settings))
    bar = ProgressLine("labels")
    try:
        labels = asyncio.run(
            wait_for_all_labels(settings, expected, stall_timeout=stall_timeout, on_status=bar)
        )
    except Stalled as exc:
        bar.done()
        # Conversions the worker sent to the dead-letter topic after the wait began never get
        # a label: count them out before calling it a stall.
        expected = asyncio.run(expected_conversion_keys(settings))
        if not expected <= {label["conversion_key"] for label in exc.labels}:
            print(f"convstream labels: {exc}; nothing written", file=sys.stderr)
            return 1
        labels = exc.labels
    bar.done()
    _write(out, labels)
    print(f"read {len(labels):,} labels for {len(expected):,} conversions", file=sys.stderr)
    return 0
