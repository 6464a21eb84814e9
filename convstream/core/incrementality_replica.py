"""One conversions partition's incrementality estimator: what the lifecycle scores labels with.

It learns two kinds of entries, in learning-queue order (event time, a delay behind the
decisions, :mod:`convstream.core.learning_queue`), and every replica learns all of them:

- a conversion's examples (``{"t": "inc", "x": [[feature names, held out], ...]}``, one per
  unit of its user, :func:`~convstream.core.incrementality.conversion_examples`), shared by
  the partition that decided it;
- users entered per campaign (``{"t": "arms", "n": {campaign: [exposed, held out]}}``), from
  every users partition, by event-time cell of their entry (:func:`arms_entries`): summed,
  they are n_E and n_H of the whole traffic, the offset log(n_H / n_E) of the fit.

A label of a conversion at ``ts`` is scored with the fit of every entry of the event-time cells
(``step_ms``, an hour) that ended by ``ts - delay``, whatever came after: each replica keeps the
fits of its last cells, and the fit of a cell is a function of the entries alone (fitted from
zero, not warm-started). So a label does not depend on how far its replica had learned when it
decided, only on the entries, as long as they arrive less than the delay out of event-time
order. Replicas of one process that learned the same entries share one fit (``fits``).

>>> r = Replica(min_holdout=1)
>>> r.learn(5, {"t": "arms", "n": {"c": [3, 1]}})
>>> r.learn(10, {"t": "inc", "x": [[["campaign=c"], False]]})  # cell 0: none held out yet
>>> r.learn(HOUR_MS + 5, {"t": "inc", "x": [[["campaign=c"], True]]})
>>> r.probability({"campaign=c": 1.0}, as_of=HOUR_MS + 10) is None  # as of cell 0
True
>>> 0.0 <= r.probability({"campaign=c": 1.0}, as_of=2 * HOUR_MS) < 1.0  # cells 0 and 1
True
"""

from __future__ import annotations

import base64
import math
import zlib
from collections import deque
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np
import orjson

from convstream.core.incrementality import CampaignId, Features, log_arm_ratio
from convstream.core.logit import Logit
from convstream.core.units import HOUR_MS

#: Entry kinds, by the example's ``"t"``.
EXAMPLES, ARMS = "inc", "arms"
#: Fits of past cells a replica keeps: a conversion decided more than that many cells after
#: later ones gets the oldest.
HISTORY = 48

#: A key for a cached fit: (cell, entries learned, digest of the entries in order).
Fingerprint = tuple[int, int, int]


