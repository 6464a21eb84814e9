"""Run one convstream worker: topics declared, metrics served, Faust worker until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import faust

from convstream.stream import health, logs, metrics
from convstream.stream.app import create_app
from convstream.stream.kafka import ensure_topics
from convstream.stream.settings import Settings


def run_worker(settings: Settings, *, loglevel: str = "warning") -> int:
    asyncio.run(ensure_topics(settings))
    # Its metadata fetch succeeded: the broker is up, well before the first health tick (about
    # 20 s later at startup, rebalance included), which would otherwise read 0 until then.
    metrics.set_broker_up(True)
    app, rt = create_app(settings)
    health.register(rt)
    metrics.start_metrics_server(settings.metrics_host, settings.metrics_port)

    @app.on_rebalance_complete.connect
    async def _rebalanced(sender: object, **kwargs: object) -> None:
        metrics.count_rebalance()

    @app.task
    async def _dump_tasks_on_sigusr1() -> None:
        """``kill -USR1 <pid>`` prints every asyncio task's stack: for a worker that stalls."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)

    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG so that it turns on every record:
    # every aiokafka and Faust debug call then builds a LogRecord. A worker needs no spinner.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


class Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        logs.thin_repeats(logger)  # a broker outage logs ~80 client errors a second


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()} {task.get_coro()!r}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()
