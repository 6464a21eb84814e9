"""The ``convstream`` command: broker, worker, generate, replay, labels, evaluate, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from convstream.stream.settings import Settings


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(
        broker=getattr(args, "broker", None),
        topic_prefix=getattr(args, "topic_prefix", None),
        partitions=getattr(args, "partitions", None),
        **extra,
    )


def _kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="kafka://HOST:PORT (env CONVSTREAM_BROKER)")
    p.add_argument(
        "--topic-prefix", help="prefix of every topic name (env CONVSTREAM_TOPIC_PREFIX)"
    )
    p.add_argument(
        "--partitions", type=int, help="partitions per topic (env CONVSTREAM_PARTITIONS)"
    )


def cmd_broker(args: argparse.Namespace) -> int:
    from convstream.stream.broker import run_forever

    return run_forever(args.port)


def cmd_worker(args: argparse.Namespace) -> int:
    from convstream.stream.worker import run_worker

    extra = {"app_id": args.app_id, "metrics_port": args.metrics_port, "data_dir": args.data_dir}
    return run_worker(_settings(args, **extra), loglevel=args.loglevel)


def cmd_generate(args: argparse.Namespace) -> int:
    from convstream.synth.generate import config_from_args, generate, write_replay, write_truth

    overrides = {
        k: v
        for k, v in (("seed", args.seed), ("users", args.users), ("days", args.days))
        if v is not None
    }
    lines, truth = generate(config_from_args(args.profile, **overrides))
    write_replay(args.output, lines)
    write_truth(args.truth, truth)
    print(
        f"wrote {len(lines)} events to {args.output} and {len(truth)} conversions to {args.truth}"
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from convstream.stream.kafka import ensure_topics, produce

    settings = _settings(args)
    lines = [orjson.loads(line) for line in Path(args.file).read_bytes().splitlines() if line]

    async def run() -> int:
        await ensure_topics(settings)
        return await produce(
            settings, lines, rate=args.rate, progress=not args.quiet, total=len(lines)
        )

    sent = asyncio.run(run())
    print(f"replayed {sent} events to {settings.broker}")
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from convstream.stream.kafka import read_topic

    settings = _settings(args)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115

    async def run() -> None:
        async for record in read_topic(settings, args.topic, follow=args.follow):
            out.write(orjson.dumps(record["value"]) + b"\n")
            if args.follow:
                out.flush()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        out.flush()
        if args.output:
            out.close()
    return 0


def cmd_offline(args: argparse.Namespace) -> int:
    """The labels a worker with these settings gives for a replay, without a broker."""
    from convstream.core.engine import run_offline
    from convstream.core.evaluation import load_jsonl
    from convstream.core.matching.model import MatchModel

    settings = _settings(args)
    started = time.monotonic()
    replay = load_jsonl(args.replay)
    labels = run_offline(replay, MatchModel, **settings.offline_options())
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        for label in labels:
            out.write(orjson.dumps(label) + b"\n")
    finally:
        out.flush()
        if args.output:
            out.close()
    keys = len({label["conversion_key"] for label in labels})
    print(
        f"{len(replay):,} events in, {len(labels):,} labels for {keys:,} conversions out "
        f"in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from convstream.stream.evaluate_cli import run_evaluate

    return run_evaluate(args)


def cmd_quality(args: argparse.Namespace) -> int:
    from convstream.stream.quality import run_quality

    return run_quality(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from convstream.stream.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run the embedded tansu broker on 127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("worker", help="run a Faust worker with every agent")
    _kafka_args(p)
    p.add_argument("--app-id", help="consumer group / application id (env CONVSTREAM_APP_ID)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 = off")
    p.add_argument("--data-dir", help="worker state directory (env CONVSTREAM_DATA_DIR)")
    p.add_argument("--loglevel", default="warning")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("generate", help="write synthetic traffic and its ground truth")
    p.add_argument("-o", "--output", default="replay.jsonl")
    p.add_argument("--truth", default="truth.jsonl")
    p.add_argument("--profile", default="default")
    p.add_argument("--seed", type=int)
    p.add_argument("--users", type=int)
    p.add_argument("--days", type=int)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("replay", help="produce a replay file to the broker in file order")
    _kafka_args(p)
    p.add_argument("file")
    p.add_argument("--rate", type=float, default=0.0, help="events per second, 0 = max")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("labels", help="read the labels topic as JSON Lines")
    _kafka_args(p)
    p.add_argument("-o", "--output")
    p.add_argument("--follow", action="store_true")
    p.add_argument("--topic", default="labels", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser(
        "offline", help="the labels a worker gives for a replay file, computed without a broker"
    )
    p.add_argument("replay", help="a replay file (convstream generate -o)")
    p.add_argument("-o", "--output", help="labels as JSON Lines, as `convstream labels` writes")
    p.add_argument(
        "--partitions",
        type=int,
        help="the worker's partitions per topic (env CONVSTREAM_PARTITIONS)",
    )
    p.set_defaults(func=cmd_offline)

    p = sub.add_parser("evaluate", help="score labels against a truth file")
    p.add_argument("--labels", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--replay", help="also run the rule baselines offline on this replay")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--report", metavar="PATH", help="also write an HTML report with charts")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("quality", help="event quality per advertiser and event name")
    _kafka_args(p)
    p.add_argument("--window-days", type=float, default=7.0, help="event-time window (days)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("demo", help="broker + worker + generate + replay + evaluate")
    p.add_argument("--profile", default="default")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--users", type=int)
    p.add_argument("--days", type=int)
    p.add_argument("--workdir", default="demo-out")
    p.add_argument("--partitions", type=int, default=4)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    from convstream.stream.kafka import BrokerUnavailable

    try:
        return args.func(args)
    except BrokerUnavailable as exc:
        print(f"convstream: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
