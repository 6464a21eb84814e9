"""The ``convstream`` command: broker, worker, generate, replay, labels, evaluate, quality, lift,
demo.

Ordinary mistakes (a missing file, a wrong flag, an unreachable broker, a busy port) end with
one line on stderr and exit code 2; ``convstream --debug ...`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import orjson

from convstream.stream.errors import EXIT_USAGE, UserError
from convstream.stream.settings import Settings
from convstream.synth.generate import PROFILES

PROG = "convstream"
#: kafka://HOST:PORT, several joined by ";"
BROKER_URL = re.compile(r"^(kafka://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error, defaults shown in every help text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to options that have a default worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and default not in (None, False, argparse.SUPPRESS)
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    try:
        return version("convstream")
    except PackageNotFoundError:
        return "unknown"


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    try:
        settings = Settings.from_env(
            broker=getattr(args, "broker", None),
            topic_prefix=getattr(args, "topic_prefix", None),
            partitions=getattr(args, "partitions", None),
            **extra,
        )
    except ValueError as exc:  # a CONVSTREAM_* variable that is not a number
        raise UserError(str(exc)) from None
    for url in settings.broker.split(";"):
        if not BROKER_URL.match(url):
            raise UserError(
                f"broker {settings.broker!r} is not kafka://HOST:PORT "
                "(from --broker or CONVSTREAM_BROKER; several are joined by ';')"
            )
    return settings


def _kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker", help=f"kafka://HOST:PORT (env CONVSTREAM_BROKER; default: {Settings.broker})"
    )
    p.add_argument(
        "--topic-prefix", help="prefix of every topic name (env CONVSTREAM_TOPIC_PREFIX)"
    )
    p.add_argument(
        "--partitions",
        type=int,
        help=f"partitions per topic (env CONVSTREAM_PARTITIONS; default: {Settings.partitions})",
    )


def cmd_broker(args: argparse.Namespace) -> int:
    from convstream.stream.broker import run_forever

    return run_forever(args.port)


def cmd_worker(args: argparse.Namespace) -> int:
    from convstream.stream.worker import run_worker

    extra = {"app_id": args.app_id, "metrics_port": args.metrics_port, "data_dir": args.data_dir}
    return run_worker(_settings(args, **extra), loglevel=args.loglevel)


def _generator_config(args: argparse.Namespace) -> Any:
    from convstream.synth.generate import config_from_args

    overrides = {
        k: v
        for k, v in (("seed", args.seed), ("users", args.users), ("days", args.days))
        if v is not None
    }
    if getattr(args, "no_site_events", False):
        overrides["site_events"] = False
    try:
        return config_from_args(args.profile, **overrides)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def cmd_generate(args: argparse.Namespace) -> int:
    from convstream.synth.generate import (
        campaign_truth_path,
        generate_all,
        write_replay,
        write_truth,
    )

    generated = generate_all(_generator_config(args))
    write_replay(args.output, generated.lines)
    write_truth(args.truth, generated.truth)
    campaigns = campaign_truth_path(args.truth)
    write_truth(campaigns, generated.campaigns)
    print(
        f"wrote {len(generated.lines)} events to {args.output}, {len(generated.truth)} "
        f"conversions to {args.truth} and {len(generated.campaigns)} campaigns' true lift "
        f"to {campaigns}"
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from convstream.stream.inputs import read_replay
    from convstream.stream.kafka import ensure_topics, produce

    settings = _settings(args)
    lines = read_replay(args.file)

    async def run() -> int:
        await ensure_topics(settings)
        return await produce(
            settings, lines, rate=args.rate, progress=not args.quiet, total=len(lines)
        )

    sent = asyncio.run(run())
    print(f"replayed {sent} events to {settings.broker}")
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from convstream.stream.labels_cli import run_labels

    return run_labels(args, _settings(args, app_id=args.app_id))


def cmd_offline(args: argparse.Namespace) -> int:
    """The labels a worker with these settings gives for a replay, without a broker."""
    from convstream.core.engine import run_offline
    from convstream.core.matching.model import MatchModel
    from convstream.stream.inputs import read_replay

    settings = _settings(args)
    started = time.monotonic()
    replay = read_replay(args.replay)
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

    return run_quality(args, _settings(args))


def cmd_lift(args: argparse.Namespace) -> int:
    from convstream.stream.lift_cli import run_lift

    return run_lift(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from convstream.stream.demo import run_demo

    _generator_config(args)  # an unknown profile is reported before anything starts
    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Streaming conversion attribution: a worker, its broker, and the tools "
        "around it. An ordinary mistake ends with one line on stderr and exit code 2 "
        "(--debug adds the traceback); exit 1 means done, but the figures should not be trusted.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help)

    p = command("broker", "run the embedded tansu broker on 127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    p.set_defaults(func=cmd_broker)

    p = command("worker", "run a Faust worker with every agent")
    _kafka_args(p)
    p.add_argument(
        "--app-id",
        help=f"consumer group / application id (env CONVSTREAM_APP_ID; default: {Settings.app_id})",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help=f"Prometheus port, 0 = off (env CONVSTREAM_METRICS_PORT; default: "
        f"{Settings.metrics_port}; when it is taken the next free one of the 9 above it)",
    )
    p.add_argument(
        "--data-dir",
        help=f"worker state directory (env CONVSTREAM_DATA_DIR; default: {Settings.data_dir})",
    )
    p.add_argument("--loglevel", default="warning", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_worker)

    p = command("generate", "write synthetic traffic and its ground truth")
    p.add_argument("-o", "--output", default="replay.jsonl", help="replay file")
    p.add_argument(
        "--truth",
        default="truth.jsonl",
        help="truth file; each campaign's true lift goes next to it (truth.campaigns.jsonl)",
    )
    _generator_args(p, seed=None)
    p.set_defaults(func=cmd_generate)

    p = command("replay", "produce a replay file to the broker in file order")
    _kafka_args(p)
    p.add_argument("file", help="a replay file from `convstream generate -o`")
    p.add_argument("--rate", type=float, default=0.0, help="events per second, 0 = max")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

    p = command("labels", "read the labels topic as JSON Lines")
    _kafka_args(p)
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--follow", action="store_true", help="keep reading new labels (a tail)")
    mode.add_argument(
        "--wait",
        action="store_true",
        help="read until every conversion on the conversions topic has a label",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=180.0,
        help="with --wait: give up (exit 1) after this many seconds without progress",
    )
    p.add_argument(
        "--app-id",
        help=f"the worker's application id, to follow its progress (default: {Settings.app_id})",
    )
    p.add_argument("--topic", default="labels", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_labels)

    p = command("offline", "the labels a worker gives for a replay file, without a broker")
    p.add_argument("replay", help="a replay file (convstream generate -o)")
    p.add_argument("-o", "--output", help="labels as JSON Lines, as `convstream labels` writes")
    p.add_argument(
        "--partitions",
        type=int,
        help="the worker's partitions per topic (env CONVSTREAM_PARTITIONS)",
    )
    p.set_defaults(func=cmd_offline)

    p = command("evaluate", "score labels against a truth file")
    p.add_argument("--labels", required=True, help="labels file from `convstream labels -o`")
    p.add_argument("--truth", required=True, help="truth file from `convstream generate`")
    p.add_argument("--replay", help="also run the model and rule baselines offline on this replay")
    p.add_argument("--partitions", type=int, default=4, help="partitions of the offline run")
    p.add_argument(
        "--min-coverage",
        type=float,
        default=0.99,
        help="warn and exit 1 when fewer truth conversions than this share have a label",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--report", metavar="PATH", help="also write an HTML report with charts")
    p.add_argument("--explain", action="store_true", help="say what each figure means")
    p.set_defaults(func=cmd_evaluate)

    p = command("quality", "event quality per advertiser and event name")
    _kafka_args(p)
    p.add_argument("--window-days", type=float, default=7.0, help="event-time window (days)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_quality)

    p = command("lift", "each campaign's lift from its holdout (ghost impressions), over a replay")
    p.add_argument("--replay", required=True, help="a replay file (its impressions and ghosts)")
    p.add_argument(
        "--labels",
        help="labels whose users are the converters (default: the offline engine's, on the replay)",
    )
    p.add_argument(
        "--truth", help="truth file: adds true lift and coverage (campaign truth beside it)"
    )
    p.add_argument("--campaigns", help="campaign truth file (default: next to --truth)")
    p.add_argument(
        "--oracle",
        action="store_true",
        help="take the converters from --truth (perfect matching) instead of labels",
    )
    p.add_argument("--partitions", type=int, default=4, help="partitions of the offline run")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_lift)

    p = command("demo", "broker + worker + generate + replay + evaluate, in demo-out/")
    _generator_args(p, seed=7)
    p.add_argument("--workdir", default="demo-out", help="directory for every file, emptied first")
    p.add_argument("--partitions", type=int, default=4, help="partitions per topic")
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=180.0,
        help="stop (exit 1) after this many seconds without a new label or consumed input",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def _generator_args(p: argparse.ArgumentParser, *, seed: int | None) -> None:
    p.add_argument("--profile", default="default", choices=list(PROFILES), help="traffic profile")
    seed_help = "random seed" if seed is not None else "random seed (default: the profile's, 0)"
    p.add_argument("--seed", type=int, default=seed, help=seed_help)
    p.add_argument("--users", type=int, help="platform users (default: the profile's, 3000)")
    p.add_argument("--days", type=int, help="days of traffic (default: the profile's, 14)")
    p.add_argument(
        "--no-site-events",
        action="store_true",
        help="leave out the advertisers' site events (PageView, ViewContent, Login) and fbp: "
        "the traffic generated before they existed, byte for byte",
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    if args.command != "worker" and not args.debug:
        # The tools' Kafka clients log every failed connection attempt at ERROR; a failure that
        # matters ends the command with one line of ours (BrokerUnavailable) instead.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    from convstream.stream.kafka import BrokerUnavailable

    try:
        return args.func(args)
    except (UserError, BrokerUnavailable) as exc:
        return _one_line(args, str(exc))
    except OSError as exc:
        if exc.filename is None:  # not a path the person gave: a bug, keep the traceback
            raise
        return _one_line(args, f"{exc.filename}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return 130


def _one_line(args: argparse.Namespace, message: str) -> int:
    if args.debug:
        traceback.print_exc()
    print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
