"""``convstream demo``: broker, worker, synthetic traffic, replay and evaluation in one command.

It waits on progress, not on a clock: as long as labels arrive or the worker consumes input,
it keeps waiting (a busy machine makes it slower, never wrong); when both stand still for
``--stall-timeout`` seconds it stops with one line saying so and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from pathlib import Path

import orjson

from convstream.core.evaluation import evaluate
from convstream.stream.broker import EmbeddedBroker, free_port
from convstream.stream.errors import UserError
from convstream.stream.evaluate_cli import GLOSSARY, problems
from convstream.stream.kafka import ensure_topics, produce
from convstream.stream.report import render_report
from convstream.stream.runner import (
    ProgressLine,
    Stalled,
    WorkerDied,
    WorkerProcess,
    settings_env,
    wait_for_all_labels,
)
from convstream.stream.settings import Settings
from convstream.synth.generate import config_from_args, generate, write_replay, write_truth

#: What a demo run writes; a new run removes exactly these first, so nothing mixes runs.
OUTPUTS = ("replay.jsonl", "truth.jsonl", "labels.jsonl", "report.html", "worker.log", "tansu.log")
STATE = "state"


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def fresh_workdir(workdir: Path) -> None:
    """Create ``workdir`` or empty it of a previous run's files (and only those)."""
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"--workdir {workdir}: exists and is not a directory")
    workdir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (workdir / name).unlink(missing_ok=True)
    shutil.rmtree(workdir / STATE, ignore_errors=True)


def run_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    overrides = {
        k: v
        for k, v in (("seed", args.seed), ("users", args.users), ("days", args.days))
        if v is not None
    }
    if getattr(args, "no_site_events", False):
        overrides["site_events"] = False
    config = config_from_args(args.profile, **overrides)
    fresh_workdir(workdir)
    lines, truth = generate(config)
    write_replay(workdir / "replay.jsonl", lines)
    write_truth(workdir / "truth.jsonl", truth)
    _say(
        f"generated {len(lines):,} events and {len(truth):,} conversions "
        f"({args.profile} profile, {config.users:,} users, {config.days} days, seed {config.seed})"
    )

    broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
    _say(f"tansu broker at {broker.url}")
    settings = Settings.from_env(
        {},
        broker=broker.url,
        partitions=args.partitions,
        app_id="convstream-demo",
        data_dir=str(workdir / STATE),
        metrics_port=free_port(),
        max_wait_s=5.0,
    )
    worker = WorkerProcess(settings_env(settings), workdir / "worker.log")
    bar = ProgressLine("[demo] worker")
    started = time.monotonic()
    try:
        asyncio.run(ensure_topics(settings))
        worker.start()
        _say(
            f"worker started (pid {worker.process.pid}, metrics on "
            f"http://127.0.0.1:{settings.metrics_port}/metrics, log {workdir / 'worker.log'})"
        )
        _say(f"replaying {len(lines):,} events")
        asyncio.run(produce(settings, lines, progress=True, total=len(lines)))
        _say(
            f"waiting for the worker to label all {len(truth):,} conversions; it stops if "
            f"nothing moves for {args.stall_timeout:.0f} s"
        )
        labels = asyncio.run(
            wait_for_all_labels(
                settings,
                {row["conversion_key"] for row in truth},
                stall_timeout=args.stall_timeout,
                alive=worker.alive,
                on_status=bar,
            )
        )
        elapsed = time.monotonic() - started
    except (Stalled, WorkerDied) as exc:
        bar.done()
        _say(f"{exc}; see {workdir / 'worker.log'}")
        return 1
    finally:
        bar.done()
        worker.stop()
        broker.stop()
    (workdir / "labels.jsonl").write_bytes(b"".join(orjson.dumps(lab) + b"\n" for lab in labels))
    report = evaluate(labels, truth)
    _say(
        f"{len(lines):,} events -> {len(labels):,} labels in {elapsed:.1f} s "
        f"({len(lines) / elapsed:,.0f} events/s end to end)"
    )
    print(report.format_table())
    print()
    print(GLOSSARY)
    html = render_report(labels, truth, workdir / "report.html")
    _say(f"report: {html.resolve()}")
    _say(f"files in {workdir}/: {' '.join(OUTPUTS)}")
    trouble = problems(report.as_dict(), min_coverage=0.99)
    for problem in trouble:
        _say(f"FAILED: {problem}")
    return 1 if trouble else 0
