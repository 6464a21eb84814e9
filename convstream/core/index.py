"""The identifier index: which users were seen on an identifier, and when (event time).

An entry is a plain dict so that a Faust table and the offline engine store the same thing::

    {"u": {user_id: [first_ts, last_ts, count, cells(, families)]}, "d": evicted_distinct_users}

``cells`` holds the sightings by ten-minute cells of event time (``COALESCE_MS``, on a fixed
grid), each ``[earliest, latest, count]``, at most ``HISTORY`` of them: past that, the two
oldest merge. A lookup for a conversion at time T reads the row *as of T*: when the user was
last seen at or before T, and how often by then, so its answer does not depend on how many
sightings after T were applied before it (how far the engagement topics happened to be read):
a cell wholly before T's own cell counts as it is, the cell that holds T counts as one
sighting at its earliest. Only a row with more than ``HISTORY`` cells after T (a user seen on
the identifier in more ten-minute cells since than that) answers from merged cells.

The entry is bounded: past ``max_users`` the least recently seen user is evicted and counted in
``d``, so a carrier NAT address keeps a true high degree without unbounded state. Which user
that is depends on the sightings applied so far, so on an address with more users than that an
answer can still depend on how far the engagements were read (issue 19).

Rows of ``ip`` entries also keep ``families``: the user agent families (``browser/os``, without
versions) the user was seen with on the address, each with the time it was first seen there. A
browser update changes the exact user agent, and so the ``ipua`` key, but not the family; and
the lookup counts how many users of the address were seen with each family.

>>> entry = add_sighting(None, "u1", 1_000, max_users=2)
>>> entry = add_sighting(entry, "u2", 2_000, max_users=2)
>>> entry = add_sighting(entry, "u1", 3_000, max_users=2)
>>> entry["u"]["u1"]
[1000, 3000, 2, [[1000, 3000, 2]]]
>>> answer = lookup(entry, "ip:1.2.3.4", conversion_ts=2_500, lookback_ms=10_000, top_k=5)
>>> answer["degree"], answer["users"]
(2, [['u2', 2000, 2000, 1], ['u1', 1000, 1000, 1]])
"""

from __future__ import annotations

from typing import Any

IdentEntry = dict[str, Any]
LookupAnswer = dict[str, Any]

DEFAULT_MAX_USERS = 64
HISTORY = 8
COALESCE_MS = 10 * 60 * 1000
#: User agent families kept per user and address; more than this on one address is not a person.
MAX_FAMILIES = 4


def add_sighting(
    entry: IdentEntry | None,
    user_id: str,
    ts: int,
    *,
    count: int = 1,
    first_ts: int | None = None,
    max_users: int = DEFAULT_MAX_USERS,
    families: dict[str, int] | None = None,
) -> IdentEntry:
    """Record ``count`` sightings of ``user_id`` ending at ``ts``; returns the (mutated) entry.

    ``families`` maps user agent families seen in these sightings to their first time.
    """
    if entry is None:
        entry = {"u": {}, "d": 0}
    users = entry["u"]
    row = users.get(user_id)
    start = ts if first_ts is None else first_ts
    if row is None:
        row = users[user_id] = [start, ts, 0, []]
        _remember(row, start, ts, count)
        if families:
            _add_families(row, families)
        if len(users) > max_users:
            oldest = min(users, key=lambda u: (users[u][1], u))
            del users[oldest]
            entry["d"] = entry.get("d", 0) + 1
        return entry
    row[0] = min(row[0], start)
    row[1] = max(row[1], ts)
    _remember(row, start, ts, count)
    if families:
        _add_families(row, families)
    return entry


def _add_families(row: list[Any], families: dict[str, int]) -> None:
    """Merge first-seen times of families into the row's ``families`` (its fifth item)."""
    if len(row) < 5:
        row.append({})
    merge_families(row[4], families)


def merge_families(kept: dict[str, int], families: dict[str, int]) -> None:
    """Merge user agent families into ``kept``, keeping each one's earliest time and at most
    ``MAX_FAMILIES`` of them (the users agent batches sightings with this too).

    >>> kept = {}
    >>> merge_families(kept, {"safari/ios": 50}); merge_families(kept, {"safari/ios": 20})
    >>> kept
    {'safari/ios': 20}
    """
    for family, ts in families.items():
        if family in kept:
            kept[family] = min(kept[family], ts)
        elif len(kept) < MAX_FAMILIES:
            kept[family] = ts


def _cell(ts: int) -> int:
    return ts // COALESCE_MS


def _remember(row: list[Any], first: int, last: int, count: int) -> None:
    """Add ``count`` sightings from ``first`` to ``last`` to the row's count and cells: one cell
    when both fall in it (the users agent batches sightings by cell), else one sighting at
    ``first`` and the rest at ``last``."""
    row[2] += count
    cells = _cells(row)
    if _cell(first) == _cell(last) or count < 2:
        _add_cell(cells, first, last, count)
    else:
        _add_cell(cells, first, first, 1)
        _add_cell(cells, last, last, count - 1)


def _cells(row: list[Any]) -> list[list[int]]:
    """The row's cells. A row written before cells existed kept bare sighting times: each is a
    cell of one, and the rest of its count goes to its first sighting."""
    cells = row[3]
    if cells and not isinstance(cells[0], list):
        rest = max(row[2] - len(cells), 0)
        cells = row[3] = sorted([[row[0], row[0], rest]] * bool(rest) + [[t, t, 1] for t in cells])
    return cells


