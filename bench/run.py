"""``python -m bench.run [--events N] [--smoke] [--scaling]``: the whole benchmark, one command.

Stages, each on a fresh embedded tansu broker on 127.0.0.1 with the same generated replay
(the generator's ``--traffic`` profile, default ``default``; 14 days, users scaled to
``--events``, ticks appended; see :mod:`bench.replay`):

1. ``raw``: raw aiokafka consume -> orjson -> produce passthrough of the preloaded replay;
2. ``faust``: a bare Faust agent doing the same with ``take_events`` batches (own process);
3. ``pipeline``: the convstream worker draining the preloaded replay, first input to last
   label, with peak RSS and state size; ``latency``: a paced run at half that rate.

``--busy N`` spins N busy-loop processes on the cores through stage 3 and the latency run
(issue 20's contention figure). ``--scaling`` adds stage 3 at 10k, 100k and 1M input events,
and the state-growth stage (:mod:`bench.growth`: RSS while the identifier index grows past a
million entries, per store; ``--growth EVENTS`` runs it alone or at another size).
``--smoke`` runs everything tiny and writes nothing; otherwise the run goes to
``docs/experiments/runs/<date>.md``. Every broker and process it starts is stopped, even on
error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procfs
from bench.faust_floor import FaustFloor
from bench.growth import ENTRIES_PER_EVENT, run_growth
from bench.passthrough import OUTPUT, PassResult, raw_passthrough
from bench.pipeline import Profiler, run_latency, run_throughput
from bench.replay import produce_timed, sized_replay, users_for
from bench.report import FloorResult, Results, markdown, write_run
from bench.topics import create_topics
from convstream.stream.broker import EmbeddedBroker, free_port
from convstream.stream.kafka import ensure_topics
from convstream.stream.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_EVENTS = 250_000
SMOKE_EVENTS = 3_000
SCALING_SIZES = (10_000, 100_000, 1_000_000)
GROWTH_EVENTS = 320_000  # x4 identifiers each: 1.28M index entries
GROWTH_MARKS = (100_000, 250_000, 500_000, 1_000_000, 1_500_000, 2_000_000)
STAGES = ("raw", "faust", "pipeline", "latency")


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _broker(workdir: Path, name: str) -> EmbeddedBroker:
    return EmbeddedBroker(log_path=workdir / f"tansu-{name}.log")


def _input_settings(broker: EmbeddedBroker, partitions: int) -> Settings:
    return Settings.from_env({}, broker=broker.url, topic_prefix="bench.", partitions=partitions)


async def _preload(settings: Settings, lines: list[dict[str, Any]]) -> None:
    await ensure_topics(settings)
    await create_topics(settings, [settings.topic(OUTPUT)])
    await produce_timed(settings, lines)


def stage_raw(
    lines: list[dict[str, Any]], workdir: Path, partitions: int, repeat: int
) -> list[PassResult]:
    """Each repetition on a fresh broker: tansu's memory log slows reads as it grows."""
    results = []
    for i in range(repeat):
        with _broker(workdir, f"raw{i}") as broker:
            settings = _input_settings(broker, partitions)

            async def run(settings: Settings = settings) -> PassResult:
                await _preload(settings, lines)
                return await raw_passthrough(settings, len(lines))

            results.append(asyncio.run(run()))
    return results


def stage_faust(
    lines: list[dict[str, Any]],
    workdir: Path,
    partitions: int,
    profile: Path | None,
    spinner: str = "off",
) -> FloorResult:
    with _broker(workdir, "faust") as broker:
        settings = _input_settings(broker, partitions)
        asyncio.run(_preload(settings, lines))
        with FaustFloor(
            broker.url,
            settings.topic_prefix,
            partitions,
            len(lines),
            workdir,
            free_port(),
            spinner=spinner,
        ) as floor:
            profiler = Profiler(floor.process.pid, profile).start() if profile else None
            try:
                result = floor.wait_result(timeout=3600)
                rss = procfs.peak_rss_mib(floor.process.pid)
            finally:
                if profiler is not None:
                    profiler.stop()
    return FloorResult(
        events=result["events"],
        seconds=result["last"] - result["first"],
        cpu_seconds=result.get("cpu_s"),
        peak_rss_mib=rss,
        spinner=spinner,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, help=f"main replay size ({DEFAULT_EVENTS})")
    parser.add_argument("--smoke", action="store_true", help="tiny run of every stage")
    parser.add_argument("--scaling", action="store_true", help="stage 3 at 10k, 100k and 1M")
    parser.add_argument("--scaling-sizes", help="comma-separated sizes for --scaling")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"subset of {','.join(STAGES)} (all)"
    )
    parser.add_argument("--latency-events", type=int, help="replay size of the paced run")
    parser.add_argument("--latency-rate", type=float, help="paced rate (half of stage 3)")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="CONVSTREAM_NAME=VALUE",
        help="a setting for the convstream workers (repeatable), e.g. to compare tunings",
    )
    parser.add_argument(
        "--floor-spinner",
        choices=("on", "off"),
        default="off",
        help="Faust's terminal spinner in stage 2 (off, as convstream/stream/worker.py runs it)",
    )
    parser.add_argument(
        "--growth",
        type=int,
        metavar="EVENTS",
        help=f"state-growth stage: identity events, 4 identifiers each ({GROWTH_EVENTS:,} "
        "with --scaling, 0 to skip)",
    )
    parser.add_argument(
        "--growth-stores",
        default="memory://,rocksdb://",
        help="stores the growth stage compares",
    )
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        help="busy-loop processes spinning on the cores through stage 3 and the latency run",
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--traffic",
        default="default",
        help="the generator's profile of every replay (default; heavy-sharing is where the "
        "worker is slowest)",
    )
    parser.add_argument("--raw-repeat", type=int, help="raw passthrough repetitions (3)")
    parser.add_argument("--profile", type=Path, help="py-spy the Faust and convstream workers")
    parser.add_argument("--workdir", type=Path, help="logs and state (default: a temp dir)")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "docs" / "experiments" / "runs",
        help="directory for this run's dated section",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write the run's file")
    parser.add_argument("--note", action="append", default=[], help="a line for the section")
    return parser


