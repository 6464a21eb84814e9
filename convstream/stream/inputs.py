"""The files a person hands to ``convstream``: a replay, its truth (and campaign truth), labels.

Each reader checks every line and names the first bad one by its line number, and tells the
files apart by their fields, so a truth file given as a replay is an error that says so, not a
``KeyError`` deep in the replay. Errors are :class:`~convstream.stream.errors.UserError`.

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "truth.jsonl")
>>> _ = open(p, "w").write('{"conversion_key": "a:Purchase:1", "linkable": false}\\n')
>>> read_replay(p)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
convstream.stream.errors.UserError: ...truth.jsonl:1: this is a truth file ...
>>> len(read_truth(p))
1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from convstream.stream.errors import UserError
from convstream.stream.settings import INPUT_TOPICS

Row = dict[str, Any]

WHAT = {
    "replay": "a replay file (written by `convstream generate -o`)",
    "truth": "a truth file (written by `convstream generate --truth`)",
    "labels": "a labels file (written by `convstream labels -o`)",
    "campaigns": "a campaign truth file (written by `convstream generate` next to its truth)",
}


def kind_of(row: Any) -> str | None:
    """Which of the three files a row belongs to, by its fields; None if none.

    >>> kind_of({"topic": "clicks", "value": {}}), kind_of({"conversion_key": "k", "revision": 0})
    ('replay', 'labels')
    >>> kind_of({"conversion_key": "k", "linkable": True}), kind_of([1, 2])
    ('truth', None)
    >>> kind_of({"campaign_id": "c", "true_lift": 0.1})
    'campaigns'
    """
    if not isinstance(row, dict):
        return None
    if "topic" in row and "value" in row:
        return "replay"
    if "campaign_id" in row and "true_lift" in row:
        return "campaigns"
    if "conversion_key" in row:
        if "linkable" in row or "last_touch" in row:
            return "truth"
        return "labels"
    return None


def read_rows(path: str | Path, kind: str, *, allow_empty: bool = False) -> list[Row]:
    """Every non-blank line of ``path`` as a dict, checked to be a row of ``kind``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; expected {WHAT[kind]}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory; expected {WHAT[kind]}") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    rows: list[Row] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UserError(
                f"{path}:{number}: not valid JSON ({exc}); expected {WHAT[kind]}"
            ) from None
        found = kind_of(row)
        if found != kind:
            this = f"this is {WHAT[found]}" if found else "not a row of any convstream file"
            raise UserError(f"{path}:{number}: {this}, but {WHAT[kind]} is expected here")
        if kind == "replay" and row["topic"] not in INPUT_TOPICS:
            raise UserError(
                f"{path}:{number}: unknown topic {row['topic']!r}; "
                f"a replay writes to {', '.join(INPUT_TOPICS)}"
            )
        rows.append(row)
    if not rows and not allow_empty:
        raise UserError(f"{path}: empty; expected {WHAT[kind]}")
    return rows


def read_replay(path: str | Path) -> list[Row]:
    return read_rows(path, "replay")


def read_truth(path: str | Path) -> list[Row]:
    return read_rows(path, "truth")


def read_campaigns(path: str | Path) -> list[Row]:
    return read_rows(path, "campaigns")


def read_labels(path: str | Path) -> list[Row]:
    """Labels; an empty file is allowed (the worker may have labelled nothing yet)."""
    return read_rows(path, "labels", allow_empty=True)