def _add_cell(cells: list[list[int]], first: int, last: int, count: int) -> None:
    cell = _cell(last)
    for kept in cells:
        if _cell(kept[0]) <= cell <= _cell(kept[1]):
            kept[0], kept[1], kept[2] = min(kept[0], first), max(kept[1], last), kept[2] + count
            return
    cells.append([first, last, count])
    cells.sort()
    if len(cells) > HISTORY:
        (lo, hi, n), (lo2, hi2, n2) = cells[0], cells[1]
        cells[:2] = [[min(lo, lo2), max(hi, hi2), n + n2]]


def as_of(row: list[Any], ts: int) -> tuple[int, int] | None:
    """(last seen at or before ``ts``, sightings by then) from the row's cells; None when the
    user was not seen on the identifier by ``ts``. A cell whose span reaches ``ts``'s own
    ten-minute cell counts as one sighting at its earliest: the same whatever sightings after
    ``ts`` it also holds.

    >>> cells = [[100, 200, 2], [5_000_000, 5_000_000, 1], [8_500_000, 9_000_000, 3]]
    >>> row = [100, 9_000_000, 6, cells]
    >>> as_of(row, 6_000_000), as_of(row, 8_600_000), as_of(row, 150), as_of(row, 99)
    ((5000000, 3), (8500000, 4), (100, 1), None)
    """
    seen, count, cell = None, 0, _cell(ts)
    for lo, hi, n in _cells(row):
        if _cell(hi) < cell:
            seen, count = hi if seen is None else max(seen, hi), count + n
        elif lo <= ts:
            seen, count = lo if seen is None else max(seen, lo), count + 1
    return None if seen is None else (seen, count)


def last_seen_before(row: list[Any], ts: int) -> int | None:
    """When the user was last seen at or before ``ts``, from the row's cells.

    >>> last_seen_before([100, 9_000_000, 3, [[100, 100, 1], [5_000_000, 5_000_000, 1]]], 6_000_000)
    5000000
    >>> last_seen_before([7_000_000, 9_000_000, 3, [[7_000_000, 9_000_000, 3]]], 6_000_000) is None
    True
    """
    seen = as_of(row, ts)
    return None if seen is None else seen[0]


def expire(entry: IdentEntry, clock_ts: int, ttl_ms: int) -> IdentEntry | None:
    """Drop users last seen before ``clock_ts - ttl_ms``; None when nothing is left.

    >>> expire({"u": {"a": [0, 10, 1, [10]], "b": [0, 500, 1, [500]]}, "d": 0}, 1_000, 600)
    {'u': {'b': [0, 500, 1, [500]]}, 'd': 0}
    >>> expire({"u": {"a": [0, 10, 1, [10]]}, "d": 3}, 1_000, 600) is None
    True
    """
    horizon = clock_ts - ttl_ms
    users = {u: row for u, row in entry["u"].items() if row[1] >= horizon}
    if not users:
        return None
    if len(users) != len(entry["u"]):
        entry = {"u": users, "d": entry.get("d", 0)}
    return entry


def lookup(
    entry: IdentEntry | None,
    key: str,
    *,
    conversion_ts: int,
    lookback_ms: int,
    top_k: int,
) -> LookupAnswer:
    """Candidates on ``key`` as of ``conversion_ts``: only sightings that began at or before it.

    ``degree`` counts distinct users active on the identifier within the lookback window before
    the conversion (plus evicted ones), the term-frequency signal that tells a household IP from
    a carrier NAT. ``users`` holds the ``top_k`` most recent, as
    ``[user_id, first_ts, last_ts_before_conversion, count_by_conversion]``.

    When the entry keeps user agent families, the answer also has ``families``: for each
    returned user, the families it was seen with on the identifier by the conversion time; and
    ``family_degree``: how many of the users in the window had each family by then.

    >>> entry = add_sighting(None, "u1", 1_000, families={"safari/ios": 1_000})
    >>> entry = add_sighting(entry, "u2", 2_000, families={"chrome/android": 2_000})
    >>> entry = add_sighting(entry, "u1", 5_000, families={"chrome/android": 5_000})
    >>> answer = lookup(entry, "ip:1.2.3.4", conversion_ts=3_000, lookback_ms=10_000, top_k=5)
    >>> answer["families"], answer["family_degree"]
    ({'u2': ['chrome/android'], 'u1': ['safari/ios']}, {'safari/ios': 1, 'chrome/android': 1})
    """
    kind = key.split(":", 1)[0]
    rows: list[list[Any]] = []
    degree = 0
    seen_families: dict[str, list[str]] = {}
    family_degree: dict[str, int] = {}
    if entry is not None:
        horizon = conversion_ts - lookback_ms
        for user_id, row in entry["u"].items():
            known = as_of(row, conversion_ts)
            if known is None:
                continue
            (seen, count), first = known, row[0]
            if seen >= horizon:
                degree += 1
                rows.append([user_id, first, seen, count])
                if len(row) > 4:
                    families = [f for f, since in row[4].items() if since <= conversion_ts]
                    for family in families:
                        family_degree[family] = family_degree.get(family, 0) + 1
                    if families:
                        seen_families[user_id] = families
        degree += entry.get("d", 0)
    rows.sort(key=lambda r: (-r[2], r[0]))
    answer: LookupAnswer = {"key": key, "kind": kind, "degree": degree, "users": rows[:top_k]}
    if family_degree:
        answer["families"] = {
            r[0]: seen_families[r[0]] for r in answer["users"] if r[0] in seen_families
        }
        answer["family_degree"] = family_degree
    return answer
