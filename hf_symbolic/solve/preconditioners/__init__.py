"""Diagonal preconditioners for CG, behind one protocol and one registration table.

A preconditioner names the curvature *statistic* it is built from (a vector
with one entry per parameter that an evaluator computes on the CG batch, e.g.
``"squared_gradients"``, the mean of squared per-case gradients) and turns
that statistic and the current damping ``λ`` into the diagonal ``M`` that CG
divides the residual by. Everything here is numpy only.

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
from hf_symbolic.solve.preconditioners.martens import MartensDiagonal

__all__ = ["Preconditioner", "REGISTRY", "make_preconditioner"]


class Preconditioner(Protocol):
    """What CG's diagonal preconditioner must provide."""

    #: The statistic (evaluated per parameter on the CG batch) it is built from.
    statistic: str

    def diagonal(self, statistic: np.ndarray, damping: float) -> np.ndarray:
        """The diagonal ``M`` (positive, one entry per parameter) for damping ``λ``."""
        ...


#: Name -> class; ``True`` (the 2012 ``preconditioner=True``) means ``"martens"``.
REGISTRY = {
    "martens": MartensDiagonal,
    "gauss_newton_diagonal": GaussNewtonDiagonal,
    "gauss_newton_hutchinson": GaussNewtonHutchinson,
}


def make_preconditioner(spec, **options):
    """The preconditioner that ``spec`` names, or None.

    Parameters
    ----------
    spec : bool, str or Preconditioner
        False/None: none; True: Martens' diagonal; a name in :data:`REGISTRY`;
        or an object with ``statistic`` and ``diagonal``.
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
    if hasattr(spec, "statistic") and callable(getattr(spec, "diagonal", None)):
        return spec
    raise ArgumentError(f"preconditioner={spec!r} is invalid: expected True, False, a name in {sorted(REGISTRY)} "
                        "or an object with 'statistic' and 'diagonal'")
