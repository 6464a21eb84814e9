"""Stage 3: the full convstream worker (``convstream worker`` in a child process).

Two runs, each on its own broker:

* **throughput**: the replay is preloaded, then the worker starts and drains it. Timed from the
  worker's first consumed input (its ``convstream_events_in_total`` counter, scraped every 100 ms
  from its loopback metrics port, so up to one batch late) to the ``emitted_at`` of the last label,
  once every conversion key of the replay has a label. Peak RSS (``VmHWM``), CPU time and the
  tables' state size are read at the end; optionally py-spy samples the worker.
* **latency**: the worker starts first (a canary conversion proves it consumes), then the replay
  is produced paced at a given rate while send times are recorded (see :mod:`bench.latency`).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench import latency, procfs
from bench.replay import Produced, canary, conversion_keys, produce_timed
from bench.state import TableSize, state_sizes
from bench.topics import LabelFollower
from convstream.stream.broker import free_port
from convstream.stream.kafka import ensure_topics
from convstream.stream.runner import WorkerProcess, settings_env
from convstream.stream.settings import Settings

_EVENTS_IN = re.compile(r'^convstream_events_in_total\{topic="[^"]*"\} ([0-9.e+]+)$', re.M)


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return None


def scrape_events_in(port: int) -> int | None:
    """Input records the worker has consumed so far (None while the endpoint is not up)."""
    text = _scrape(port)
    if text is None:
        return None
    return int(sum(float(v) for v in _EVENTS_IN.findall(text)))


LOOP_LAG = "convstream_event_loop_lag_seconds"
GC_PAUSE = "convstream_gc_pause_seconds"


_SENT = re.compile(r'^convstream_messages_sent_total\{topic="([^"]*)"\} ([0-9.e+]+)$', re.M)
_BATCH = re.compile(r'^convstream_batch_events_(count|sum)\{agent="([^"]*)"\} ([0-9.e+]+)$', re.M)


def parse_flow(text: str) -> tuple[dict[str, int], dict[str, float]]:
    r"""Messages the worker sent, per topic, and its agents' mean records per batch.

    >>> parse_flow('convstream_messages_sent_total{topic="cs-ident"} 12.0\n'
    ...            'convstream_batch_events_count{agent="users"} 4.0\n'
    ...            'convstream_batch_events_sum{agent="users"} 1000.0\n')
    ({'cs-ident': 12}, {'users': 250.0})
    """
    sent = {topic: int(float(v)) for topic, v in _SENT.findall(text) if float(v)}
    parts: dict[str, dict[str, float]] = {}
    for kind, agent, v in _BATCH.findall(text):
        parts.setdefault(agent, {})[kind] = float(v)
    means = {a: p["sum"] / p["count"] for a, p in parts.items() if p.get("count")}
    return sent, means


def scrape_histograms(port: int, name: str, label: str) -> dict[str, list[tuple[Any, float]]]:
    """The worker's histogram ``name`` so far (see :func:`parse_histograms`; empty if it cannot
    be read)."""
    text = _scrape(port)
    return {} if text is None else parse_histograms(text, name, label)


def parse_histograms(text: str, name: str, label: str) -> dict[str, list[tuple[Any, float]]]:
    r"""Histogram ``name`` of a ``/metrics`` page, per value of its one ``label``: cumulative
    ``(le, count)`` buckets, and ``("sum", seconds)`` last.

    >>> text = ('# TYPE convstream_event_loop_lag_seconds histogram\n'
    ...         'convstream_event_loop_lag_seconds_bucket{le="0.1",loop="main"} 3.0\n'
    ...         'convstream_event_loop_lag_seconds_bucket{loop="main",le="+Inf"} 4.0\n'
    ...         'convstream_event_loop_lag_seconds_sum{loop="main"} 0.5\n')
    >>> parse_histograms(text, LOOP_LAG, "loop")
    {'main': [(0.1, 3.0), (inf, 4.0), ('sum', 0.5)]}
    """
    buckets: dict[str, list[tuple[Any, float]]] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            key = sample.labels.get(label, "")
            if sample.name == f"{name}_bucket":
                buckets.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name == f"{name}_sum":
                sums[key] = sample.value
    return {key: [*rows, ("sum", sums.get(key, 0.0))] for key, rows in buckets.items()}


def histogram_between(before: list[tuple], after: list[tuple]) -> dict[str, float]:
    """Observations of a histogram between two scrapes: p50/p95/p99 and mean in ms, ``n``
    observations and their ``total_s`` seconds.

    >>> before = [(0.01, 10.0), (0.1, 10.0), (float("inf"), 10.0), ("sum", 0.05)]
    >>> after = [(0.01, 110.0), (0.1, 120.0), (float("inf"), 120.0), ("sum", 1.15)]
    >>> lag = histogram_between(before, after)
    >>> lag["n"], round(lag["p50_ms"], 1), round(lag["p99_ms"], 1), lag["mean_ms"], lag["total_s"]
    (110.0, 5.5, 90.1, 10.0, 1.1)
    """
    start = dict(before)
    buckets = [(le, count - start.get(le, 0.0)) for le, count in after if le != "sum"]
    n = max((count for _, count in buckets), default=0.0)
    if n <= 0:
        return {}
    total = round(dict(after).get("sum", 0.0) - start.get("sum", 0.0), 6)
    out = {"n": n, "total_s": total, "mean_ms": round(1000 * total / n, 3)}
    for q in (50, 95, 99):
        out[f"p{q}_ms"] = 1000 * (latency.histogram_quantile(q / 100, buckets) or 0.0)
    return out


def bench_settings(
    broker_url: str,
    workdir: Path,
    name: str,
    partitions: int,
    worker_env: dict[str, str] | None = None,
) -> Settings:
    """Worker settings: defaults (or ``CONVSTREAM_*`` entries of ``worker_env``), its own app id
    and topic prefix, metrics on a free loopback port."""
    return Settings.from_env(
        worker_env or {},
        broker=broker_url,
        topic_prefix=f"{name}.",
        app_id=f"bench-{name}",
        partitions=partitions,
        data_dir=str(workdir / f"{name}-state"),
        metrics_host="127.0.0.1",
        metrics_port=free_port(),
    )


@dataclass
class Profiler:
    """py-spy sampling a process into a folded-stacks file; stopped with SIGINT (it then writes)."""

    pid: int
    output: Path
    rate: int = 100
    process: subprocess.Popen | None = None

    def start(self) -> Profiler:
        beside = Path(sys.executable).parent / "py-spy"
        spy = str(beside) if beside.exists() else shutil.which("py-spy")
        if spy is None:
            raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(self.output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.output.with_suffix(".log"), "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class ThroughputResult:
    events: int
    expected_keys: int
    covered_keys: int
    labels: int
    seconds: float
    consume_seconds: float | None
    counted: int
    preload_rate: float
    peak_rss_mib: float | None
    cpu_seconds: float | None
    state: dict[str, TableSize] = field(default_factory=dict)
    # Messages the worker sent per topic (not changelogs), and mean records per batch per agent.
    sent: dict[str, int] = field(default_factory=dict)
    batch_means: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / max(self.seconds, 1e-9)

    @property
    def cpu_rate(self) -> float | None:
        """Input events per second of worker CPU (less sensitive to other tenants of the box)."""
        return self.events / self.cpu_seconds if self.cpu_seconds else None


@dataclass
class _Drained:
    t0: float | None = None  # wall time of the worker's first consumed input
    cpu0: float | None = None  # the worker's CPU seconds then
    consumed: float | None = None  # wall time every input had been consumed
    counted: int = 0  # inputs the worker's counter showed at the last scrape
    follower: LabelFollower | None = None


async def _drain(
    settings: Settings, worker: WorkerProcess, keys: set[str], events: int, timeout: float
) -> _Drained:
    """Follow the worker until every key is labelled (or labels stop coming)."""
    out = _Drained(follower=await LabelFollower(settings).start())
    follower = out.follower
    consumed_mono = None
    last_zero = time.time()
    deadline = time.monotonic() + timeout
    stalled_after = settings.max_wait_s + 10.0
    try:
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError("the worker died")
            now = time.time()
            seen = None
            if out.consumed is None:  # a scrape costs the worker ~10 ms of CPU: only as needed
                seen = await asyncio.to_thread(scrape_events_in, settings.metrics_port)
            if seen is not None:
                out.counted = max(out.counted, seen)
            if seen and out.t0 is None:
                out.t0 = (last_zero + now) / 2
                out.cpu0 = procfs.cpu_seconds(worker.process.pid)
            elif out.t0 is None:
                last_zero = now
            if seen is not None and seen >= events and out.consumed is None:
                out.consumed, consumed_mono = now, time.monotonic()
            if follower.covered(keys) == len(keys):
                await asyncio.sleep(1.0)  # let revisions of the same moment arrive
                return out
            quiet_since = max(follower.last_arrival, consumed_mono or 0.0)
            if consumed_mono is not None and time.monotonic() - quiet_since > stalled_after:
                return out  # some keys never get a label (dead-lettered)
            # Scrape often until the start is known, then once a second until all is consumed.
            await asyncio.sleep(0.1 if out.t0 is None else 1.0)
        raise TimeoutError(f"labels for {follower.covered(keys)}/{len(keys)} keys in {timeout}s")
    finally:
        await follower.stop()


def run_throughput(
    broker_url: str,
    lines: list[dict[str, Any]],
    workdir: Path,
    *,
    name: str = "pipeline",
    partitions: int = 4,
    timeout: float = 3600.0,
    profile: Path | None = None,
    measure_state: bool = True,
    worker_env: dict[str, str] | None = None,
) -> ThroughputResult:
    settings = bench_settings(broker_url, workdir, name, partitions, worker_env)
    keys = conversion_keys(lines)
    asyncio.run(ensure_topics(settings))
    produced: Produced = asyncio.run(produce_timed(settings, lines))
    worker = WorkerProcess(
        settings_env(settings), workdir / f"{name}-worker.log", extra_env=dict(worker_env or {})
    )
    profiler = None
    try:
        worker.start()
        if profile is not None:
            profiler = Profiler(worker.process.pid, profile).start()
        drained = asyncio.run(_drain(settings, worker, keys, len(lines), timeout))
        pid = worker.process.pid
        rss, cpu = procfs.peak_rss_mib(pid), procfs.cpu_seconds(pid)
        flow = _scrape(settings.metrics_port)
    finally:
        if profiler is not None:
            profiler.stop()
        worker.stop()
    t0, follower = drained.t0, drained.follower
    if t0 is None:
        raise RuntimeError("the worker never reported consumed events")
    result = ThroughputResult(
        events=len(lines),
        expected_keys=len(keys),
        covered_keys=follower.covered(keys),
        labels=follower.labels,
        seconds=follower.last_emitted / 1000 - t0,
        consume_seconds=(drained.consumed - t0) if drained.consumed else None,
        counted=drained.counted,
        preload_rate=produced.rate,
        peak_rss_mib=rss,
        cpu_seconds=None if cpu is None or drained.cpu0 is None else cpu - drained.cpu0,
    )
    if flow is not None:
        result.sent, result.batch_means = parse_flow(flow)
    if measure_state:
        result.state = asyncio.run(state_sizes(settings))
    return result


@dataclass
class LatencyResult:
    rate_target: float
    rate_achieved: float
    events: int
    covered_keys: int
    expected_keys: int
    summary: dict[str, float]
    peak_rss_mib: float | None
    # while paced (histogram_between): event-loop lag per loop, GC pauses per generation
    loop_lag: dict[str, dict[str, float]] = field(default_factory=dict)
    gc_pauses: dict[str, dict[str, float]] = field(default_factory=dict)


def _histograms(port: int) -> dict[str, dict[str, list[tuple[Any, float]]]]:
    return {
        LOOP_LAG: scrape_histograms(port, LOOP_LAG, "loop"),
        GC_PAUSE: scrape_histograms(port, GC_PAUSE, "generation"),
    }


async def _paced(
    settings: Settings,
    worker: WorkerProcess,
    lines: list[dict[str, Any]],
    rate: float,
    keys: set[str],
    timeout: float,
) -> tuple[Produced, LabelFollower, dict[str, dict[str, dict[str, float]]]]:
    """Produce ``lines`` at ``rate`` once a canary is labelled, until every key has a label;
    with the worker's event-loop lag and GC pauses over that time (:func:`_histograms`)."""
    follower = await LabelFollower(settings).start()
    try:
        probe = canary(lines)
        probe_key = "{advertiser_id}:{event_name}:{event_id}".format(**probe["value"])
        deadline = time.monotonic() + 120
        await produce_timed(settings, [probe])
        while probe_key not in follower.first:
            if not worker.alive() or time.monotonic() > deadline:
                raise RuntimeError("the worker did not label the canary conversion")
            await asyncio.sleep(0.1)
        before = await asyncio.to_thread(_histograms, settings.metrics_port)
        produced = await produce_timed(settings, lines, rate=rate)
        deadline = time.monotonic() + timeout
        stalled_after = settings.max_wait_s + 10.0
        while follower.covered(keys) < len(keys):
            if not worker.alive():
                raise RuntimeError("the worker died")
            if time.monotonic() - follower.last_arrival > stalled_after:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"labels for {follower.covered(keys)}/{len(keys)} keys")
            await asyncio.sleep(0.2)
        after = await asyncio.to_thread(_histograms, settings.metrics_port)
        seen = {
            name: {
                key: histogram_between(before[name].get(key, []), rows)
                for key, rows in series.items()
            }
            for name, series in after.items()
        }
        return produced, follower, seen
    finally:
        await follower.stop()


