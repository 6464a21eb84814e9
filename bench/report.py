"""The bench's results as Markdown: printed, and appended as a dated section to BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import growth
from bench.growth import GrowthResult
from bench.passthrough import PassResult
from bench.pipeline import LatencyResult, ThroughputResult
from convstream.stream.health import LOOP_PROBE_S


@dataclass(frozen=True)
class FloorResult:
    events: int
    seconds: float
    cpu_seconds: float | None
    peak_rss_mib: float | None
    spinner: str = "off"

    @property
    def rate(self) -> float:
        return self.events / max(self.seconds, 1e-9)


@dataclass
class Results:
    command: str
    facts: dict[str, Any]
    events: int
    users: int
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0
    worker_env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    raw: list[PassResult] = field(default_factory=list)
    faust: FloorResult | None = None
    pipeline: ThroughputResult | None = None
    latency: LatencyResult | None = None
    scaling: list[tuple[int, int, ThroughputResult]] = field(default_factory=list)
    growth: list[GrowthResult] = field(default_factory=list)
    growth_marks: tuple[int, ...] = ()

    @property
    def raw_median(self) -> PassResult | None:
        """The median repetition of stage 1 (by rate)."""
        if not self.raw:
            return None
        return sorted(self.raw, key=lambda r: r.rate)[len(self.raw) // 2]

    @property
    def raw_rate(self) -> float | None:
        return self.raw_median.rate if self.raw else None

    @property
    def faust_rate(self) -> float | None:
        return self.faust.rate if self.faust else None


def _n(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1%}" if a and b else "n/a"


def _per_cpu(events: int, cpu: float | None) -> float | None:
    return events / cpu if cpu else None


def state_per_user(result: ThroughputResult) -> tuple[float | None, float | None]:
    """(serialized bytes, estimated Python bytes) of all tables per stored user."""
    users = result.state.get("users")
    if not users or not users.entries:
        return None, None
    total = sum(s.bytes for s in result.state.values())
    python = sum(
        (s.python_bytes_per_entry or s.bytes_per_entry) * s.entries for s in result.state.values()
    )
    return total / users.entries, python / users.entries


def _throughput(r: Results) -> list[str]:
    out = [
        "| stage | input events | seconds | input events/s | events per CPU-second |",
        "|---|---:|---:|---:|---:|",
    ]
    raw = r.raw_median
    if raw:
        runs = ", ".join(_n(x.rate) for x in r.raw)
        out.append(
            f"| 1. raw aiokafka passthrough (median of {len(r.raw)}: {runs}) | {raw.events:,} | "
            f"{_n(raw.seconds, 1)} | {_n(raw.rate)} | {_n(_per_cpu(raw.events, raw.cpu_seconds))} |"
        )
    f = r.faust
    if f:
        out.append(
            f"| 2. bare Faust passthrough (tuned as the worker, spinner {f.spinner}) | "
            f"{f.events:,} | "
            f"{_n(f.seconds, 1)} | {_n(f.rate)} | {_n(_per_cpu(f.events, f.cpu_seconds))} |"
        )
    p = r.pipeline
    if p:
        out.append(
            f"| 3. convstream worker, first input to last label | {p.events:,} | "
            f"{_n(p.seconds, 1)} | {_n(p.rate)} | {_n(p.cpu_rate)} |"
        )
        if not p.consume_seconds:
            out.append(
                f"| 3a. (the worker's events_in counter reached {p.counted:,} of {p.events:,}) "
                "| | | | |"
            )
        else:
            out.append(
                f"| 3a. convstream worker, first to last input consumed | {p.events:,} | "
                f"{_n(p.consume_seconds, 1)} | {_n(p.events / p.consume_seconds)} | |"
            )
    cpu3 = p.cpu_rate if p else None
    cpu2 = _per_cpu(f.events, f.cpu_seconds) if f else None
    cpu1 = _per_cpu(raw.events, raw.cpu_seconds) if raw else None
    out += [
        "",
        f"Ratios (wall): 3/1 = {_ratio(p and p.rate, r.raw_rate)}, "
        f"3/2 = {_ratio(p and p.rate, r.faust_rate)} (target >= 50%). "
        f"Per CPU-second: 3/1 = {_ratio(cpu3, cpu1)}, 3/2 = {_ratio(cpu3, cpu2)}.",
    ]
    return out


def _pipeline(r: Results) -> list[str]:
    p = r.pipeline
    if not p:
        return []
    per_user, per_user_py = state_per_user(p)
    out = [
        "",
        f"Worker: peak RSS (VmHWM) {_n(p.peak_rss_mib)} MiB, {_n(p.cpu_seconds, 1)} CPU-s "
        f"while draining; {p.covered_keys:,}/{p.expected_keys:,} conversion keys labelled "
        f"({p.labels:,} labels with revisions). Replay preloaded at {_n(p.preload_rate)} ev/s. "
        f"Bare Faust process peak RSS {_n(r.faust.peak_rss_mib if r.faust else None)} MiB.",
    ]
    if p.sent or p.batch_means:
        sent = ", ".join(f"{t} {n / p.events:.2f}" for t, n in sorted(p.sent.items()))
        means = ", ".join(f"{a} {m:,.0f}" for a, m in sorted(p.batch_means.items()))
        out += [
            "",
            f"Messages sent per input event, by topic (changelogs below): {sent or 'n/a'}. "
            f"Mean records per batch: {means or 'n/a'}.",
        ]
    if p.state:
        out += [
            "",
            "| table | changelog writes | live entries | bytes/entry (orjson) "
            "| Python bytes/entry (sampled) |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in p.state.values():
            out.append(
                f"| {s.table} | {s.writes:,} | {s.entries:,} | {_n(s.bytes_per_entry)} | "
                f"{_n(s.python_bytes_per_entry)} |"
            )
        out += [
            "",
            f"All tables per stored user: {_n(per_user)} B serialized, "
            f"~{_n(per_user_py)} B as Python objects.",
        ]
    return out


def _latency(r: Results) -> list[str]:
    lat = r.latency
    if not lat or not lat.summary:
        return []
    s = lat.summary
    out = [
        "",
        f"Latency, conversion send -> label `emitted_at`, paced at {_n(lat.rate_achieved)} "
        f"ev/s (target {_n(lat.rate_target)}), {lat.events:,} events, {int(s['n']):,} "
        f"conversions ({lat.covered_keys:,}/{lat.expected_keys:,} labelled); "
        f"worker peak RSS {_n(lat.peak_rss_mib)} MiB:",
        "",
        "| ms | p50 | p95 | p99 |",
        "|---|---:|---:|---:|",
    ]
    for name, title in (
        ("total", "total"),
        ("wait", "watermark / bounded wait"),
        ("beyond", "beyond the wait (target p99 <= 250)"),
    ):
        out.append(
            f"| {title} | {_n(s[f'{name}_p50_ms'], 1)} | {_n(s[f'{name}_p95_ms'], 1)} | "
            f"{_n(s[f'{name}_p99_ms'], 1)} |"
        )
    out += [
        "",
        f"The wait is {s['wait_share']:.0%} of the mean latency; {int(s['waited']):,} "
        f"conversions waited for the watermark, {int(s['bounded']):,} hit the bounded wait.",
    ]
    for loop, lag in sorted(lat.loop_lag.items()):
        held = lag["total_s"] / (lag["total_s"] + lag["n"] * LOOP_PROBE_S)
        out += [
            "",
            f"Event-loop lag while paced, {loop} loop ({int(lag['n']):,} wake-ups of the "
            "worker's 0.1 s probe, `convstream_event_loop_lag_seconds`, interpolated in the "
            f"buckets): p50 {_n(lag['p50_ms'], 1)} ms, p95 {_n(lag['p95_ms'], 1)} ms, "
            f"p99 {_n(lag['p99_ms'], 1)} ms, mean {_n(lag['mean_ms'], 1)} ms; the loop held "
            f"the probe past its due time {held:.0%} of the time.",
        ]
    if lat.gc_pauses:
        pauses = ", ".join(
            f"generation {gen}: {int(p['n']):,} ({_n(p['total_s'], 2)} s, mean "
            f"{_n(p['mean_ms'], 1)} ms)"
            for gen, p in sorted(lat.gc_pauses.items())
        )
        out += ["", f"Garbage collections while paced (`convstream_gc_pause_seconds`): {pauses}."]
    return out


def _scaling(r: Results) -> list[str]:
    if not r.scaling:
        return []
    out = [
        "",
        "Scaling (stage 3 on a preloaded replay, fresh broker and worker per size):",
        "",
        "| input events | users | seconds | input events/s | events per CPU-second "
        "| consumed ev/s | peak RSS MiB | state B/user |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for events, users, t in r.scaling:
        consumed = t.events / t.consume_seconds if t.consume_seconds else None
        out.append(
            f"| {events:,} | {users:,} | {_n(t.seconds, 1)} | {_n(t.rate)} | {_n(t.cpu_rate)} "
            f"| {_n(consumed)} | {_n(t.peak_rss_mib)} | {_n(state_per_user(t)[0])} |"
        )
    return out


def _title(r: Results) -> str:
    if not r.events and r.growth:
        return f"state growth, {r.growth[0].events:,} identity events"
    return f"{r.events:,} input events ({r.users:,} users, 14 days)"


def markdown(r: Results) -> str:
    """The results as Markdown that reads the same in a terminal and in BENCHMARKS.md."""
    f = r.facts
    load = "/".join(f"{x:.1f}" for x in r.load_before)
    load_end = "/".join(f"{x:.1f}" for x in r.load_after)
    out = [
        f"## {dt.date.today().isoformat()}: {_title(r)}",
        "",
        f"Machine: {f['cores']} cores ({f['cpu']}), {f['mem_gib']} GiB RAM; Python {f['python']}, "
        f"{f['tansu']} (memory storage, 127.0.0.1), faust-streaming {f['faust']}, "
        f"aiokafka {f['aiokafka']}. Load average {load} at the start, {load_end} at the end "
        f"(other tenants share the cores); the bench took {r.seconds:,.0f} s.",
        "",
        f"Command: `{r.command}`",
        "",
    ]
    if r.worker_env:
        settings = ", ".join(f"`{k}={v}`" for k, v in sorted(r.worker_env.items()))
        out[-1:-1] = [f"Worker settings changed from the defaults: {settings}.", ""]
    if r.raw or r.faust or r.pipeline:
        out += _throughput(r)
    out += _pipeline(r) + _latency(r) + _scaling(r)
    if r.growth:
        out += ["", *growth.markdown(r.growth, r.growth_marks)]
    if r.notes:
        out += ["", *(f"Note: {note}" for note in r.notes)]
    return "\n".join(out) + "\n"


def write_run(directory: Path, text: str, *, now: float | None = None) -> Path:
    """Write one run's section as ``directory/<UTC date and time>.md``; returns its path.

    BENCHMARKS.md is the record kept by hand (where each target stands); every run is a file.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> write_run(d, "## a run", now=0).name
    '1970-01-01T0000Z.md'
    """
    stamp = time.strftime("%Y-%m-%dT%H%MZ", time.gmtime(time.time() if now is None else now))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.md"
    path.write_text(text)
    return path
