"""``convstream demo``: broker, worker, synthetic traffic, replay and evaluation in one command."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import orjson

from convstream.core.evaluation import evaluate
from convstream.stream.broker import EmbeddedBroker
from convstream.stream.kafka import ensure_topics, produce
from convstream.stream.runner import WorkerProcess, settings_env, wait_for_labels
from convstream.stream.settings import Settings
from convstream.synth.generate import config_from_args, generate, write_replay, write_truth


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    overrides = {
        k: v
        for k, v in (("seed", args.seed), ("users", args.users), ("days", args.days))
        if v is not None
    }
    lines, truth = generate(config_from_args(args.profile, **overrides))
    write_replay(workdir / "replay.jsonl", lines)
    write_truth(workdir / "truth.jsonl", truth)
    _say(f"generated {len(lines)} events, {len(truth)} conversions ({args.profile} profile)")

    broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
    _say(f"tansu broker at {broker.url}")
    settings = Settings.from_env(
        {},
        broker=broker.url,
        partitions=args.partitions,
        app_id="convstream-demo",
        data_dir=str(workdir / "state"),
        metrics_port=0,
        max_wait_s=5.0,
    )
    worker = WorkerProcess(settings_env(settings), workdir / "worker.log")
    try:
        asyncio.run(ensure_topics(settings))
        worker.start()
        _say("worker started; replaying traffic")
        started = time.monotonic()
        asyncio.run(produce(settings, lines, progress=True, total=len(lines)))
        expected = {row["conversion_key"] for row in truth}

        def progress(done: int, total: int) -> None:
            sys.stderr.write(f"\r[demo] labelled {done}/{total} conversions")
            sys.stderr.flush()

        labels = wait_for_labels(settings, expected, timeout=300, on_progress=progress)
        elapsed = time.monotonic() - started
        sys.stderr.write("\n")
        if not worker.alive():
            _say(f"the worker died; see {workdir / 'worker.log'}")
            return 1
    finally:
        worker.stop()
        broker.stop()
    (workdir / "labels.jsonl").write_bytes(b"".join(orjson.dumps(lab) + b"\n" for lab in labels))
    report = evaluate(labels, truth)
    _say(
        f"{len(lines)} events -> {len(labels)} labels in {elapsed:.1f} s "
        f"({len(lines) / elapsed:,.0f} events/s end to end)"
    )
    print(report.format_table())
    _say(f"files in {workdir}/: replay.jsonl truth.jsonl labels.jsonl worker.log")
    return 0 if report.as_dict().get("coverage", 0) > 0.99 else 1
