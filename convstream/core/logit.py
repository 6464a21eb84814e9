"""A logistic regression on one-hot features, fitted exactly from its sufficient statistics.

Examples with the same active features are one cell; a cell keeps the summed weights of its
positive and negative examples, so the state is bounded by the number of feature combinations
and not by the number of examples, and the fit does not depend on their order. The fit is the
maximum a posteriori estimate with a normal prior of precision ``l2`` on every weight but the
intercept (ridge), by Newton's method warm-started from the previous fit, redone once
``refit_every`` examples have come since (so the same examples give the same model).
``offset`` gives a cell a known term of its logit, added in the fit and not in :meth:`logit`
(a case-only design's log ratio of the arms' sizes).

>>> m = Logit(l2=0.0)
>>> m.add({"x=a": 1.0}, positive=3.0, negative=1.0)
>>> m.add({"x=b": 1.0}, positive=1.0, negative=3.0)
>>> round(m.predict({"x=a": 1.0}), 3), round(m.predict({"x=b": 1.0}), 3)
(0.75, 0.25)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

Cell = tuple[str, ...]


def _solve(
    times: Callable[[np.ndarray], np.ndarray], b: np.ndarray, *, tol: float = 1e-10
) -> np.ndarray:
    """x with times(x) = b, times symmetric positive definite, by conjugate gradients with
    sparse products only: no dense solve, which would wake BLAS threads (measured: the
    engine's CPU time doubled on 2 cores) for a system of a few hundred unknowns.

    >>> a = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> [round(float(v), 6) for v in _solve(lambda v: a @ v, np.array([1.0, 2.0]))]
    [0.090909, 0.636364]
    """
    x = np.zeros_like(b)
    r = b.copy()
    d = r.copy()
    rr = float(r @ r)
    for _ in range(4 * len(b)):
        if rr <= tol * tol:
            break
        q = times(d)
        alpha = rr / float(d @ q)
        x += alpha * d
        r -= alpha * q
        rr_next = float(r @ r)
        d = r + (rr_next / rr) * d
        rr = rr_next
    return x


class Logit:
    """See the module docstring; ``examples`` counts the :meth:`add` calls."""

    def __init__(
        self,
        *,
        l2: float = 1.0,
        refit_every: int = 20,
        iterations: int = 25,
        offset: Callable[[Cell], float] | None = None,
    ) -> None:
        self.l2 = l2
        self.offset = offset
        self.refit_every = refit_every
        self.iterations = iterations
        self.cells: dict[Cell, list[float]] = {}
        self.index: dict[str, int] = {}
        self.weights = np.zeros(1)
        self.examples = 0
        self._fitted_at = -1
        # The design, sparse: per cell (row) its feature indices, intercept (0) included.
        self._rows: dict[Cell, int] = {}
        self._cols: list[int] = []
        self._col_rows: list[int] = []

    def add(self, x: Mapping[str, float], *, positive: float, negative: float) -> None:
        """An example (or a weighted pair) with active features ``x`` (values are ignored:
        one-hot)."""
        cell = tuple(sorted(x))
        sums = self.cells.get(cell)
        if sums is None:
            sums = self.cells[cell] = [0.0, 0.0]
            row = self._rows[cell] = len(self._rows)
            cols = [0]
            for name in cell:
                if name not in self.index:
                    self.index[name] = len(self.index) + 1
                cols.append(self.index[name])
            self._cols += cols
            self._col_rows += [row] * len(cols)
        sums[0] += positive
        sums[1] += negative
        self.examples += 1

    def fit(self) -> None:
        """Newton's method on the penalized log likelihood of the cells."""
        self._fitted_at = self.examples
        if not self.cells:
            return
        k = len(self.index) + 1
        w = np.zeros(k)
        w[: len(self.weights)] = self.weights
        cells = list(self.cells.items())  # in row order: rows are numbered as cells come
        n = len(cells)
        cols, col_rows = np.array(self._cols), np.array(self._col_rows)
        off = np.zeros(n)
        if self.offset is not None:
            off = np.array([self.offset(cell) for cell, _ in cells])
        pos = np.array([s[0] for _, s in cells])
        tot = pos + np.array([s[1] for _, s in cells])
        # A floor keeps one-hot groups (collinear with the intercept) solvable at l2 = 0.
        penalty = np.full(k, max(self.l2, 1e-6))
        penalty[0] = 1e-6

        def rows_of(v: np.ndarray) -> np.ndarray:  # X v
            return np.bincount(col_rows, weights=v[cols], minlength=n)

        def cols_of(u: np.ndarray) -> np.ndarray:  # X' u
            return np.bincount(cols, weights=u[col_rows], minlength=k)

        curvature = np.zeros(n)

        def hessian_times(v: np.ndarray) -> np.ndarray:  # at the current curvature
            return cols_of(curvature * rows_of(v)) + penalty * v

        for _ in range(self.iterations):
            p = 1.0 / (1.0 + np.exp(-np.clip(rows_of(w) + off, -50.0, 50.0)))
            grad = cols_of(pos - tot * p) - penalty * w
            curvature = tot * p * (1.0 - p)
            step = _solve(hessian_times, grad)
            # Damped: a near-separable cell can ask for a huge first step.
            size = float(np.max(np.abs(step)))
            if size > 2.0:
                step *= 2.0 / size
            w = w + step
            if size < 1e-7:
                break
        self.weights = w

    def logit(self, x: Mapping[str, float]) -> float:
        """The fitted log odds at ``x`` (unknown features count 0), refitting when due."""
        if self._fitted_at < 0 or self.examples - self._fitted_at >= self.refit_every:
            self.fit()
        z = float(self.weights[0])
        for name in x:
            i = self.index.get(name)
            if i is not None and i < len(self.weights):
                z += float(self.weights[i])
        return z

    def predict(self, x: Mapping[str, float]) -> float:
        z = self.logit(x)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
