"""Worker health on timers: table sizes, consumer lag per topic, broker reachability, the event
loops' lag; garbage-collector pauses; and the C heap's free pages handed back to the kernel
(:mod:`convstream.stream.heap`)."""

from __future__ import annotations

import asyncio
import functools
import gc
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiokafka.client import AIOKafkaClient

from convstream.stream import heap, metrics
from convstream.stream.kafka import client_options

HEALTH_INTERVAL_S = 5.0
BROKER_TIMEOUT_S = 5.0
LOOP_PROBE_S = 0.1


async def watch_loop_lag(
    observe: Callable[[float], None] = metrics.observe_loop_lag, period: float = LOOP_PROBE_S
) -> None:
    """Sleep ``period`` over and over and ``observe`` how late each wake-up came, for ever.

    A wake-up is late by however long the callbacks ahead of it held the loop: a batch an agent
    processes without awaiting, a timer, a slow codec. Every Kafka hop's message waits the same
    way before its agent sees it.
    """
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        observe(loop.time() - due)


class GCPauseTimer:
    """A ``gc.callbacks`` entry that reports how long each collection took, per generation.

    Collections never overlap (the collector runs under the GIL and does not re-enter), so one
    start time serves every thread.
    """

    def __init__(self, observe: Callable[[int, float], None] | None = None) -> None:
        self.observe = observe or metrics.gc_pause_observer()
        self.started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif self.started is not None:
            self.observe(info["generation"], time.perf_counter() - self.started)
            self.started = None


def time_gc_pauses() -> GCPauseTimer:
    """Install a :class:`GCPauseTimer` (once per process) and return the installed one."""
    for callback in gc.callbacks:
        if isinstance(callback, GCPauseTimer):
            return callback
    installed = GCPauseTimer()
    gc.callbacks.append(installed)
    return installed


async def consumer_lag(app: Any, logical: dict[str, str]) -> dict[str, int]:
    """Records between what this worker has read and the high watermark of the last fetch, per
    logical topic, over its assigned partitions (changelogs and foreign topics left out)."""
    lag: dict[str, int] = defaultdict(int)
    for tp in app.consumer.assignment():
        topic = logical.get(tp.topic)
        if topic is None:
            continue
        try:
            highwater = app.consumer.highwater(tp)
            read = app.monitor.tp_read_offsets.get(tp)
            position = read + 1 if read is not None else await app.consumer.position(tp)
        except Exception:  # noqa: BLE001 - revoked since assignment() was read; next tick
            continue
        if highwater is not None and position is not None:
            lag[topic] += max(highwater - position, 0)
    return lag


def register(rt: Any) -> None:
    """Add the health timers and probes to the app of ``rt`` (a convstream.stream.app.Runtime)."""
    app = rt.app
    time_gc_pauses()
    clients: list[AIOKafkaClient] = []  # made on the worker's loop, at the first tick
    lag_topics: set[str] = set()

    async def broker_reachable() -> bool:
        try:
            if not clients:
                client = AIOKafkaClient(**client_options(rt.settings))
                try:
                    await asyncio.wait_for(client.bootstrap(), BROKER_TIMEOUT_S)
                except BaseException:
                    await client.close()
                    raise
                clients.append(client)
            await asyncio.wait_for(clients[0].fetch_all_metadata(), BROKER_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - any failure means "not reachable now"
            return False
        return True

    @app.timer(interval=HEALTH_INTERVAL_S)
    async def report_health() -> None:
        metrics.set_broker_up(await broker_reachable())
        for table in rt.tables.values():
            metrics.set_table_entries(table.name, len(table))
        lag = await consumer_lag(app, rt.logical)
        for topic in lag_topics - set(lag):  # partitions moved away in a rebalance
            metrics.set_consumer_lag(topic, 0)
        for topic, records in lag.items():
            metrics.set_consumer_lag(topic, records)
        lag_topics.update(lag)

    @app.task
    async def freeze_startup_heap() -> None:
        # What is alive once the worker starts (modules, classes, clients) stays alive. A full
        # collection holds every thread for as long as it scans, so those objects are moved
        # out of its way; it then scans only what came after (BENCHMARKS.md, GC pauses).
        gc.collect()
        gc.freeze()

    @app.task
    async def report_loop_lag() -> None:
        # Faust runs aiokafka's consumer in a thread with its own loop; fetched records wait
        # there before they reach the agents, so that loop is probed too.
        thread_loop = getattr(getattr(app.consumer, "_thread", None), "thread_loop", None)
        consumer_probe = None
        if thread_loop is not None:
            observe = functools.partial(metrics.observe_loop_lag, loop="consumer")
            consumer_probe = asyncio.run_coroutine_threadsafe(watch_loop_lag(observe), thread_loop)
        try:
            await watch_loop_lag()
        finally:
            if consumer_probe is not None:
                consumer_probe.cancel()

    if rt.settings.heap_trim_s > 0 and heap.available():

        @app.timer(interval=rt.settings.heap_trim_s)
        async def release_free_heap() -> None:
            loop = asyncio.get_running_loop()
            metrics.count_heap_released(await loop.run_in_executor(None, heap.release_free_heap))