def arms_entries(
    entered: Mapping[int, Mapping[CampaignId, list[int]]], *, step_ms: int = HOUR_MS
) -> list[tuple[int, dict[str, Any]]]:
    """(ts, entry) for users entered per campaign by ``first_ts`` (``{ts: {campaign:
    [exposed, held]}}``), summed by event-time cell, each at its cell's last millisecond:
    counted in the fit of its own cell.

    >>> arms_entries({5: {"c": [1, 0]}, 7: {"c": [0, 1]}, HOUR_MS: {"c": [1, 0]}})
    [(3599999, {'t': 'arms', 'n': {'c': [1, 1]}}), (7199999, {'t': 'arms', 'n': {'c': [1, 0]}})]
    """
    cells: dict[int, dict[str, list[int]]] = {}
    for ts, counts in entered.items():
        cell = cells.setdefault(ts // step_ms, {})
        for campaign, (exposed, held) in counts.items():
            arm = cell.setdefault(campaign, [0, 0])
            arm[0] += exposed
            arm[1] += held
    return [
        ((c + 1) * step_ms - 1, {"t": ARMS, "n": dict(sorted(n.items()))})
        for c, n in sorted(cells.items())
    ]


def entry_digest(ts: int, entry: Mapping[str, Any]) -> int:
    """A checksum of one entry: replicas' fingerprints sum them.

    >>> entry_digest(5, {"t": "arms", "n": {"c": [1, 0]}}) == entry_digest(5, {"t": "arms",
    ...     "n": {"c": [1, 0]}}) != entry_digest(6, {"t": "arms", "n": {"c": [1, 0]}})
    True
    """
    return (zlib.crc32(orjson.dumps(entry)) << 20) ^ ts


class Replica:
    """See the module docstring. ``fits`` may be shared by the replicas of a process."""

    def __init__(
        self,
        *,
        l2: float = 10.0,
        min_holdout: int = 20,
        step_ms: int = HOUR_MS,
        fits: MutableMapping[Fingerprint, np.ndarray | None] | None = None,
    ) -> None:
        self.model = Logit(l2=l2, offset=self._offset)
        self.min_holdout = min_holdout
        self.step_ms = step_ms
        self.arms: dict[CampaignId, list[int]] = {}
        self.holdout_learned = 0
        self.learned = 0  # entries
        self.cell: int | None = None  # of the newest entry learned
        self.digest = 0
        # (cell of the last entry before, cell of the first entry after, its fit or None).
        self.history: deque[tuple[int, int, np.ndarray | None]] = deque(maxlen=HISTORY)
        self.fits: MutableMapping[Fingerprint, np.ndarray | None] = {} if fits is None else fits

    def _offset(self, cell: tuple[str, ...]) -> float:
        return log_arm_ratio(self.arms, cell)

    def learn(self, ts: int, entry: Mapping[str, Any], *, digest: int | None = None) -> None:
        """One entry (an example or arm counts) at event time ``ts``, in queue order
        (``digest``: its :func:`entry_digest`, when the caller has it)."""
        cell = ts // self.step_ms
        if self.cell is not None and cell > self.cell:
            self.history.append((self.cell, cell, self._fit()))
        if self.cell is None or cell > self.cell:
            self.cell = cell
        if entry["t"] == ARMS:
            for campaign, (exposed, held) in entry["n"].items():
                arm = self.arms.setdefault(campaign, [0, 0])
                arm[0] += exposed
                arm[1] += held
        else:
            for names, holdout in entry["x"]:
                self.model.add(dict.fromkeys(names, 1.0), positive=holdout, negative=not holdout)
                self.holdout_learned += bool(holdout)
        self.learned += 1
        # Order-free: replicas that learned the same entries share a fit, however they were
        # interleaved within a cell.
        self.digest = (self.digest + (entry_digest(ts, entry) if digest is None else digest)) % (
            1 << 61
        )

    def _fit(self) -> np.ndarray | None:
        """The weights of everything learned so far (None before ``min_holdout``)."""
        if self.holdout_learned < self.min_holdout or self.cell is None:
            return None
        key = (self.cell, self.learned, self.digest)
        if key not in self.fits:
            self.model.weights = np.zeros(1)  # from zero: the fit is the entries' alone
            self.model.fit()
            self.fits[key] = self.model.weights.copy()
            if len(self.fits) > 4 * HISTORY:
                del self.fits[next(iter(self.fits))]
        return self.fits[key]

    def weights(self, as_of: int) -> np.ndarray | None:
        """The fit of the cells that ended by ``as_of`` (event time)."""
        last = as_of // self.step_ms - 1  # the newest cell wholly at or before as_of
        if self.cell is None or self.cell <= last:
            return self._fit()
        for before, after, fit in reversed(self.history):
            if before <= last < after:
                return fit
        return self.history[0][2] if self.history else None

    def probability(self, x: Features, *, as_of: int) -> float | None:
        """1 - lambda_H / lambda_E at ``x``, at least 0, as of ``as_of``; None before the fit
        had ``min_holdout`` held-out conversions."""
        w = self.weights(as_of)
        if w is None:
            return None
        z = float(w[0])
        for name in x:
            i = self.model.index.get(name)
            if i is not None and i < len(w):
                z += float(w[i])
        return max(0.0, 1.0 - math.exp(min(50.0, z)))

    def dumps(self, **extra: Any) -> bytes:
        """A checkpoint: the cells in the order learned, arm counts, counters, the fits of the
        past cells (each distinct one once, its float64 weights in base64: a label decided
        after a restart as of an earlier cell gets the fit it would have got), and ``extra``
        fields of the caller's (read back by :func:`saved_fields`)."""
        fits: list[str] = []
        index: dict[int, int] = {}
        history = []
        for before, after, fit in self.history:
            i = None
            if fit is not None:
                i = index.get(id(fit))
                if i is None:
                    i = index[id(fit)] = len(fits)
                    fits.append(base64.b64encode(np.asarray(fit, "<f8").tobytes()).decode())
            history.append([before, after, i])
        return orjson.dumps(
            {
                "cells": [[list(c), s[0], s[1]] for c, s in self.model.cells.items()],
                "arms": self.arms,
                "holdout": self.holdout_learned,
                "learned": self.learned,
                "cell": self.cell,
                "digest": self.digest,
                "history": history,
                "fits": fits,
                **extra,
            }
        )

    @classmethod
    def loads(cls, blob: bytes, **options: Any) -> Replica:
        """A replica from :meth:`dumps` (``options`` as the constructor's)."""
        obj = orjson.loads(blob)
        replica = cls(**options)
        for names, positive, negative in obj["cells"]:
            replica.model.add(dict.fromkeys(names, 1.0), positive=positive, negative=negative)
        replica.model.examples = sum(1 for _ in obj["cells"])
        replica.arms = {c: list(a) for c, a in obj["arms"].items()}
        replica.holdout_learned = obj["holdout"]
        replica.learned = obj["learned"]
        replica.cell = obj["cell"]
        replica.digest = obj["digest"]
        fits = [np.frombuffer(base64.b64decode(f), "<f8").copy() for f in obj.get("fits", ())]
        for before, after, i in obj.get("history", ()):
            replica.history.append((before, after, None if i is None else fits[i]))
        return replica


def saved_fields(blob: bytes, *names: str) -> list[Any]:
    """The ``extra`` fields ``names`` of a :meth:`Replica.dumps` checkpoint (None if absent).

    >>> saved_fields(Replica().dumps(queue=[[1, "k", {"t": "arms", "n": {}}]]), "queue", "x")
    [[[1, 'k', {'t': 'arms', 'n': {}}]], None]
    """
    obj = orjson.loads(blob)
    return [obj.get(name) for name in names]
