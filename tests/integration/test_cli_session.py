"""The README's by-hand session through the real ``convstream`` command, on a small replay:
``labels`` read too early warns, ``labels --wait`` reads until every conversion is labelled,
and ``evaluate`` of what it read has full coverage and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from convstream.stream.runner import WorkerProcess
from convstream.stream.settings import Settings

pytestmark = pytest.mark.integration


def convstream(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "convstream.stream.cli", *args],
        cwd=cwd, env=dict(os.environ), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_labels_warns_when_early_and_wait_reads_every_label(
    settings: Settings, start_worker: Callable[..., WorkerProcess], tmp_path: Path
):
    kafka = ["--broker", settings.broker, "--topic-prefix", settings.topic_prefix]
    group = ["--app-id", settings.app_id]
    made = convstream("generate", "--users", "400", "--days", "5", "--seed", "11", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    sent = convstream("replay", "replay.jsonl", "--quiet", *kafka, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr

    early = convstream("labels", *kafka, *group, "-o", "early.jsonl", cwd=tmp_path)
    n_truth = len((tmp_path / "truth.jsonl").read_bytes().splitlines())
    assert early.returncode == 0, early.stderr
    assert early.stderr.strip().splitlines() == [
        f"convstream labels: warning: 0 of {n_truth:,} conversions on the topic have a label so "
        "far; the worker is still catching up: use --wait to read until all are labelled"
    ]

    start_worker(settings)
    waited = convstream("labels", *kafka, *group, "--wait", "-o", "labels.jsonl", cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr
    assert f"for {n_truth:,} conversions" in waited.stderr.splitlines()[-1]

    scored = convstream(
        "evaluate", "--labels", "labels.jsonl", "--truth", "truth.jsonl", cwd=tmp_path
    )
    assert scored.returncode == 0, scored.stderr
    assert "coverage 1.000" in scored.stdout


def test_labels_wait_without_a_worker_stops_with_one_line(settings: Settings, tmp_path: Path):
    kafka = ["--broker", settings.broker, "--topic-prefix", settings.topic_prefix]
    assert convstream("generate", "--users", "200", "--days", "3", cwd=tmp_path).returncode == 0
    assert convstream("replay", "replay.jsonl", "--quiet", *kafka, cwd=tmp_path).returncode == 0
    result = convstream(
        "labels", *kafka, "--app-id", settings.app_id, "--wait", "--stall-timeout", "5",
        "-o", "labels.jsonl", cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("convstream labels: stalled: no new label and no input consumed")
    assert "Traceback" not in result.stderr and not (tmp_path / "labels.jsonl").read_bytes()


@pytest.mark.parametrize("command", ["labels", "labels --wait", "quality"])
def test_reading_topics_that_are_not_there_is_one_line(broker, tmp_path: Path, command: str):
    result = convstream(
        *command.split(), "--broker", broker.url, "--topic-prefix", "never-replayed.",
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "does not exist on the broker: nothing was replayed to it yet" in result.stderr


def test_a_second_worker_on_the_host_serves_metrics_on_the_next_port(
    settings: Settings, start_worker: Callable[..., WorkerProcess]
):
    import time
    import urllib.request

    from convstream.stream.broker import free_port

    port = free_port()
    settings = settings.replace(metrics_port=port)
    first = start_worker(settings, name="first")
    second = start_worker(settings, name="second")
    deadline = time.monotonic() + 120
    moved = None
    while time.monotonic() < deadline and moved is None:
        assert first.alive() and second.alive(), second.log_path.read_text()[-2000:]
        for log in (first.log_path.read_text(), second.log_path.read_text()):
            found = [line for line in log.splitlines() if "is in use (another worker" in line]
            if found:
                moved = found[0]
        time.sleep(0.5)
    assert moved is not None and f"metrics port 127.0.0.1:{port} is in use" in moved
    served = int(moved.split("serving metrics on 127.0.0.1:")[1].split()[0])
    for p in (port, served):
        with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=10) as response:
            assert b"convstream_worker_up 1.0" in response.read()
