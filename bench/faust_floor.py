"""Stage 2, Faust's floor: a bare Faust agent passing the replay through, configured like ours.

Run as its own process (``python -m bench.faust_floor``, driven by :class:`FaustFloor`) under
``faust.Worker``, never the Faust CLI: the web server is disabled and bound to 127.0.0.1. The
agent takes ``stream.take_events`` batches, orjson decodes/encodes each value and sends it on;
when it has passed ``expected`` events it flushes the producer and writes its timing as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from convstream.stream.settings import INPUT_TOPICS

OUTPUT = "bench-out"


def build_app(env: dict[str, str]):  # noqa: ANN201 - faust.App
    """The Faust app with the settings of ``convstream.stream.app.create_app`` that matter for
    speed."""
    import faust
    import orjson

    from convstream.stream import highwater
    from convstream.stream.settings import Settings

    tuned = Settings()  # the worker's defaults for everything that sets batching and latency
    highwater.install_fetch_wait(tuned.fetch_max_wait_ms)
    prefix = env["BENCH_PREFIX"]
    partitions = int(env["BENCH_PARTITIONS"])
    expected = int(env["BENCH_EXPECTED"])
    batch_size = int(env.get("BENCH_BATCH_SIZE", tuned.batch_size))
    within = float(env.get("BENCH_BATCH_WITHIN_S", tuned.batch_within_s))
    result = Path(env["BENCH_RESULT"])
    app = faust.App(
        env["BENCH_APP_ID"],
        broker=env["BENCH_BROKER"],
        datadir=env["BENCH_DATADIR"],
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        producer_linger_ms=tuned.producer_linger_ms,
        producer_max_batch_size=tuned.producer_max_batch_size,
        stream_buffer_maxsize=4 * batch_size,
        web_enabled=False,
        web_host="127.0.0.1",
        web_port=int(env.get("BENCH_WEB_PORT", "6067")),
    )
    source = app.topic(
        *(prefix + t for t in INPUT_TOPICS), key_type=bytes, value_type=bytes, partitions=partitions
    )
    sink = app.topic(prefix + OUTPUT, key_type=bytes, value_type=bytes, partitions=partitions)
    seen = {"n": 0, "first": None, "cpu": None}

    @app.agent(source, name="passthrough")
    async def passthrough(stream):  # noqa: ANN001
        loads, dumps, send = orjson.loads, orjson.dumps, sink.send
        async for events in stream.take_events(batch_size, within):
            if seen["first"] is None:
                seen["first"], seen["cpu"] = time.time(), time.process_time()
            for event in events:
                message = event.message
                await send(
                    key=message.key, value=dumps(loads(message.value)), partition=message.partition
                )
            seen["n"] += len(events)
            if seen["n"] >= expected and not result.exists():
                await app.producer.flush()
                tmp = result.with_suffix(".tmp")
                tmp.write_text(
                    json.dumps(
                        {
                            "events": seen["n"],
                            "first": seen["first"],
                            "last": time.time(),
                            "cpu_s": time.process_time() - seen["cpu"],
                        }
                    )
                )
                tmp.rename(result)

    return app


def main() -> int:
    import faust

    app = build_app(dict(os.environ))
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    if os.environ.get("BENCH_SPINNER", "off") == "off":
        worker.spinner = None  # as a worker that turns Faust's DEBUG-level spinner off
    worker.execute_from_commandline()
    return 0


@dataclass
class FaustFloor:
    """The stage-2 process; a context manager that always stops it (its whole process group)."""

    broker: str
    prefix: str
    partitions: int
    expected: int
    workdir: Path
    web_port: int
    spinner: str = "off"
    process: subprocess.Popen | None = None

    @property
    def result_path(self) -> Path:
        return self.workdir / "faust-floor.json"

    def start(self) -> FaustFloor:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.result_path.unlink(missing_ok=True)
        repo = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)
        env = {
            **os.environ,
            "PYTHONPATH": path,
            "BENCH_BROKER": self.broker,
            "BENCH_PREFIX": self.prefix,
            "BENCH_APP_ID": f"bench-floor-{os.getpid()}-{int(time.time())}",
            "BENCH_PARTITIONS": str(self.partitions),
            "BENCH_EXPECTED": str(self.expected),
            "BENCH_RESULT": str(self.result_path),
            "BENCH_DATADIR": str(self.workdir / "floor-data"),
            "BENCH_WEB_PORT": str(self.web_port),
            "BENCH_SPINNER": self.spinner,
        }
        log = open(self.workdir / "faust-floor.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.faust_floor"],
            cwd=repo,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_result(self, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.result_path.exists():
                return json.loads(self.result_path.read_text())
            if not self.alive():
                raise RuntimeError(f"the Faust floor process died; see {self.workdir}")
            time.sleep(0.1)
        raise TimeoutError(f"the Faust floor did not pass {self.expected} events in {timeout}s")

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def __enter__(self) -> FaustFloor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
