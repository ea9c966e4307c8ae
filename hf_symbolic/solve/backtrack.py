"""Backtracking over the iterates CG kept (Martens & Sutskever 2012, §20.8.7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import Callable, Mapping, Optional, Sequence, Union

import math

import numpy as np

from hf_symbolic.errors import ArgumentError

__all__ = ["BacktrackResult", "backtrack"]


@dataclass(frozen=True, eq=False)
class BacktrackResult:
    """Outcome of :func:`backtrack`.

    Attributes
    ----------
    index : int
        Position of the chosen iterate in the list given to :func:`backtrack`.
    step : numpy.ndarray
        The chosen iterate.
    value : float
        Its objective value (``inf`` when the objective was not finite).
    evaluations : int
        Calls made to ``objective`` (values passed in ``values`` are free).
    """

    index: int
    step: np.ndarray = field(repr=False)
    value: float
    evaluations: int


def backtrack(iterates: Sequence[np.ndarray], objective: Callable[[np.ndarray], float], *,
              global_search: bool = False,
              values: Union[None, Sequence[Optional[float]], Mapping[int, float]] = None) -> BacktrackResult:
    """Choose the step among kept CG iterates (Martens & Sutskever 2012, sec. 20.8.7).

    The default walks backwards from the last iterate and moves to the
    previous one while that has a strictly lower objective, stopping at the
    first one that is not lower. ``global_search=True`` evaluates all
    iterates and takes the argmin (ties go to the later iterate). Non-finite
    objective values count as ``+inf``.

    Parameters
    ----------
    iterates : sequence of numpy.ndarray
        Candidate steps in increasing CG iteration order (``CGResult.iterates``).
    objective : callable
        ``objective(p) -> float``, typically ``f(theta + p)`` on the gradient batch.
    global_search : bool, optional
        Take the global argmin instead of walking back.
    values : sequence or mapping, optional
        Objective values already known: a sequence as long as ``iterates``
        (``None`` for unknown entries) or a mapping ``{position: value}``.
        Known values are not evaluated again.

    Returns
    -------
    BacktrackResult

    Examples
    --------
    >>> steps = [np.array([s]) for s in (1.0, 2.0, 3.0, 4.0)]
    >>> f = lambda p: float((p[0] - 2.2) ** 2)
    >>> backtrack(steps, f).index, backtrack(steps, f, global_search=True).index
    (1, 1)
    """
    n = len(iterates)
    if n == 0:
        raise ArgumentError("iterates must hold at least one candidate step, got an empty sequence")
    if values is None:
        known = {}
    elif isinstance(values, Mapping):
        known = dict(values)
        bad = [key for key in known if not (isinstance(key, Integral) and 0 <= key < n)]
        if bad:
            raise ArgumentError(f"values keys must be positions 0..{n - 1} in iterates, got {bad[0]!r}")
    else:
        if len(values) != n:
            raise ArgumentError(f"values must hold one entry per iterate ({n}), got {len(values)}")
        known = {pos: v for pos, v in enumerate(values) if v is not None}

    evaluations = 0
    cache = {}

    def value_at(pos: int) -> float:
        nonlocal evaluations
        if pos not in cache:
            if pos in known:
                raw = known[pos]
            else:
                raw = objective(iterates[pos])
                evaluations += 1
            raw = float(raw)
            cache[pos] = raw if math.isfinite(raw) else math.inf
        return cache[pos]

    if global_search:
        best = n - 1
        for pos in range(n - 2, -1, -1):
            if value_at(pos) < value_at(best):
                best = pos
    else:
        best = n - 1
        while best > 0 and value_at(best) > value_at(best - 1):
            best -= 1
    return BacktrackResult(index=best, step=iterates[best], value=value_at(best), evaluations=evaluations)
