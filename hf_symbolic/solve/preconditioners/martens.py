"""Martens' diagonal preconditioner (Martens 2010 §4.7; Martens & Sutskever 2012 §20.11).

``M = (diag(mean_i g_i ⊙ g_i) + λ)^α`` with per-case gradients ``g_i`` on the
CG batch and ``α = 3/4``: the diagonal of the empirical Fisher matrix, damped
like the curvature and softened by the exponent. The squared gradients are
averaged over cases rather than summed, so that they are on the scale of a
cost averaged over cases, like ``G`` and ``λ``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hf_symbolic.errors import ArgumentError

__all__ = ["MartensDiagonal"]


@dataclass(frozen=True)
class MartensDiagonal:
    """``(statistic + λ) ** exponent`` with the mean squared per-case gradient as the statistic."""

    exponent: float = 0.75
    statistic: str = "squared_gradients"

    def __post_init__(self):
        if not (isinstance(self.exponent, (int, float)) and math.isfinite(self.exponent) and 0 <= self.exponent <= 1):
            raise ArgumentError(f"preconditioner_exponent={self.exponent!r} is invalid: expected a number in [0, 1]")

    @classmethod
    def from_options(cls, exponent=0.75, **_):
        return cls(exponent=exponent)

    def diagonal(self, statistic, damping):
        return (np.asarray(statistic) + damping) ** self.exponent
