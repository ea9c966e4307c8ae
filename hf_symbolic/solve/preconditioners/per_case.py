"""The Gauss-Newton diagonal preconditioner from a per-case curvature-propagation estimate.

Same ``M = (diag(G) + λ)^α`` as :mod:`.gauss_newton`, with ``diag(G)``
estimated from one Rademacher draw whose contributions are squared case by
case in the dense layers (:mod:`hf_symbolic.model.per_case`): about the cost
of one gradient on the CG batch, with a variance near that of one draw per
case, where :mod:`.hutchinson` squares the batch's sum and needs several
draws. Negative entries (possible only for non-diagonal loss Hessians) are
clipped to zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_symbolic.solve.preconditioners.gauss_newton import GaussNewtonDiagonal

__all__ = ["GaussNewtonPerCase"]


@dataclass(frozen=True)
class GaussNewtonPerCase(GaussNewtonDiagonal):
    """:class:`~.gauss_newton.GaussNewtonDiagonal` with the per-case estimate as the statistic."""

    statistic: str = "gauss_newton_per_case"
