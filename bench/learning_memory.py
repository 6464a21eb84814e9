"""Memory that pooled learning holds: learning examples waiting out the learning delay.

With pooled learning every replica on a worker queues every example for ``learning_delay_ms``
(an hour of live traffic). This runs the offline engine over a generated replay, keeps every
example it shares (as the worker holds them: JSON bytes), then queues them the way the worker
does (one :class:`Entry` per example, pushed into each replica's queue) and measures the bytes
with ``tracemalloc``; and again with the bytes as ``orjson.dumps`` returns them, which keep
its whole output buffer. Multiply by the examples per hour of your traffic for a worker's
footprint.

    python -m bench.learning_memory --replicas 4 --profile default --seed 1
"""

from __future__ import annotations

import argparse
import tracemalloc
from functools import partial
from typing import Any

import orjson

from convstream.core.engine import OfflineEngine
from convstream.core.learning_queue import Entry, LearningQueue
from convstream.core.matching.model import MatchModel
from convstream.synth.generate import config_from_args, generate


def shared_examples(profile: str, seed: int) -> tuple[list[tuple[int, str, dict]], int]:
    """Every ``(ts, key, example)`` the engine shares on a replay, and the replay's event count."""
    lines, _ = generate(config_from_args(profile, seed=seed))
    engine = OfflineEngine(MatchModel)
    made: list[tuple[int, str, dict]] = []
    share = engine.lifecycle._share

    def recording(part: int, ts: int, key: str, example: dict[str, Any] | None) -> None:
        if example is not None:
            made.append((ts, key, example))
        share(part, ts, key, example)

    engine.lifecycle._share = recording  # type: ignore[method-assign]
    for line in lines:
        engine.feed(line)
    engine.finish()
    return made, len(lines)


def held_bytes(made: list[tuple[int, str, dict]], replicas: int, *, trimmed: bool) -> float:
    """Bytes per example held by ``replicas`` queues, JSON included: as the worker holds them
    (``Entry.as_json``), or with the bytes just as ``orjson.dumps`` returns them."""
    tracemalloc.start()
    queues = [LearningQueue(3_600_000, partial(print, r)) for r in range(replicas)]
    for ts, key, example in made:
        if trimmed:
            entry = Entry.as_json(ts, key, example)
        else:
            entry = Entry.make(ts, key, orjson.dumps(example))
        for queue in queues:
            queue.push(entry)
    total, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return total / len(made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=4)
    args = parser.parse_args()
    made, events = shared_examples(args.profile, args.seed)
    size = sum(len(orjson.dumps(example)) for _, _, example in made) / len(made)
    print(
        f"{len(made):,} examples from {events:,} input events ({len(made) / events:.4f} per event)"
    )
    print(f"JSON: {size:.0f} B per example on average")
    for trimmed in (True, False):
        held = held_bytes(made, args.replicas, trimmed=trimmed)
        how = "right-sized copies (the worker)" if trimmed else "bytes as orjson.dumps returns them"
        print(f"held by {args.replicas} replica queues, {how}: {held:.0f} B per example")


if __name__ == "__main__":
    main()
