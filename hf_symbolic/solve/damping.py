"""Levenberg-Marquardt adjustment of the damping strength lambda.

HF damps the curvature matrix, ``B = G + lambda I``, and adapts ``lambda``
after every update from the reduction ratio

    rho = (f(theta + p) - f(theta)) / q(p),   q(p) = g^T p + 1/2 p^T G p,

the actual change of the objective over the change predicted by the
*undamped* quadratic model (Martens 2010, sec. 4.1; Martens & Sutskever
2012, sec. 20.8.5). A poor prediction (``rho < 1/4``) raises ``lambda`` by
3/2, a good one (``rho > 3/4``) lowers it by 2/3.

This module depends on numpy only.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from numbers import Real

import numpy as np

from hf_symbolic.errors import ArgumentError

__all__ = ["reduction_ratio", "levenberg_marquardt", "DampingRule"]

#: The rule keeps lambda within the positive normal floats: from 0 (reached after about 1800 drops
#: by 2/3 from 45) or inf no factor could bring it back, and ``DampingRule`` refuses either as input.
_SMALLEST, _LARGEST = sys.float_info.min, sys.float_info.max


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentError(f"{name} must be a real number, got {value!r}")
    return float(value)


def reduction_ratio(f_new: float, f_old: float, q_value: float) -> float:
    """Reduction ratio ``rho = (f_new - f_old) / q_value``.

    Parameters
    ----------
    f_new : float
        Objective after the step, ``f(theta + p)``.
    f_old : float
        Objective before the step, ``f(theta)``.
    q_value : float
        Predicted change ``q(p) = g^T p + 1/2 p^T G p`` of the undamped
        quadratic model; negative for a step the model says is useful.

    Returns
    -------
    float
        ``rho``, or NaN when it is not computable: ``q_value >= 0`` (the
        model predicts no decrease, so the ratio carries no information), or
        any of the three inputs is not finite (for example a step into a
        region where the objective overflows). :func:`levenberg_marquardt`
        treats NaN as a failed prediction and raises lambda.

    Examples
    --------
    >>> reduction_ratio(9.0, 10.0, -2.0)
    0.5
    >>> reduction_ratio(9.0, 10.0, 0.0)
    nan
    """
    f_new = _real("f_new", f_new)
    f_old = _real("f_old", f_old)
    q_value = _real("q_value", q_value)
    if not (math.isfinite(f_new) and math.isfinite(f_old) and math.isfinite(q_value)) or q_value >= 0.0:
        return math.nan
    return (f_new - f_old) / q_value


@dataclass(frozen=True)
class DampingRule:
    """The Levenberg-Marquardt rule with its constants, callable as ``rule(lam, rho)``.

    ``rho < lower`` or NaN multiplies ``lam`` by ``boost``; ``rho > upper``
    multiplies it by ``drop``; otherwise ``lam`` is unchanged. The result is
    clamped to ``[min_lambda, max_lambda]`` and never leaves the positive
    normal floats (``sys.float_info.min`` to ``sys.float_info.max``), so that
    a long run of good predictions cannot underflow it to 0, from which no
    factor would bring it back. The defaults are Martens': 1/4, 3/4, 3/2
    and 2/3.

    Parameters
    ----------
    lower, upper : float
        Thresholds on ``rho``; ``lower < upper``.
    boost : float
        Factor > 1 applied after a poor prediction.
    drop : float
        Factor in (0, 1) applied after a good prediction.
    min_lambda, max_lambda : float
        Clamp bounds, ``0 <= min_lambda <= max_lambda`` (``max_lambda`` may be inf).

    Examples
    --------
    >>> rule = DampingRule()
    >>> rule(1.0, 0.1), rule(1.0, 0.5), rule(1.5, 0.9)
    (1.5, 1.0, 1.0)
    """

    lower: float = 0.25
    upper: float = 0.75
    boost: float = 1.5
    drop: float = 2.0 / 3.0
    min_lambda: float = 0.0
    max_lambda: float = math.inf

    def __post_init__(self):
        values = {name: _real(name, getattr(self, name))
                  for name in ("lower", "upper", "boost", "drop", "min_lambda", "max_lambda")}
        for name, value in values.items():
            if math.isnan(value) or (math.isinf(value) and name != "max_lambda"):
                raise ArgumentError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, value)
        if not self.lower < self.upper:
            raise ArgumentError(f"lower must be < upper, got lower={self.lower!r}, upper={self.upper!r}")
        if not self.boost > 1.0:
            raise ArgumentError(f"boost must be > 1, got {self.boost!r}")
        if not 0.0 < self.drop < 1.0:
            raise ArgumentError(f"drop must be in (0, 1), got {self.drop!r}")
        if not 0.0 <= self.min_lambda <= self.max_lambda:
            raise ArgumentError(
                f"need 0 <= min_lambda <= max_lambda, got min_lambda={self.min_lambda!r}, "
                f"max_lambda={self.max_lambda!r}"
            )

    def __call__(self, lam: float, rho: float) -> float:
        """Return the new damping strength for the current ``lam`` and reduction ratio ``rho``."""
        lam = _real("lam", lam)
        if not (math.isfinite(lam) and lam > 0.0):
            raise ArgumentError(f"lam must be a finite number > 0, got {lam!r}")
        rho = _real("rho", rho)
        if math.isnan(rho) or rho < self.lower:
            lam = min(lam * self.boost, _LARGEST)
        elif rho > self.upper:
            lam = max(lam * self.drop, _SMALLEST)
        return min(max(lam, self.min_lambda), self.max_lambda)


def levenberg_marquardt(lam: float, rho: float, *, lower: float = 0.25, upper: float = 0.75,
                        boost: float = 1.5, drop: float = 2.0 / 3.0, min_lambda: float = 0.0,
                        max_lambda: float = np.inf) -> float:
    """One Levenberg-Marquardt update of the damping strength.

    Equivalent to ``DampingRule(lower, upper, boost, drop, min_lambda, max_lambda)(lam, rho)``.

    Parameters
    ----------
    lam : float
        Current damping strength, finite and > 0.
    rho : float
        Reduction ratio (:func:`reduction_ratio`); NaN counts as a failure.
    lower, upper, boost, drop, min_lambda, max_lambda : float, optional
        See :class:`DampingRule`.

    Returns
    -------
    float
        The new damping strength.

    Raises
    ------
    ArgumentError
        ``lam`` or a constant is out of range.

    Examples
    --------
    >>> levenberg_marquardt(2.0, float("nan"))
    3.0
    >>> levenberg_marquardt(3.0, 0.8)
    2.0
    >>> levenberg_marquardt(3.0, 0.8, min_lambda=2.5)
    2.5
    """
    rule = DampingRule(lower=lower, upper=upper, boost=boost, drop=drop,
                       min_lambda=min_lambda, max_lambda=max_lambda)
    return rule(lam, rho)