def run_bench(argv: list[str]) -> Results:
    """Run what ``argv`` asks for; returns the results (printed, and written unless smoke)."""
    args = build_parser().parse_args(argv)
    stages = set(args.stages.split(",")) - {""}
    if stages - set(STAGES):
        raise SystemExit(f"unknown stages: {', '.join(sorted(stages - set(STAGES)))}")
    events = args.events or (SMOKE_EVENTS if args.smoke else DEFAULT_EVENTS)
    write = not (args.no_write or args.smoke)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="convstream-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    _say(f"workdir {workdir}")
    results = Results(
        command=" ".join(["python -m bench.run", shlex.join(argv)]).strip(),
        facts=procfs.machine_facts(),
        events=0,
        users=users_for(events),
        load_before=os.getloadavg(),
    )
    p = args.partitions
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    results.worker_env = worker_env
    results.notes = list(args.note)
    lateness = Settings.from_env(worker_env).allowed_lateness_ms  # where the ticks must land
    started = time.monotonic()
    lines: list[dict[str, Any]] = []
    if stages:
        lines, _ = sized_replay(
            events, seed=args.seed, partitions=p, lateness_ms=lateness, traffic=args.traffic
        )
        results.events = len(lines)
        _say(f"replay: {len(lines):,} input events, {results.users:,} users")

    if "raw" in stages:
        repeat = args.raw_repeat or (1 if args.smoke else 3)
        results.raw = stage_raw(lines, workdir, p, repeat)
        _say(f"1. raw passthrough: {', '.join(f'{r.rate:,.0f}' for r in results.raw)} ev/s")

    if "faust" in stages:
        results.faust = stage_faust(
            lines, workdir, p, args.profile and args.profile / "floor.txt", args.floor_spinner
        )
        _say(f"2. bare Faust passthrough: {results.faust.rate:,.0f} ev/s")

    if args.busy:
        results.notes.append(
            f"{args.busy} busy-loop processes (`while True: pass`) spun on the cores through "
            "stage 3 and the latency run."
        )
    if "pipeline" in stages:
        with _broker(workdir, "pipeline") as broker, procfs.busy_loops(args.busy):
            results.pipeline = run_throughput(
                broker.url,
                lines,
                workdir,
                partitions=p,
                profile=args.profile and args.profile / "worker.txt",
                worker_env=worker_env,
            )
        _say(f"3. convstream worker: {results.pipeline.rate:,.0f} ev/s")

    if "latency" in stages:
        rate = args.latency_rate or (results.pipeline.rate / 2 if results.pipeline else None)
        if rate is None:
            raise SystemExit("--stages latency without pipeline needs --latency-rate")
        paced = lines
        if args.latency_events:
            paced, _ = sized_replay(
                args.latency_events,
                seed=args.seed,
                partitions=p,
                lateness_ms=lateness,
                traffic=args.traffic,
            )
        _say(f"latency: {len(paced):,} events at {rate:,.0f} ev/s (~{len(paced) / rate:,.0f} s)")
        with _broker(workdir, "latency") as broker, procfs.busy_loops(args.busy):
            results.latency = run_latency(
                broker.url, paced, workdir, rate, partitions=p, worker_env=worker_env
            )
        _say(f"latency: {results.latency.summary}")

    if args.scaling:
        sizes = SCALING_SIZES
        if args.scaling_sizes:
            sizes = tuple(int(x) for x in args.scaling_sizes.split(","))
        elif args.smoke:
            sizes = (1_000, SMOKE_EVENTS)
        for size in sizes:
            scaled, _ = sized_replay(
                size, seed=args.seed, partitions=p, lateness_ms=lateness, traffic=args.traffic
            )
            _say(f"scaling: {len(scaled):,} events")
            with _broker(workdir, f"scale-{size}") as broker:
                t = run_throughput(
                    broker.url,
                    scaled,
                    workdir,
                    name=f"scale{size}",
                    partitions=p,
                    worker_env=worker_env,
                )
            results.scaling.append((len(scaled), users_for(size), t))
            _say(f"scaling: {len(scaled):,} events -> {t.rate:,.0f} ev/s")
        if not results.events and results.scaling:
            results.events, results.users = results.scaling[-1][0], results.scaling[-1][1]

    growth_events = args.growth
    if growth_events is None:
        growth_events = 1_000 if args.smoke else GROWTH_EVENTS if args.scaling else 0
    if growth_events:
        results.growth_marks = tuple(
            m for m in GROWTH_MARKS if m < growth_events * ENTRIES_PER_EVENT
        ) or (growth_events,)
        for store in args.growth_stores.split(","):
            _say(f"growth: {growth_events:,} identity events, store {store}")
            with _broker(workdir, f"growth-{store.split(':')[0]}") as broker:
                g = run_growth(
                    broker.url,
                    growth_events,
                    workdir,
                    store=store,
                    partitions=p,
                    worker_env=worker_env,
                )
            results.growth.append(g)
            _say(f"growth: {store} final {g.final}")

    results.seconds = time.monotonic() - started
    results.load_after = os.getloadavg()
    text = markdown(results)
    print(text)
    if write:
        _say(f"wrote {write_run(args.output, text)}")
    return results


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # A SIGTERM must unwind through the finally blocks that stop brokers and workers.
    signal.signal(signal.SIGTERM, _interrupt)
    run_bench(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
