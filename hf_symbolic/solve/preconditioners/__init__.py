"""Preconditioners for CG, behind one protocol and one registration table.

A preconditioner names the curvature *statistic* it is built from (a flat
vector that an evaluator computes on the CG batch and averages over batches,
e.g. ``"squared_gradients"``, the mean of squared per-case gradients) and
turns that statistic and the current damping ``λ`` into what CG uses: the
diagonal ``M`` that CG divides the residual by (``diagonal``), or a callable
applying ``M⁻¹`` (``inverse``, for block preconditioners such as K-FAC).
One that ``needs_structure`` is given the model's dense layers first
(``with_structure``). Everything here is numpy only; :func:`operator` gives
CG's ``M`` for either kind.

Adding one is one new module with a class following :class:`Preconditioner`
and one line in :data:`REGISTRY`.

Examples
--------
>>> import numpy as np
>>> pc = make_preconditioner("martens", exponent=0.75)
>>> pc.statistic
'squared_gradients'
>>> pc.diagonal(np.array([0.0, 15.0]), 1.0).tolist()
[1.0, 8.0]
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hf_symbolic.errors import ArgumentError
from hf_symbolic.solve.preconditioners.gauss_newton import GaussNewtonDiagonal
from hf_symbolic.solve.preconditioners.hutchinson import GaussNewtonHutchinson
from hf_symbolic.solve.preconditioners.kfac import KroneckerFactored
from hf_symbolic.solve.preconditioners.martens import MartensDiagonal
from hf_symbolic.solve.preconditioners.per_case import GaussNewtonPerCase

__all__ = ["KroneckerFactored", "Preconditioner", "REGISTRY", "make_preconditioner", "operator"]


class Preconditioner(Protocol):
    """What a CG preconditioner must provide: ``statistic`` and one of ``diagonal`` or ``inverse``."""

    #: The statistic (evaluated on the CG batch) it is built from.
    statistic: str

    def diagonal(self, statistic: np.ndarray, damping: float) -> np.ndarray:
        """The diagonal ``M`` (positive, one entry per parameter) for damping ``λ``."""
        ...


def operator(pc, statistic, damping, dtype):
    """CG's ``M`` from preconditioner ``pc``: a diagonal array of ``dtype``, or the callable ``r -> M⁻¹ r``."""
    if callable(getattr(pc, "inverse", None)):
        return pc.inverse(statistic, damping)
    return np.asarray(pc.diagonal(statistic, damping)).astype(dtype)


#: Name -> class; ``True`` (the 2012 ``preconditioner=True``) means ``"martens"``.
REGISTRY = {
    "martens": MartensDiagonal,
    "gauss_newton_diagonal": GaussNewtonDiagonal,
    "gauss_newton_hutchinson": GaussNewtonHutchinson,
    "gauss_newton_per_case": GaussNewtonPerCase,
    "kfac": KroneckerFactored,
}


def make_preconditioner(spec, **options):
    """The preconditioner that ``spec`` names, or None.

    Parameters
    ----------
    spec : bool, str or Preconditioner
        False/None: none; True: Martens' diagonal; a name in :data:`REGISTRY`;
        or an object with ``statistic`` and ``diagonal`` (or ``inverse``).
    **options
        Passed to the registered class (those it does not take are ignored:
        ``exponent`` is the ``preconditioner_exponent`` of every diagonal here).
    """
    if spec is None or spec is False:
        return None
    if spec is True:
        spec = "martens"
    if isinstance(spec, str):
        cls = REGISTRY.get(spec)
        if cls is None:
            raise ArgumentError(f"preconditioner={spec!r} is unknown: expected True, False or one of {sorted(REGISTRY)}")
        return cls.from_options(**options)
    if hasattr(spec, "statistic") and (callable(getattr(spec, "diagonal", None))
                                       or callable(getattr(spec, "inverse", None))):
        return spec
    raise ArgumentError(f"preconditioner={spec!r} is invalid: expected True, False, a name in {sorted(REGISTRY)} "
                        "or an object with 'statistic' and 'diagonal' (or 'inverse')")
