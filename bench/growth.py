"""State growth: a worker's RSS while its identifier index grows past a million entries.

The replay is identity events only, each for a new identifier set (hashed email, device id, a
fresh IP, IP + user agent: four index entries per event, two events per user), spread over ten
days of event time so nothing reaches the 30-day TTL. Nothing expires and nothing is shared, so
the index grows by four entries per event for the whole run. The worker drains the preloaded
replay while the bench samples, every two seconds, its RSS (``/proc``) and the events it has
consumed (``convstream_events_in_total``); the index then holds four entries per consumed event,
give or take the batch in flight. (The ``convstream_table_entries`` gauge would do for
``memory://`` but is RocksDB's estimate for ``rocksdb://``, which counts overwrites still in the
memtables.) Run once per store.

>>> lines = growth_replay(4)
>>> [sorted(k for k, v in line["value"].items() if v) for line in lines[:1]]
[['device_id', 'em', 'ip', 'ts', 'user_agent', 'user_id']]
>>> len({line["value"]["ip"] for line in lines})
4
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procfs
from bench.pipeline import bench_settings, scrape_events_in
from bench.replay import produce_timed
from stream.kafka import ensure_topics
from stream.runner import WorkerProcess, settings_env

T0 = 1_767_571_200_000  # 2026-01-05T00:00Z
SPAN_MS = 10 * 24 * 3600 * 1000
ENTRIES_PER_EVENT = 4


def growth_replay(events: int) -> list[dict[str, Any]]:
    """``events`` identity events, each bringing four identifiers no other event has."""
    step = max(SPAN_MS // max(events, 1), 1)
    lines = []
    for i in range(events):
        digest = hashlib.sha256(f"growth-{i}".encode()).hexdigest()
        lines.append(
            {
                "topic": "identity",
                "value": {
                    "user_id": f"g{i // 2:08d}",
                    "ts": T0 + i * step,
                    "em": digest,
                    "ph": None,
                    "device_id": digest[::-1],
                    "ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                    "user_agent": f"bench-agent/{i % 50}",
                },
            }
        )
    return lines


@dataclass
class GrowthResult:
    store: str
    events: int
    seconds: float = 0.0
    samples: list[tuple[float, int, int, float]] = field(default_factory=list)
    peak_rss_mib: float | None = None

    @property
    def final(self) -> tuple[float, int, int, float] | None:
        return self.samples[-1] if self.samples else None

    def at(self, entries: int) -> tuple[float, int, int, float] | None:
        """The first sample with at least ``entries`` identifiers."""
        return next((s for s in self.samples if s[2] >= entries), None)


def run_growth(
    broker_url: str,
    events: int,
    workdir: Path,
    *,
    store: str,
    partitions: int = 4,
    timeout: float = 3600.0,
    worker_env: dict[str, str] | None = None,
) -> GrowthResult:
    name = f"growth-{store.split(':')[0]}"
    env = {**(worker_env or {}), "CONVSTREAM_STORE": store}
    settings = bench_settings(broker_url, workdir, name, partitions, env)
    lines = growth_replay(events)
    asyncio.run(ensure_topics(settings))
    asyncio.run(produce_timed(settings, lines))
    worker = WorkerProcess(settings_env(settings), workdir / f"{name}-worker.log")
    result = GrowthResult(store=store, events=events)
    started = time.monotonic()
    try:
        worker.start()
        after = 0
        while time.monotonic() - started < timeout:
            if not worker.alive():
                raise RuntimeError(f"the worker died; see {worker.log_path}")
            consumed = scrape_events_in(settings.metrics_port) or 0
            rss = procfs.rss_mib(worker.process.pid) or 0.0
            entries = consumed * ENTRIES_PER_EVENT
            result.samples.append((time.monotonic() - started, consumed, entries, rss))
            after = after + 1 if consumed >= events else 0
            if after > 3:  # every event in, and 6 s more for the last batches to be written
                break
            time.sleep(2.0)
        else:
            raise TimeoutError(f"growth run did not settle in {timeout} s")
        result.peak_rss_mib = procfs.peak_rss_mib(worker.process.pid)
    finally:
        worker.stop()
    result.seconds = time.monotonic() - started
    return result


def markdown(results: list[GrowthResult], marks: tuple[int, ...]) -> list[str]:
    """A table of RSS at each identifier count in ``marks``, one column per store."""
    if not results:
        return []
    out = [
        f"State growth (identity-only replay, {results[0].events:,} events, "
        f"{ENTRIES_PER_EVENT} new identifiers each; RSS when the worker had consumed the events "
        "that make each count):",
        "",
        "| identifiers | " + " | ".join(f"RSS MiB, `{r.store}`" for r in results) + " |",
        "|---:|" + "---:|" * len(results),
    ]
    for mark in marks:
        cells = []
        for r in results:
            s = r.at(mark)
            cells.append(f"{s[3]:,.0f}" if s else "n/a")
        out.append(f"| {mark:,} | " + " | ".join(cells) + " |")
    finals = []
    for r in results:
        f = r.final
        finals.append(f"{f[3]:,.0f} at {f[2]:,}" if f else "n/a")
    out.append("| final | " + " | ".join(finals) + " |")
    out.append("")
    for r in results:
        first, last = r.at(marks[0]), r.final
        if first and last and last[2] > first[2]:
            per = (last[3] - first[3]) * (1 << 20) / (last[2] - first[2])
            out.append(
                f"- `{r.store}`: {per:,.0f} B of RSS per identifier entry from "
                f"{first[2]:,} to {last[2]:,}; peak RSS {r.peak_rss_mib or 0:,.0f} MiB; "
                f"{r.events / r.seconds:,.0f} events/s over {r.seconds:,.0f} s."
            )
    return out
