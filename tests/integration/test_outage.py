"""The broker goes away for longer than a session timeout, then comes back on the same address.

tansu runs behind :class:`Gate`, a TCP relay on the address tansu advertises, so every client
(worker, producer, label reader) connects through it. Closing the gate refuses new connections
and cuts the open ones, as a broker host dropping off the network does; the broker's state
(topics, offsets, the consumer group) survives, as it would on a real Kafka cluster. The worker
must stay up, say ``convstream_broker_up 0`` while the broker is gone, and finish the replay
after the gate opens, with no restart by hand.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from convstream.stream.broker import free_port
from convstream.stream.kafka import ensure_topics, produce
from convstream.stream.runner import wait_for_labels
from convstream.stream.settings import Settings
from convstream.synth.generate import config_from_args, generate
from tests.integration.test_sasl import PlainSaslProxy, _start_tansu, _stop

pytestmark = pytest.mark.integration

pump = PlainSaslProxy._pump  # the byte relay both fronts of tansu use

OUTAGE_S = 15.0  # longer than the 10 s session timeout: the group must re-form afterwards


class Gate:
    """A TCP relay from ``port`` to ``upstream_port`` that can be closed and reopened."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        self.upstream_port = upstream_port
        self.cut = 0  # connections cut by close()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    def _call(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def open(self) -> Gate:
        if not self._thread.is_alive():
            self._thread.start()

        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, reuse_address=True
            )

        self._call(listen())
        return self

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            await self._server.wait_closed()
            self.cut += len(self._connections)
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

        self._call(shut())

    def stop(self) -> None:
        if self._server is not None and self._server.is_serving():
            self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.close()
            self._connections.discard(task)
            return
        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (writer, up_writer):
                w.transport.abort()  # a reset, not a polite FIN: the host is gone
            self._connections.discard(task)


@pytest.fixture
def gated_broker(tmp_path: Path) -> Iterator[Gate]:
    upstream = free_port()
    gate = Gate(upstream)
    tansu = _start_tansu(upstream, gate.port, tmp_path / "tansu.log")
    gate.open()
    try:
        yield gate
    finally:
        gate.stop()
        _stop(tansu)


def broker_up(port: int) -> float | None:
    """The worker's ``convstream_broker_up`` gauge, or None before the timer has set it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("convstream_broker_up "):
                return float(line.split()[1])
    return None


def wait_for_gauge(port: int, want: float, worker, timeout: float) -> float:
    """Seconds until the gauge reads ``want``; fails if the worker dies on the way."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert worker.alive(), worker.log_path.read_text()[-3000:]
        try:
            if broker_up(port) == want:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"convstream_broker_up never read {want} within {timeout} s")


def test_worker_rides_out_a_broker_outage(gated_broker, start_worker, tmp_path):
    run = f"outage-{gated_broker.port}"
    settings = Settings.from_env(
        {},
        broker=f"kafka://127.0.0.1:{gated_broker.port}",
        topic_prefix=f"{run}.",
        app_id=f"convstream-{run}",
        partitions=4,
        data_dir=str(tmp_path / "state"),
        metrics_port=free_port(),
        max_wait_s=8.0,
    )
    asyncio.run(ensure_topics(settings))
    # Its bookkeeping reads every conversions-topic line as a conversion: the traffic before
    # site events (which get no label; test_demo and test_match_figures carry them).
    lines, truth = generate(
        config_from_args("default", seed=41, users=300, days=4, site_events=False)
    )
    half = len(lines) // 2
    first_keys = {
        line["value"]["event_id"] for line in lines[:half] if line["topic"] == "conversions"
    }
    assert first_keys and len(first_keys) < len(truth)
    worker = start_worker(settings)

    # Before: the first half is labelled (a label's key is advertiser:event_name:event_id).
    asyncio.run(produce(settings, lines[:half]))
    before = wait_for_labels(
        settings, {row["conversion_key"] for row in truth if _in(row, first_keys)}, timeout=180
    )
    assert {lab["conversion_key"] for lab in before} >= {
        row["conversion_key"] for row in truth if _in(row, first_keys)
    }
    wait_for_gauge(settings.metrics_port, 1.0, worker, timeout=30)

    # The outage: the worker stays up and reports the broker down.
    lines_before = _log_lines(worker)
    gated_broker.close()
    assert gated_broker.cut > 0, "the worker held no connection to cut"
    went_down = wait_for_gauge(settings.metrics_port, 0.0, worker, timeout=30)
    time.sleep(max(OUTAGE_S - went_down, 0))
    assert worker.alive(), worker.log_path.read_text()[-3000:]
    # The client retries every 100 ms and logs each failure (~2,000 lines here unthinned);
    # repeats of a message are thinned to one per 10 s (convstream/stream/logs.py).
    assert _log_lines(worker) - lines_before < 100

    # After: the same process reconnects, and the rest of the replay is labelled.
    gated_broker.open()
    wait_for_gauge(settings.metrics_port, 1.0, worker, timeout=60)
    asyncio.run(produce(settings, lines[half:]))
    expected = {row["conversion_key"] for row in truth}
    labels = wait_for_labels(settings, expected, timeout=240)
    assert {lab["conversion_key"] for lab in labels} == expected
    assert worker.alive(), "the worker had to be restarted"


def _log_lines(worker) -> int:
    return len(worker.log_path.read_text().splitlines())


def _in(row: dict, event_ids: set[str]) -> bool:
    return row["conversion_key"].rsplit(":", 1)[-1] in event_ids
