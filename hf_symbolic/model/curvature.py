"""Symbolic curvature products: gradient, Gauss-Newton and Hessian products.

All graphs take and return *flat* vectors over every parameter (slicing and
reshaping happen inside the graph), so the Python driver never concatenates
arrays per product.

Gauss-Newton product (Schraudolph 2002; Martens 2010, §20.5 of Martens &
Sutskever 2012), with the network split at ``s`` and the loss ``L(s)``::

    Jv   = pushforward of s along v                (forward mode)
    HJv  = d/ds <dL/ds, Jv>  with Jv held fixed    (H_L Jv, the loss Hessian at s)
    Gv   = pullback of HJv through s               (J^T H_L J v)

Structural damping (Martens & Sutskever 2011) adds the Gauss-Newton product of
a distance ``D`` between the hidden units ``h`` and their current values,
split at the pre-activation ``ha``::

    D(theta) = sum over units and steps of CE(h0, h) / number of cases
    CE(h0, h) = -(h0 log h + (1 - h0) log(1 - h)),  h0 = h held constant

``h`` must lie in (0, 1): sigmoid units, or tanh units mapped to ``(h + 1) / 2``.
Tanh units given as they are (``h = tanh(x)``, values in (-1, 1)) are mapped
here, as ``sigmoid(2 x)`` (the same value, with a finite curvature where the
unit saturates). The number of cases is the size of the second-to-last axis of
``h`` (``(cases, units)`` or ``(time, cases, units)``), so ``D`` is on the scale
of a cost averaged over cases.

The curvature of ``D`` at ``ha`` is ``u'(ha)**2 / (u (1 - u))`` per unit,
``u = h(ha)``, which tends to 0 as a sigmoid or tanh unit saturates; where the
unit has rounded to exactly 0 or 1 its formula is ``0 / 0``, and the term takes
its limit, 0, there (and a zero structural coefficient gives exactly 0).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

log = logging.getLogger(__name__)

__all__ = ["CurvatureGraphs", "build_curvature_graphs", "gauss_newton_graph", "structural_damping_distance"]


def _pushforward(f, wrt, tangents):
    """Jacobian-vector products ``J_f(wrt) · tangents`` for one output or a list of outputs.

    Uses the ops' own R-operators (one forward sweep carrying primal and tangent
    values: for ``scan``, a single loop); when some op lacks one, falls back to
    PyTensor's double-pullback construction, which works through every op
    that has a gradient.
    """
    from pytensor.gradient import pushforward

    try:
        return pushforward(f, wrt, tangents, disconnected_outputs="ignore", use_op_pushforward=True)
    except (NotImplementedError, TypeError, ValueError, AttributeError) as exc:
        log.debug("op-level pushforward unavailable (%s); using the double-pullback construction", exc)
        return pushforward(f, wrt, tangents, disconnected_outputs="ignore")


def _elementwise_in(y, x) -> bool:
    """True when every value of ``y`` is a function of the same-position value of ``x`` alone.

    Holds when every op between ``x`` and ``y`` is elementwise (``Elemwise``,
    the identity-like ops of :mod:`pytensor.gradient`, ``DimShuffle`` that
    only adds or drops broadcastable axes) and ``y`` has ``x``'s broadcast
    pattern; ops that read only ``x``'s shape do not count. Conservative: any
    other op on the way answers False.
    """
    from pytensor.gradient import DisconnectedGrad, ZeroGrad
    from pytensor.graph.traversal import ancestors
    from pytensor.tensor.elemwise import DimShuffle, Elemwise
    from pytensor.tensor.shape import Shape, Shape_i

    if getattr(y, "ndim", None) != x.ndim or y.type.broadcastable != x.type.broadcastable:
        return False
    shape_ops = (Shape, Shape_i)
    memo = {}

    def depends(var):
        """Whether ``var``'s values depend on ``x``'s values; False for a non-elementwise way there."""
        if var in memo:
            return memo[var]
        memo[var] = False  # cycles cannot occur; this is only the default while computing
        if var is x:
            result = True
        elif var.owner is None or isinstance(var.owner.op, shape_ops):
            result = False
        else:
            result = any(depends(i) for i in var.owner.inputs)
            if result:
                op = var.owner.op
                ok = isinstance(op, (Elemwise, DisconnectedGrad, ZeroGrad))
                if isinstance(op, DimShuffle):
                    kept = [d for d in op.new_order if d != "x"]
                    ok = kept == sorted(kept)
                if not ok:
                    raise _NotElementwise
        memo[var] = result
        return result

    if x not in set(ancestors([y])):
        return False
    try:
        return depends(y)
    except _NotElementwise:
        return False


class _NotElementwise(Exception):
    pass


def _loss_hessian_product(cost, split, jv):
    """``H_L Jv``: the derivative of ``<dL/ds, Jv>`` with ``Jv`` held fixed.

    When ``dL/ds`` is elementwise in ``s`` (a sum of per-element losses, as
    the usual output losses and the structural-damping distance are),
    ``H_L`` is diagonal and the product is ``diag(H_L) * Jv``, with the
    diagonal a graph of ``s`` alone: :func:`~hf_symbolic.graph.partial_eval.partial_eval`
    then stores it once per update instead of re-evaluating the loss's second
    derivative, term by term, on every product.
    """
    import pytensor.tensor as pt
    from pytensor.gradient import disconnected_grad, grad

    jv = disconnected_grad(jv)
    dl_ds = grad(cost, split, disconnected_inputs="ignore")
    if _elementwise_in(dl_ds, split):
        diagonal = grad(pt.sum(dl_ds), split, disconnected_inputs="ignore")
        return disconnected_grad(disconnected_grad(diagonal) * jv)
    return disconnected_grad(grad(pt.sum(dl_ds * jv), split, disconnected_inputs="ignore"))


def gauss_newton_graph(terms, p, v_parts):
    """Return ``sum_k c_k J_kᵀ H_k J_k v`` as parameter-shaped pieces.

    Parameters
    ----------
    terms : list of (cost, split, coefficient[, saturating])
        Each term is a loss convex in its split; ``coefficient`` is a scalar
        variable or None (= 1). With ``saturating`` (default False) the
        non-finite entries of ``coefficient * H Jv`` are taken as 0: the limit
        of the structural-damping curvature at saturated units, where it is
        ``0 / 0`` (see the module docstring); a zero coefficient then drops
        the term instead of giving ``0 * nan``. The model's loss at ``s`` is
        one term, structural damping at ``ha`` another.
    p : list of shared variables
    v_parts : list of Variables shaped like ``p``

    All forward products are taken in one pushforward and all backward
    products in one pullback, so a recurrent network runs one forward and one
    backward loop per product whatever the number of terms.
    """
    import pytensor.tensor as pt
    from pytensor.gradient import disconnected_grad, grad

    splits = [term[1] for term in terms]
    jvs = _pushforward(splits, p, v_parts)
    total = 0
    for (cost, split, coef, *saturating), jv in zip(terms, jvs):
        hjv = _loss_hessian_product(cost, split, jv)
        if coef is not None:
            hjv = coef.astype(hjv.dtype) * hjv
        if saturating and saturating[0]:
            hjv = pt.switch(pt.isfinite(hjv), hjv, 0)
        # <cotangent, split> summed over the terms, the cotangents held fixed: its gradient is the
        # sum of the pullbacks. (A multi-output pullback would be wrong here: a cotangent given for
        # ha replaces, instead of adding to, what flows into ha from s when s depends on ha.)
        total = total + pt.sum(disconnected_grad(hjv) * split)
    return grad(total, p, disconnected_inputs="ignore")


def structural_damping_distance(h, ha=None):
    """The distance ``D`` of structural damping (see the module docstring); ``ha`` is its split."""
    import pytensor.scalar as ps
    import pytensor.tensor as pt
    from pytensor.gradient import disconnected_grad
    from pytensor.tensor.elemwise import Elemwise

    if h.owner is not None and isinstance(h.owner.op, Elemwise) and isinstance(h.owner.op.scalar_op, ps.Tanh):
        # tanh units in (-1, 1): (h + 1) / 2, as sigmoid(2 x) unless D is split at h itself
        h = (h + 1) / 2 if ha is None or ha is h else pt.sigmoid(2 * h.owner.inputs[0])
    h0 = disconnected_grad(h)
    ce = -(h0 * pt.log(h) + (1.0 - h0) * pt.log1p(-h))
    n_cases = h.shape[h.ndim - 2] if h.ndim >= 2 else 1
    return pt.sum(ce) / pt.cast(n_cases, h.dtype)


@dataclass(frozen=True)
class CurvatureGraphs:
    """Symbolic outputs over the flat vector ``v`` and the structural coefficient ``coefficient``."""

    v: object
    coefficient: object
    gradient: object
    costs: tuple
    gauss_newton: object
    structural: object
    hessian: object


def build_curvature_graphs(spec, layout) -> CurvatureGraphs:
    """Build every graph the optimizer compiles, for a validated :class:`~hf_symbolic.model.checks.ModelSpec`."""
    import pytensor.tensor as pt
    from pytensor.gradient import grad

    p = list(spec.p)
    cost = spec.costs[0]
    v = pt.vector("v", dtype=layout.dtype)
    coefficient = pt.scalar("structural_coefficient", dtype=layout.dtype)
    # Tangents get the parameters' own (symbolic) shapes: a constant-shaped reshape has a more
    # specific static type than the shared variable's, which ``Scan``'s op-level pushforward refuses
    # (it would fall back to the slower double-pullback construction, whose tangent loop carries
    # the direction as recurrent states).
    v_parts = [pt.reshape(piece.astype(x.dtype).ravel(), x.shape, ndim=x.ndim)
               for piece, x in zip(layout.symbolic_split(v), p)]

    g_parts = grad(cost, p)
    gradient = layout.symbolic_concat([gi.astype(layout.dtype) for gi in g_parts])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        gv_parts = gauss_newton_graph([(cost, spec.s, None)], p, v_parts)
        structural = None
        if spec.h is not None:
            distance = structural_damping_distance(spec.h, spec.ha)
            sd_parts = gauss_newton_graph([(distance, spec.ha, None, True)], p, v_parts)
            structural = layout.symbolic_concat([x.astype(layout.dtype) for x in sd_parts])
            gv_parts = gauss_newton_graph([(cost, spec.s, None), (distance, spec.ha, coefficient, True)], p, v_parts)
        gauss_newton = layout.symbolic_concat([x.astype(layout.dtype) for x in gv_parts])

        gdotv = pt.add(*[pt.sum(gi * vi) for gi, vi in zip(g_parts, v_parts)]) if len(p) > 1 else pt.sum(g_parts[0] * v_parts[0])
        hv_parts = grad(gdotv, p)
        hessian = layout.symbolic_concat([x.astype(layout.dtype) for x in hv_parts])

    return CurvatureGraphs(v, coefficient, gradient, tuple(spec.costs), gauss_newton, structural, hessian)
