"""Start and stop worker processes, and wait for labels: shared by the demo and the tests."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from convstream.stream.kafka import (
    _partitions,
    client_options,
    message_key,
    read_topic,
    start_client,
)
from convstream.stream.settings import INPUT_TOPICS, INTERNAL_TOPICS, Settings


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
        # a stopped (SIGSTOP) worker only acts on the SIGTERM once it runs again
        os.killpg(proc.pid, signal.SIGCONT)
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


# --- waiting on progress, not on a clock ------------------------------------------------------


class WorkerDied(RuntimeError):
    """The worker process exited while labels were awaited."""


class Stalled(RuntimeError):
    """Neither labels nor the worker's consumption moved for the stall timeout."""

    def __init__(
        self, status: WaitStatus, stall_timeout: float, labels: list[dict[str, Any]] | None = None
    ) -> None:
        self.status = status
        self.labels = labels or []  # what was read before it stalled
        super().__init__(
            f"stalled: no new label and no input consumed by the worker for "
            f"{stall_timeout:.0f} s ({status.describe()})"
        )


@dataclass
class WaitStatus:
    """Where a wait for labels stands: what :class:`ProgressLine` draws."""

    labelled: int = 0
    expected: int = 0
    rows: int = 0
    consumed: int | None = None  # records of the worker's group committed, all input topics
    lag: int | None = None  # records left to read on them
    rate: float | None = None  # consumed per second, over the last few seconds
    elapsed: float = 0.0

    def describe(self) -> str:
        """One phrase for a person.

        >>> WaitStatus(labelled=122, expected=1944, lag=5230).describe()
        'labelled 122/1,944 conversions, worker lag 5,230 records'
        """
        text = f"labelled {self.labelled:,}/{self.expected:,} conversions"
        if self.lag is not None:
            text += f", worker lag {self.lag:,} records"
        return text


class GroupProbe:
    """How far a consumer group (the worker) has read its input: committed offsets and lag.

    Faust commits every few seconds, so this moves in steps; it is a sign of life, not a
    precise gauge. It reads with a consumer of the group that never joins it (aiokafka's admin
    OffsetFetch does not decode tansu 0.6's answer). Any failure to ask yields None.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = [settings.topic(t) for t in (*INPUT_TOPICS, *INTERNAL_TOPICS)]
        self._consumer: Any = None
        self._tps: list[Any] = []

    async def start(self) -> GroupProbe:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._consumer = AIOKafkaConsumer(
            **client_options(self.settings), group_id=self.settings.app_id,
            enable_auto_commit=False,
        )  # fmt: skip
        await start_client(self._consumer, self.settings)
        known = await self._consumer.topics()
        self._tps = [
            TopicPartition(topic, p)
            for topic in self.topics
            if topic in known
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        return self

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def read(self) -> tuple[int | None, int | None]:
        """(records committed, records behind the end) over the group's input partitions."""
        if not self._tps:
            return None, None
        try:
            committed = await asyncio.gather(*(self._consumer.committed(tp) for tp in self._tps))
            ends = await self._consumer.end_offsets(self._tps)
        except Exception:  # noqa: BLE001 - a probe that fails says "unknown", nothing more
            return None, None
        pairs = [(c, ends[tp]) for tp, c in zip(self._tps, committed, strict=True) if c is not None]
        if not pairs:
            return None, None
        return sum(c for c, _ in pairs), sum(max(end - c, 0) for c, end in pairs)


async def wait_for_all_labels(
    settings: Settings,
    expected_keys: set[str],
    *,
    stall_timeout: float,
    settle: float = 3.0,
    alive: Callable[[], bool] | None = None,
    on_status: Callable[[WaitStatus], None] | None = None,
    poll_s: float = 1.0,
) -> list[dict[str, Any]]:
    """Read the labels topic until every expected key has a label and nothing new arrives for
    ``settle`` seconds; raise :class:`Stalled` when neither labels arrive nor the worker's
    group consumes for ``stall_timeout`` seconds, :class:`WorkerDied` when ``alive()`` fails.

    Progress, not a deadline: a slow machine only makes this wait longer.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await start_client(consumer, settings)
    probe = await GroupProbe(settings).start()
    labels: list[dict[str, Any]] = []
    keys: set[str] = set()
    started = last_progress = last_row = time.monotonic()
    history: list[tuple[float, int]] = []
    best_consumed = -1
    status = WaitStatus(expected=len(expected_keys))
    try:
        physical = settings.topic("labels")
        tps = [TopicPartition(physical, p) for p in await _partitions(consumer, physical)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=int(poll_s * 1000))
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    if r.value is None:
                        continue
                    label = orjson.loads(r.value)
                    labels.append(label)
                    keys.add(label["conversion_key"])
            if batch:
                last_progress = last_row = now
            consumed, lag = await probe.read()
            if consumed is not None and consumed > best_consumed:
                if best_consumed >= 0:
                    last_progress = now
                best_consumed = consumed
            if consumed is not None:
                history = [(t, c) for t, c in history if now - t <= 10.0] + [(now, consumed)]
            rate = None
            if len(history) > 1 and history[-1][0] > history[0][0]:
                rate = (history[-1][1] - history[0][1]) / (history[-1][0] - history[0][0])
            status = WaitStatus(
                labelled=len(keys & expected_keys),
                expected=len(expected_keys),
                rows=len(labels),
                consumed=consumed,
                lag=lag,
                rate=rate,
                elapsed=now - started,
            )
            if on_status is not None:
                on_status(status)
            if expected_keys <= keys and now - last_row >= settle:
                return labels
            if alive is not None and not alive():
                raise WorkerDied(f"the worker exited ({status.describe()})")
            if now - last_progress >= stall_timeout:
                raise Stalled(status, stall_timeout, labels)
    finally:
        await probe.stop()
        await consumer.stop()


async def expected_conversion_keys(settings: Settings) -> set[str]:
    """Keys of the valid conversions on the ``conversions`` topic that the worker did not send
    to the dead-letter topic: the keys that will get a label."""
    from convstream.stream.quality import merged_conversions

    keys = set(await merged_conversions(settings))
    async for record in read_topic(settings, "dead-letter"):
        value = record["value"]
        if not isinstance(value, dict) or value.get("topic") != "conversions":
            continue
        try:
            payload = orjson.loads(value.get("payload") or "")
        except orjson.JSONDecodeError:
            continue
        key = message_key("conversions", payload)
        if key is not None:
            keys.discard(key.decode())
    return keys


class ProgressLine:
    """A one-line progress bar on a terminal (redrawn in place), or a line every ``every_s``
    seconds in a log file."""

    def __init__(self, prefix: str, stream: Any = None, every_s: float = 15.0) -> None:
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s
        self._last = -math.inf
        self._drawn = False

    def __call__(self, status: WaitStatus) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last < self.every_s:
            return
        self._last = now
        width = 24
        share = status.labelled / status.expected if status.expected else 1.0
        bar = "#" * int(width * share) + "-" * (width - int(width * share))
        text = f"{self.prefix} [{bar}] {status.describe()}"
        if status.rate is not None:
            text += f", {status.rate:,.0f} records/s"
        text += f", {status.elapsed:,.0f} s"
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
