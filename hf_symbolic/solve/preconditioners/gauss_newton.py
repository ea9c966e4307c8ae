"""The diagonal of the Gauss-Newton matrix itself as CG's preconditioner, computed exactly.

``M = (diag(G) + λ)^α`` with ``G`` the Gauss-Newton matrix of the CG batch
(mean over cases, the scale of ``G`` and ``λ``) and ``α`` the
``preconditioner_exponent`` (3/4 by default, as for Martens' diagonal).
Unlike the empirical Fisher diagonal of :mod:`.martens`, this is the diagonal
of the very matrix CG solves with (without the structural-damping term), so
with ``α = 1`` it is Jacobi's preconditioner of ``G + λI``.

The statistic ``"gauss_newton_diagonal"`` is exact, one case at a time
(:func:`hf_symbolic.model.statistics.exact_diagonal`): meant for small
models and as the reference of :mod:`.hutchinson`, its fast estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hf_symbolic.errors import ArgumentError

__all__ = ["GaussNewtonDiagonal"]


@dataclass(frozen=True)
class GaussNewtonDiagonal:
    """``(max(statistic, 0) + λ) ** exponent`` with the exact Gauss-Newton diagonal as the statistic."""

    exponent: float = 0.75
    statistic: str = "gauss_newton_diagonal"

    def __post_init__(self):
        if not (isinstance(self.exponent, (int, float)) and math.isfinite(self.exponent) and 0 <= self.exponent <= 1):
            raise ArgumentError(f"preconditioner_exponent={self.exponent!r} is invalid: expected a number in [0, 1]")

    @classmethod
    def from_options(cls, exponent=0.75, **_):
        return cls(exponent=exponent)

    def diagonal(self, statistic, damping):
        # a diagonal of a PSD matrix is >= 0; clipping removes rounding (and, for estimates, sampling) below zero
        return (np.maximum(np.asarray(statistic), 0) + damping) ** self.exponent
