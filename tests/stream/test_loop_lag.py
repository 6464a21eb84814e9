"""convstream.stream.health: the event loops' lag and the garbage collector's pauses, as metrics
see them."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

from convstream.stream import health, metrics


async def test_a_held_loop_shows_as_lag_and_an_idle_one_does_not() -> None:
    seen: list[float] = []
    probe = asyncio.create_task(health.watch_loop_lag(seen.append, period=0.05))
    await asyncio.sleep(0.12)  # idle: wake-ups on time
    idle = len(seen)
    time.sleep(0.3)  # hold the loop, as an agent's batch does between awaits
    await asyncio.sleep(0.12)
    probe.cancel()

    assert idle >= 1
    assert max(seen[:idle]) < 0.05
    assert max(seen[idle:]) >= 0.25


def test_gc_pause_timer_reports_each_collection_by_generation() -> None:
    seen: list[tuple[int, float]] = []
    timer = health.GCPauseTimer(lambda generation, seconds: seen.append((generation, seconds)))
    gc.callbacks.append(timer)
    try:
        cycles = []
        for _ in range(20_000):  # cyclic garbage, so the full collection has work to do
            node: list = []
            node.append(node)
            cycles.append(node)
        del cycles, node
        gc.collect(2)
    finally:
        gc.callbacks.remove(timer)

    full = [seconds for generation, seconds in seen if generation == 2]
    assert full and full[-1] > 0
    assert timer.started is None  # every start was paired with its stop


def test_gc_pause_timer_is_installed_once() -> None:
    first = health.time_gc_pauses()
    assert health.time_gc_pauses() is first
    assert sum(isinstance(cb, health.GCPauseTimer) for cb in gc.callbacks) == 1


def test_a_collection_while_the_metric_is_locked_does_not_deadlock() -> None:
    # A scrape, or the first use of a label value, holds the metric's (non-reentrant) lock while
    # it allocates, so a collection can start right there, in that thread.
    timer = health.GCPauseTimer()
    gc.callbacks.append(timer)

    def collect_under_the_lock() -> None:
        with metrics.GC_PAUSE._lock:
            gc.collect(0)

    try:
        worker = threading.Thread(target=collect_under_the_lock, daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), "the GC callback waited for a lock its thread holds"
    finally:
        gc.callbacks.remove(timer)
