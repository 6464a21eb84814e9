"""Fixtures for runs against the real embedded broker (tansu) and real worker processes."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from convstream.stream.broker import EmbeddedBroker
from convstream.stream.kafka import ensure_topics
from convstream.stream.runner import WorkerProcess, settings_env
from convstream.stream.settings import Settings

_ids = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings of one test: its own topic prefix and consumer group on the shared broker."""
    run = f"t{next(_ids)}-{uuid.uuid4().hex[:6]}"
    s = Settings.from_env(
        {},
        broker=broker.url,
        topic_prefix=f"{run}.",
        app_id=f"convstream-{run}",
        partitions=4,
        data_dir=str(tmp_path / "state"),
        metrics_port=0,
        max_wait_s=8.0,
    )
    asyncio.run(ensure_topics(s))
    return s


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes for a test; every one of them is stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(
        settings: Settings, name: str = "worker", loglevel: str | None = None, **env: str
    ) -> WorkerProcess:
        w = WorkerProcess(settings_env(settings), tmp_path / f"{name}.log", extra_env=env)
        if loglevel is not None:
            w.loglevel = loglevel
        started.append(w.start())
        return w

    yield start
    for w in started:
        w.stop()
