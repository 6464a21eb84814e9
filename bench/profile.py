"""Summaries of a py-spy ``--format raw`` profile (folded stacks: ``f1;f2;...;fn count``).

``python -m bench.profile FILE`` prints the functions with the most self samples and the most
inclusive samples, and the share of samples per top-level area (our agents, convstream/core/, Faust,
aiokafka, the event loop).

>>> rows = parse(["a (x.py:1);b (y.py:2) 3", "a (x.py:1) 1"])
>>> self_time(rows)[0], inclusive(rows)[0]
(('b (y.py)', 3), ('a (x.py)', 4))
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_LINE = re.compile(r":\d+\)$")

AREAS = (
    ("convstream agents", ("convstream/stream/agents/",)),
    ("convstream models", ("convstream/core/",)),
    ("convstream stream (other)", ("convstream/stream/",)),
    ("faust tables/changelog", ("faust/tables/",)),
    ("faust streams/agents", ("faust/streams", "faust/agents/", "faust/channels", "faust/events")),
    ("faust transport/producer", ("faust/transport/",)),
    ("faust serializers", ("faust/serializers/", "faust/models/")),
    ("aiokafka", ("aiokafka/",)),
    ("mode", ("mode/",)),
    ("asyncio", ("asyncio/",)),
)


def _frame(name: str) -> str:
    return _LINE.sub(")", name.strip())


def parse(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    rows = []
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            rows.append(([_frame(f) for f in stack.split(";")], int(count)))
    return rows


def self_time(rows: list[tuple[list[str], int]], n: int = 25) -> list[tuple[str, int]]:
    c: Counter[str] = Counter()
    for frames, count in rows:
        c[frames[-1]] += count
    return c.most_common(n)


def inclusive(rows: list[tuple[list[str], int]], n: int = 40) -> list[tuple[str, int]]:
    c: Counter[str] = Counter()
    for frames, count in rows:
        for f in set(frames):
            c[f] += count
    return c.most_common(n)


def areas(rows: list[tuple[list[str], int]]) -> list[tuple[str, int]]:
    """Self samples per area (the innermost frame's file decides)."""
    c: Counter[str] = Counter()
    for frames, count in rows:
        leaf = frames[-1]
        for area, needles in AREAS:
            if any(n in leaf for n in needles):
                c[area] += count
                break
        else:
            c["other"] += count
    return c.most_common()


def report(path: Path) -> str:
    rows = parse(path.read_text().splitlines())
    total = sum(c for _, c in rows) or 1
    out = [f"{total} samples"]
    for title, items in (
        ("self", self_time(rows)),
        ("inclusive", inclusive(rows)),
        ("area (self)", areas(rows)),
    ):
        out.append(f"\n-- {title}")
        out += [f"{count / total:6.1%} {count:7d}  {name}" for name, count in items]
    return "\n".join(out)


if __name__ == "__main__":
    print(report(Path(sys.argv[1])))
