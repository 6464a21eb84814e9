"""Start and stop worker processes, and wait for labels: shared by the demo and the tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convstream.stream.kafka import read_topic
from convstream.stream.settings import Settings


@dataclass
class WorkerProcess:
    """``convstream worker`` as a child process with its own environment and log file."""

    settings_env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # CONVSTREAM_TEST_LOGLEVEL=info keeps rebalances and assignments in a test worker's log.
    loglevel: str = field(
        default_factory=lambda: os.environ.get("CONVSTREAM_TEST_LOGLEVEL", "warning")
    )

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings_env, **self.extra_env}
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "convstream.stream.cli", "worker", "--loglevel", self.loglevel],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child worker use exactly ``settings``."""
    from dataclasses import fields

    env = {}
    for f in fields(settings):
        if f.name == "extra":
            continue
        env[f"CONVSTREAM_{f.name.upper()}"] = str(getattr(settings, f.name))
    return env


async def collect_labels(settings: Settings) -> list[dict[str, Any]]:
    return [r["value"] async for r in read_topic(settings, "labels")]


def wait_for_labels(
    settings: Settings,
    expected_keys: set[str],
    *,
    timeout: float,
    settle: float = 3.0,
    on_progress: Any = None,
) -> list[dict[str, Any]]:
    """Poll the labels topic until every expected key has a label and nothing new arrives."""
    deadline = time.monotonic() + timeout
    last_count = -1
    stable_since = time.monotonic()
    labels: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        labels = asyncio.run(collect_labels(settings))
        keys = {lab["conversion_key"] for lab in labels}
        if on_progress:
            on_progress(len(keys & expected_keys), len(expected_keys))
        if len(labels) != last_count:
            last_count = len(labels)
            stable_since = time.monotonic()
        elif expected_keys <= keys and time.monotonic() - stable_since >= settle:
            return labels
        time.sleep(1.0)
    return labels
