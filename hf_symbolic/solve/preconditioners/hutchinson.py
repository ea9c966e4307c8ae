"""The Gauss-Newton diagonal preconditioner from an unbiased Hutchinson estimate (curvature propagation).

Same ``M = (diag(G) + λ)^α`` as :mod:`.gauss_newton`, with ``diag(G)``
estimated on the whole CG batch from a few Rademacher draws over the split
(Martens, Sutskever & Swersky 2012): one pullback per draw for losses whose
Hessian at the split is diagonal (sigmoid cross-entropy, squared error), two
otherwise; see :mod:`hf_symbolic.model.statistics` for the estimator, the
number of draws and how the draws are seeded (a resumed run repeats them).
Negative entries of the estimate (possible only for non-diagonal loss
Hessians) are clipped to zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_symbolic.solve.preconditioners.gauss_newton import GaussNewtonDiagonal

__all__ = ["GaussNewtonHutchinson"]


@dataclass(frozen=True)
class GaussNewtonHutchinson(GaussNewtonDiagonal):
    """:class:`~.gauss_newton.GaussNewtonDiagonal` with the statistic estimated, not computed exactly."""

    statistic: str = "gauss_newton_hutchinson"
