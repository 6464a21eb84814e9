"""Run one convstream worker: topics declared, metrics served, Faust worker until stopped."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys

import faust

from convstream.stream import health, logs, metrics
from convstream.stream.app import create_app
from convstream.stream.errors import UserError
from convstream.stream.kafka import ensure_topics
from convstream.stream.settings import INPUT_TOPICS, Settings

log = logging.getLogger("convstream.worker")

#: A second worker on one host finds the metrics port taken by the first: it takes the next
#: free one of this many above it (deploy/prometheus/prometheus.yml says where to scrape them).
METRICS_PORT_SPAN = 10


def serve_metrics(host: str, port: int, span: int = METRICS_PORT_SPAN) -> int:
    """Serve metrics on ``port``, else on the first free port of the ``span - 1`` above it;
    returns the port (0: metrics off). All taken: :class:`UserError` naming the flag."""
    if port == 0:
        return 0
    for candidate in range(port, min(port + span, 65536)):
        try:
            metrics.start_metrics_server(host, candidate)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise UserError(f"cannot serve metrics on {host}:{candidate}: {exc}") from exc
            continue
        if candidate != port:
            log.warning(
                "metrics port %s:%d is in use (another worker on this host?): serving metrics "
                "on %s:%d instead; --metrics-port N chooses one",
                host, port, host, candidate,
            )  # fmt: skip
        return candidate
    raise UserError(
        f"metrics ports {host}:{port}-{candidate} are all in use: start this worker with "
        "--metrics-port N (CONVSTREAM_METRICS_PORT) for a free port, or 0 for no metrics"
    )


def startup_line(settings: Settings, metrics_port: int) -> str:
    """The one line a worker logs as it starts: where it reads, serves and keeps state.

    >>> print(startup_line(Settings(), 9401))  # doctest: +NORMALIZE_WHITESPACE
    convstream worker starting: broker kafka://127.0.0.1:9092, app id convstream,
    topics impressions,clicks,identity,conversions,feedback,privacy x 4 partitions,
    metrics http://127.0.0.1:9401/metrics, store memory:// (data dir ./convstream-data)
    """
    served = f"http://{settings.metrics_host}:{metrics_port}/metrics" if metrics_port else "off"
    return (
        f"convstream worker starting: broker {settings.broker}, app id {settings.app_id}, "
        f"topics {','.join(settings.topic(t) for t in INPUT_TOPICS)} x {settings.partitions} "
        f"partitions, metrics {served}, store {settings.store} (data dir {settings.data_dir})"
    )


def run_worker(settings: Settings, *, loglevel: str = "warning") -> int:
    # A broker that is not there ends this first step with one line (BrokerUnavailable), not
    # with aiokafka's own error lines first; once running, the worker logs them (thinned).
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        asyncio.run(ensure_topics(settings))
    finally:
        kafka_log.setLevel(level)
    # Its metadata fetch succeeded: the broker is up, well before the first health tick (about
    # 20 s later at startup, rebalance included), which would otherwise read 0 until then.
    metrics.set_broker_up(True)
    metrics_port = serve_metrics(settings.metrics_host, settings.metrics_port)
    # stderr, not the log: it must show at the default level (warning) and before Faust's own
    print(startup_line(settings, metrics_port), file=sys.stderr, flush=True)
    app, rt = create_app(settings)
    health.register(rt)

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
