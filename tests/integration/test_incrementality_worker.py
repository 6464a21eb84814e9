"""The worker's labels carry the incremental fields, and they are the offline engine's.

One generated replay (14 days, so that the estimators see enough held-out conversions to be
ready) goes through a real worker on tansu and through ``convstream offline`` with the
worker's settings. Both score labels in the one lifecycle, with units from the user states and
arm counts summed over the users partitions.

The replay is paced (300 events a second: 3 hours of event time a second) and the learning
delay is a day, so that the worker decides conversions less than the delay out of event-time
order, as it does live (seconds apart) with the 1 h default: read at full speed, a stall of a
few seconds is days of event time, and replicas then learn examples after the decisions that
should have seen them (docs/design.md, "What agreement needs").
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from convstream.core.engine import run_offline
from convstream.core.evaluation import latest_labels
from convstream.core.matching.model import MatchModel
from convstream.core.units import DAY_MS
from convstream.stream.kafka import ensure_topics, produce
from convstream.stream.runner import GroupProbe, WorkerProcess, settings_env, wait_for_labels
from convstream.stream.settings import Settings
from convstream.synth.generate import config_from_args, generate

pytestmark = pytest.mark.integration

RATE = 300.0
#: Keys whose incremental_probability is equal within 1e-6, or null in both, worker against
#: offline, runs on 2026-12-03 (BENCHMARKS.md): 1.000, 1.000 and 0.957 with this test, 0.941
#: and 0.944 scripted. The rest follow a conversion matched to another user (1-2 of 576 keys):
#: one held-out example more or less changes every later fit a little (all within 0.05).
MIN_EQUAL = 0.90
#: Keys scored in one and null in the other: 3 of 576 in both runs.
MAX_NULL_MISMATCH = 0.02


@pytest.fixture(scope="module")
def replay() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return generate(config_from_args("default", seed=11, users=800, days=14, site_events=False))


async def _running(settings: Settings, timeout: float = 120.0) -> None:
    """Wait until the worker has read and committed something: it joined its group."""
    probe = await GroupProbe(settings).start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, _ = await probe.read()
            if done:
                return
            await asyncio.sleep(0.5)
        raise AssertionError("the worker did not start reading")
    finally:
        await probe.stop()


@pytest.fixture(scope="module")
def labels(replay, broker, tmp_path_factory) -> dict[str, dict[str, dict[str, Any]]]:
    """The latest label per key of the worker and of the offline engine."""
    lines, truth = replay
    run = f"inc-{uuid.uuid4().hex[:6]}"
    s = Settings.from_env(
        {},
        broker=broker.url,
        topic_prefix=f"{run}.",
        app_id=f"convstream-{run}",
        partitions=4,
        data_dir=str(tmp_path_factory.mktemp("inc-state")),
        metrics_port=0,
        max_wait_s=5.0,
        learning_delay_ms=DAY_MS,
    )
    asyncio.run(ensure_topics(s))
    log = tmp_path_factory.mktemp("inc-logs") / "worker.log"
    worker = WorkerProcess(settings_env(s), log).start()
    try:
        # A few engagements first: the rest is paced from when the worker reads.
        asyncio.run(produce(s, lines[:20]))
        asyncio.run(_running(s))
        asyncio.run(produce(s, lines[20:], rate=RATE))
        got = wait_for_labels(s, {row["conversion_key"] for row in truth}, timeout=300)
        assert worker.alive(), log.read_text()[-3000:]
    finally:
        worker.stop()
    offline = run_offline(lines, MatchModel, **s.offline_options())
    return {"worker": latest_labels(got)[0], "offline": latest_labels(offline)[0]}


def _p(label: dict[str, Any]) -> float | None:
    return label["incremental_probability"]


def test_worker_labels_carry_the_incremental_fields(labels):
    worker = labels["worker"]
    scored = [x for x in worker.values() if _p(x) is not None]
    assert len(scored) > 50, "the estimators should be ready within 14 days"
    for x in worker.values():
        p, w = _p(x), x["incremental_weight"]
        if not x["credits"]:
            assert (p, w) == (None, 0.0)
        elif p is None:
            assert w is None  # not ready yet (docs/contract.md)
        else:
            assert 0.0 <= p <= 1.0 and w == pytest.approx(x["label_weight"] * p)
    assert any(_p(x) > 0 for x in scored)


def test_worker_and_offline_incremental_fields_agree(labels):
    worker, offline = labels["worker"], labels["offline"]
    assert set(worker) == set(offline)
    keys = sorted(worker)
    nulls = [k for k in keys if (_p(worker[k]) is None) != (_p(offline[k]) is None)]
    both = [k for k in keys if _p(worker[k]) is not None and _p(offline[k]) is not None]
    gaps = [abs(_p(worker[k]) - _p(offline[k])) for k in both]
    equal = len(keys) - len(nulls) - sum(g > 1e-6 for g in gaps)
    print(
        f"incremental_probability equal within 1e-6 or null in both: {equal}/{len(keys)} "
        f"({equal / len(keys):.4f}); scored in one only: {len(nulls)}; scored in both: "
        f"{len(both)}, of them within 1e-6 {sum(g <= 1e-6 for g in gaps)}, within 0.05 "
        f"{sum(g <= 0.05 for g in gaps)}, mean gap {sum(gaps) / max(1, len(gaps)):.4f}"
    )
    assert equal / len(keys) >= MIN_EQUAL
    assert len(nulls) / len(keys) <= MAX_NULL_MISMATCH