def run_latency(
    broker_url: str,
    lines: list[dict[str, Any]],
    workdir: Path,
    rate: float,
    *,
    name: str = "latency",
    partitions: int = 4,
    timeout: float = 3600.0,
    worker_env: dict[str, str] | None = None,
) -> LatencyResult:
    settings = bench_settings(broker_url, workdir, name, partitions, worker_env)
    keys = conversion_keys(lines)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(
        settings_env(settings), workdir / f"{name}-worker.log", extra_env=dict(worker_env or {})
    )
    try:
        worker.start()
        produced, follower, seen = asyncio.run(_paced(settings, worker, lines, rate, keys, timeout))
        rss = procfs.peak_rss_mib(worker.process.pid)
    finally:
        worker.stop()
    rows = latency.samples(
        lines,
        produced.sent_at,
        follower.first,
        partitions=partitions,
        lateness_ms=settings.allowed_lateness_ms,
        max_wait_s=settings.max_wait_s,
    )
    with (workdir / f"{name}-samples.jsonl").open("wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    return LatencyResult(
        rate_target=rate,
        rate_achieved=produced.rate,
        events=len(lines),
        covered_keys=follower.covered(keys),
        expected_keys=len(keys),
        summary=latency.summarize(rows, settings.max_wait_s),
        peak_rss_mib=rss,
        loop_lag={k: v for k, v in seen[LOOP_LAG].items() if v},
        gc_pauses={k: v for k, v in seen[GC_PAUSE].items() if v},
    )
