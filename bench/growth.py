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
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procfs
from bench.pipeline import bench_settings, scrape_events_in
from bench.replay import produce_timed
from convstream.stream.kafka import ensure_topics
from convstream.stream.runner import WorkerProcess, settings_env

T0 = 1_767_571_200_000  # 2026-01-05T00:00Z
SPAN_MS = 10 * 24 * 3600 * 1000
ENTRIES_PER_EVENT = 4
PAST_MARK = 1_000_000  # the question: is RSS flat past a million identifiers?


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

    def rss_near(self, entries: int, spread: float = 0.1) -> float | None:
        """Median RSS (MiB) of the samples within ``spread`` of ``entries`` identifiers.

        RSS swings by tens of MiB with batches, memtable flushes and heap trims, so one sample
        says little about the trend.

        >>> r = GrowthResult("memory://", 0, samples=[(0, 0, 95, 300.0), (2, 0, 100, 340.0),
        ...                                          (4, 0, 104, 310.0), (6, 0, 200, 500.0)])
        >>> r.rss_near(100), r.rss_near(150)
        (310.0, None)
        """
        near = [s[3] for s in self.samples if abs(s[2] - entries) <= spread * entries]
        return statistics.median(near) if near else None


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
            rss = r.rss_near(mark)
            cells.append(f"{rss:,.0f}" if rss is not None else "n/a")
        out.append(f"| {mark:,} | " + " | ".join(cells) + " |")
    finals = []
    for r in results:
        f = r.final
        finals.append(f"{r.rss_near(f[2]):,.0f} at {f[2]:,}" if f else "n/a")
    out.append("| final | " + " | ".join(finals) + " |")
    out.append("")
    out.append("Each cell is the median RSS of the samples within 10 % of that identifier count.")
    out.append("")
    for r in results:
        last = r.final
        if last is None:
            continue
        slopes = []
        for mark in (marks[0], PAST_MARK):
            first = r.rss_near(mark)
            if first is not None and last[2] > mark:
                per = (r.rss_near(last[2]) - first) * (1 << 20) / (last[2] - mark)
                slopes.append(f"{per:,.0f} B from {mark:,}")
        out.append(
            f"- `{r.store}`: RSS per identifier entry {' and '.join(slopes) or 'n/a'} to "
            f"{last[2]:,}; peak RSS {r.peak_rss_mib or 0:,.0f} MiB; "
            f"{r.events / r.seconds:,.0f} events/s over {r.seconds:,.0f} s."
        )
    return out
