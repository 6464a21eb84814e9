"""``python -m bench.hostile``: what hostile payloads cost a worker, and the loop lag they cause.

Two figures (issue 23, item 4):

1. In process, no broker: the CPU time one hostile value costs on its way to dead-letter
   (``parse_*``, then ``Runtime.dead_letter`` with a send that only encodes): 1 MB values full
   of emails and phone numbers or of one long word, a 10,000-deep nesting, and a small bad
   record for scale; beside it, what redacting the whole value then cutting it (the path before
   issue 23) costs. Median over ``--repeat`` runs.
2. Against a real ``convstream worker`` on the embedded broker: ten 1 MB values, ten
   10,000-deep ones, then an unrelated conversion; how long that conversion took from its send to
   its label, and the worker's main-loop lag histogram over the burst (scraped from its metrics
   port before and after: how many 0.1 s probes woke late, by how much at worst).

>>> small_bytes = len(hostile_values()["small"]); small_bytes < 400
True
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from bench.pipeline import LOOP_LAG, bench_settings, scrape_histograms
from convstream.core.identity import redact_pii
from convstream.core.records import Invalid, parse_conversion
from convstream.stream.app import Runtime
from convstream.stream.broker import EmbeddedBroker
from convstream.stream.kafka import ensure_topics, produce, read_topic
from convstream.stream.runner import WorkerProcess, settings_env
from convstream.stream.settings import Settings

T0 = 1_767_571_200_000


def hostile_values() -> dict[str, bytes]:
    words = " ".join(f"w{i} ann{i}@example.com +1 555 010 {i:04d}" for i in range(30_000))
    big = orjson.dumps({"event_id": "e1", "source": "capi", "note": words})[:1_000_000]
    deep = b'{"event_id":"e2","user_data":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    small = orjson.dumps({"event_id": "e3", "source": "capi", "ts": 5, "em": "ann@example.com"})
    word = b'{"event_id":"e4","note":"' + b"x" * 999_960 + b'"}'
    return {
        "1 MB of emails and phones": big,
        "1 MB of one word": word,
        "10,000 deep": deep,
        "small": small,
    }


def cost_ms(value: bytes, repeat: int) -> tuple[float, str]:
    """Median CPU milliseconds of one value through the parser and the dead-letter path."""
    rt = Runtime(settings=Settings(), app=None)  # type: ignore[arg-type]

    async def send(name: str, key: Any, record: Any, partition: int | None = None) -> None:
        orjson.dumps(record)

    rt.send = send  # type: ignore[method-assign]
    event = SimpleNamespace(
        message=SimpleNamespace(topic="conversions", partition=0, offset=1, value=value)
    )
    times, reason = [], ""
    for _ in range(repeat):
        started = time.process_time()
        try:
            parse_conversion(value)
        except Invalid as exc:
            reason = exc.reason
            asyncio.run(rt.dead_letter(event, exc.reason, str(exc)))
        times.append(1000 * (time.process_time() - started))
    return statistics.median(times), reason


def whole_redaction_ms(value: bytes, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.process_time()
        redact_pii(value.decode("utf-8", "replace"))[:65536]
        times.append(1000 * (time.process_time() - started))
    return statistics.median(times)


async def _label_of(settings: Settings, key: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async for record in read_topic(settings, "labels"):
            if record["value"]["conversion_key"] == key:
                return record["value"]
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no label for {key}")


def conversion(event_id: str, ts: int) -> dict[str, Any]:
    value = {"event_id": event_id, "event_name": "Purchase", "source": "capi", "ts": ts,
             "advertiser_id": "adv-1", "user_data": {}}  # fmt: skip
    return {"topic": "conversions", "value": value}


def against_worker(workdir: Path) -> dict[str, Any]:
    with EmbeddedBroker(log_path=workdir / "tansu-hostile.log") as broker:
        settings = bench_settings(broker.url, workdir, "hostile", partitions=4)
        asyncio.run(ensure_topics(settings))
        worker = WorkerProcess(settings_env(settings), workdir / "hostile-worker.log").start()
        try:
            asyncio.run(produce(settings, [conversion("canary", T0)]))
            asyncio.run(_label_of(settings, "adv-1:Purchase:canary", 120))
            time.sleep(2)  # a few loop probes of the idle worker
            before = scrape_histograms(settings.metrics_port, LOOP_LAG, "loop").get("main", [])
            values = hostile_values()
            burst = [{"topic": "conversions", "value": values["1 MB of emails and phones"]}] * 5
            burst += [{"topic": "conversions", "value": values["1 MB of one word"]}] * 5
            burst += [{"topic": "conversions", "value": values["10,000 deep"]}] * 10
            # Strings are produced as they are: the hostile bytes, decoded only to pass them on.
            burst = [{**line, "value": line["value"].decode()} for line in burst]
            started = time.time()
            asyncio.run(produce(settings, [*burst, conversion("after", T0 + 60_000)]))
            label = asyncio.run(_label_of(settings, "adv-1:Purchase:after", 120))
            time.sleep(1)
            after = scrape_histograms(settings.metrics_port, LOOP_LAG, "loop").get("main", [])
        finally:
            worker.stop()
    delta = _delta(before, after)
    late = [(le, n) for le, n in delta if le != "sum"]
    worst = next((le for le, n in late if n == late[-1][1]), None)
    return {
        "label_after_s": label["emitted_at"] / 1000 - started,
        "probes": late[-1][1] if late else 0,
        "late_over_100ms": (late[-1][1] - dict(late).get(0.1, 0)) if late else 0,
        "worst_bucket_s": worst,
    }


def _delta(before: list[tuple[Any, float]], after: list[tuple[Any, float]]) -> list[Any]:
    start = dict(before)
    return [(le, n - start.get(le, 0.0)) for le, n in after]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--no-worker", action="store_true", help="the in-process figure only")
    args = parser.parse_args()
    print("| value | bytes | reason | CPU ms to dead-letter | redact whole, then cut |")
    print("|---|---:|---|---:|---:|")
    for name, value in hostile_values().items():
        ms, reason = cost_ms(value, args.repeat)
        old = whole_redaction_ms(value, max(1, args.repeat // 5))
        print(f"| {name} | {len(value):,} | {reason} | {ms:.2f} | {old:.1f} |", flush=True)
    if args.no_worker:
        return
    result = against_worker(args.workdir)
    print()
    print("| ten 1 MB + ten 10,000-deep, then a conversion | |")
    print("|---|---:|")
    print(f"| conversion labelled after its send | {result['label_after_s']:.2f} s |")
    print(f"| main-loop probes over the burst | {result['probes']:.0f} |")
    print(f"| of them woken more than 100 ms late | {result['late_over_100ms']:.0f} |")
    print(f"| worst loop-lag bucket reached (le) | {result['worst_bucket_s']} s |")


if __name__ == "__main__":
    main()
