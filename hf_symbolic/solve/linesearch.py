"""Armijo backtracking line search along the chosen HF step.

After backtracking over CG iterates picks a step ``p``, HF scales it by the
largest ``alpha`` in ``initial_step * shrink**t`` (``t = 0, 1, ...``) that
satisfies the Armijo sufficient-decrease condition

    f(theta + alpha p) <= f(theta) + c * alpha * g^T p,

with Martens & Sutskever's constants ``c = 1e-2``, ``shrink = 0.8`` and at
most 60 tries; when no try passes the step is rejected (``alpha = 0``)
(Martens & Sutskever 2012, sec. 20.8.8).

This module depends on numpy only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Callable, Mapping, Optional

from hf_symbolic.errors import ArgumentError

__all__ = ["LineSearchResult", "armijo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`armijo`.

    Attributes
    ----------
    step : float
        Accepted ``alpha``; 0.0 when the step was rejected.
    value : float
        Objective at the accepted step; ``f0`` when rejected.
    tries : int
        Candidate steps tested (including those whose value was passed in
        ``known_values``).
    accepted : bool
        Whether a step passed the Armijo test.
    evaluations : int
        Calls made to ``objective`` (``tries`` minus the known values used).
    """

    step: float
    value: float
    tries: int
    accepted: bool
    evaluations: int = 0


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentError(f"{name} must be a real number, got {value!r}")
    return float(value)


def armijo(objective: Callable[[float], float], f0: float, slope: float, *, c: float = 1e-2,
           shrink: float = 0.8, max_tries: int = 60, initial_step: float = 1.0,
           known_values: Optional[Mapping[float, float]] = None) -> LineSearchResult:
    """Backtracking line search with the Armijo sufficient-decrease test.

    Tries ``alpha_t = initial_step * shrink**t`` for ``t = 0 .. max_tries - 1``
    and accepts the first with ``objective(alpha_t) <= f0 + c * alpha_t * slope``.
    A non-finite objective value counts as a failed try.

    Parameters
    ----------
    objective : callable
        ``objective(alpha) -> float``, the objective at ``theta + alpha p``.
    f0 : float
        Objective at ``alpha = 0`` (finite).
    slope : float
        Directional derivative ``g^T p``. It must be negative for ``p`` to be
        a descent direction: when ``slope >= 0`` or it is not finite, the
        search returns ``accepted=False``, ``step=0.0`` at once, without
        evaluating ``objective``.
    c : float, optional
        Sufficient-decrease constant in (0, 1).
    shrink : float, optional
        Factor in (0, 1) between consecutive tries.
    max_tries : int, optional
        Maximum number of tries (>= 1).
    initial_step : float, optional
        First ``alpha`` tried (finite, > 0).
    known_values : mapping, optional
        ``{alpha: objective(alpha)}`` already computed (e.g. ``{1.0: f1}``
        from backtracking); such values are used instead of calling
        ``objective``. Keys are matched by exact float equality with the
        ``alpha_t`` above.

    Returns
    -------
    LineSearchResult
        ``step=0.0``, ``value=f0``, ``accepted=False`` when no try passes.

    Raises
    ------
    ArgumentError
        ``f0`` is not finite or a constant is out of range.

    Examples
    --------
    For ``f(alpha) = (alpha - 0.3)**2`` (slope ``-0.6`` at 0), ``alpha = 1``,
    ``0.8`` and ``0.64`` fail and ``0.512`` is the first to pass:

    >>> res = armijo(lambda a: (a - 0.3) ** 2, 0.09, -0.6)
    >>> round(res.step, 12), res.tries, res.accepted
    (0.512, 4, True)
    """
    f0 = _real("f0", f0)
    slope = _real("slope", slope)
    c = _real("c", c)
    shrink = _real("shrink", shrink)
    initial_step = _real("initial_step", initial_step)
    if not math.isfinite(f0):
        raise ArgumentError(f"f0 (the objective at alpha = 0) must be finite, got {f0!r}")
    if not 0.0 < c < 1.0:
        raise ArgumentError(f"c must be in (0, 1), got {c!r}")
    if not 0.0 < shrink < 1.0:
        raise ArgumentError(f"shrink must be in (0, 1), got {shrink!r}")
    if isinstance(max_tries, bool) or not isinstance(max_tries, Integral) or max_tries < 1:
        raise ArgumentError(f"max_tries must be an integer >= 1, got {max_tries!r}")
    if not (math.isfinite(initial_step) and initial_step > 0.0):
        raise ArgumentError(f"initial_step must be a finite number > 0, got {initial_step!r}")
    known = {} if known_values is None else {float(a): v for a, v in known_values.items()}

    if not (math.isfinite(slope) and slope < 0.0):
        logger.debug("line search skipped: slope g^T p = %r is not negative", slope)
        return LineSearchResult(step=0.0, value=f0, tries=0, accepted=False, evaluations=0)

    evaluations = 0
    for t in range(int(max_tries)):
        alpha = initial_step * shrink ** t
        if alpha in known:
            value = float(known[alpha])
        else:
            value = float(objective(alpha))
            evaluations += 1
        if math.isfinite(value) and value <= f0 + c * alpha * slope:
            return LineSearchResult(step=alpha, value=value, tries=t + 1, accepted=True,
                                    evaluations=evaluations)
    logger.debug("line search rejected the step after %d tries", max_tries)
    return LineSearchResult(step=0.0, value=f0, tries=int(max_tries), accepted=False,
                            evaluations=evaluations)
