"""Run one convstream worker: topics declared, metrics served, Faust worker until stopped."""

from __future__ import annotations

import asyncio

import faust

from stream import metrics
from stream.app import create_app
from stream.kafka import ensure_topics
from stream.settings import Settings


def run_worker(settings: Settings, *, loglevel: str = "warning") -> int:
    asyncio.run(ensure_topics(settings))
    app, _ = create_app(settings)
    metrics.start_metrics_server(settings.metrics_host, settings.metrics_port)

    @app.on_rebalance_complete.connect
    async def _rebalanced(sender: object, **kwargs: object) -> None:
        metrics.count_rebalance()

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
