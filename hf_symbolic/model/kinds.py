"""Curvature kinds as objects: which matrix CG sees, which functions it needs compiled.

:data:`KINDS` maps the ``curvature=`` names of :class:`~hf_symbolic.model.Model`
to these objects; the model, the evaluators and the workers ask the kind
instead of comparing strings.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CurvatureKind", "GaussNewton", "Hessian", "KINDS"]


class CurvatureKind:
    """The curvature matrix of a model: ``product(model, batch, c)`` gives ``v -> (C + c·S) v``.

    ``C`` is the kind's matrix and ``S`` the structural-damping term (zero
    without ``h``); :meth:`plain_product` is ``C v`` alone (the quadratic model
    of the reduction ratio). :attr:`functions` names what to compile up front.
    """

    name = ""
    functions: tuple = ()

    def product(self, model, batch, coefficient):
        raise NotImplementedError

    def plain_product(self, model, v, batch):
        raise NotImplementedError

    def functions_needed(self, model) -> tuple:
        return ("gradient", "cost", *self.functions)

    def __repr__(self):
        return f"{type(self).__name__}()"


class GaussNewton(CurvatureKind):
    """``G = Jᵀ H_L J`` at the split ``s`` (Schraudolph 2002; Martens 2010): PSD when the loss is convex in ``s``."""

    name = "gauss-newton"

    def product(self, model, batch, coefficient):
        return model._gv_function(batch, coefficient)

    def plain_product(self, model, v, batch):
        return model.gauss_newton_product(v, batch)

    def functions_needed(self, model):
        return ("gradient", "cost", "gauss_newton_cached" if model.cache_forward else "gauss_newton")


class Hessian(CurvatureKind):
    """The exact Hessian of ``costs[0]`` (Pearlmutter 1994); may be indefinite, CG stops on negative curvature."""

    name = "hessian"
    functions = ("hessian",)

    def product(self, model, batch, coefficient):
        hv = model._function("hessian")
        if not coefficient:
            return lambda v: np.asarray(hv(v, *batch))
        sd = model._function("structural")
        cc = np.asarray(coefficient, dtype=model.layout.dtype)
        return lambda v: np.asarray(hv(v, *batch)) + cc * np.asarray(sd(v, *batch))

    def plain_product(self, model, v, batch):
        return model.hessian_product(v, batch)


#: ``curvature=`` name -> kind.
KINDS = {k.name: k for k in (GaussNewton(), Hessian())}
