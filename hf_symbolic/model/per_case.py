"""The Gauss-Newton diagonal estimated case by case (curvature propagation with per-case squares).

``diag(G) = Σ_i diag(J_iᵀ H_i J_i)`` over the cases ``i`` of the CG batch
(``H_L`` carrying the cost's ``1/N``). With one Rademacher vector ``ξ`` over
the split and ``c = H_L^{1/2} ξ`` (``H_L`` diagonal: sigmoid cross-entropy,
squared error, ...), ``u_i = J_iᵀ c_i`` has ``E[u_i ⊙ u_i] = diag(J_iᵀ H_i
J_i)`` (Martens, Sutskever & Swersky 2012, "Estimating the Hessian by
back-propagating curvature"). :mod:`hf_symbolic.model.statistics` squares the
batch's sum ``Σ_i u_i`` (the cross terms vanish only on average: a relative
standard deviation of up to ``sqrt(2)`` per draw, whatever the batch size);
this statistic sums the per-case squares ``Σ_i u_i ⊙ u_i`` instead, an
average over the batch's cases with the variance of one case divided by
about ``N``, from one draw.

Per-case squares cost nothing extra for a dense layer ``z = dot(a, W) (+ b)``
whose rows are the cases (:func:`hf_symbolic.model.kronecker.dense_layers`):
``u_i`` of ``W`` is ``a_i ⊗ δ_i`` with ``δ = ∂<c, s>/∂z``, so ``Σ_i u_i ⊙ u_i
= (a ⊙ a)ᵀ (δ ⊙ δ)``, one product of the size of the weight gradient's, and
``Σ_i δ_i ⊙ δ_i`` for the bias. A layer counts only when its number of rows
equals the batch's number of cases (checked on every batch: an RNN's output
layer applied to all time steps at once has more rows than cases); every
other parameter gets the batch-sum estimate ``(Jᵀ c)²`` of the same draw.
When ``H_L`` is not diagonal (softmax cross-entropy, a split that is not per
element), the symmetric form ``(Jᵀ H_L ξ) ⊙ (Jᵀ ξ)`` is used the same way,
per case (``(a ⊙ a)ᵀ (δ₁ ⊙ δ₂)``); a draw may then be negative somewhere and
the preconditioner clips it at zero.

Everything comes from one forward and one backward pass over the batch, the
cost of one gradient. The draw is seeded like the other statistics' (a seed
and a digest of θ and the batch), so a resumed run repeats it.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["PER_CASE_SEED", "per_case_graph", "per_case_diagonal", "rows_graph"]

#: Default seed of the draws (combined with a digest of θ and the batch).
PER_CASE_SEED = 20122

#: Name prefix of the compiled statistic; the suffix lists the dense layers treated per case.
FUNCTION = "gauss_newton_per_case"


def rows_graph(model):
    """``(inputs, outputs)``: the number of rows of every dense layer's input (shapes only, no pass)."""
    from hf_symbolic.model.kronecker import _model_layers

    layers, _ = _model_layers(model)
    return list(model.inputs), [layer.a.shape[0] for layer in layers]


def per_case_graph(model, per_case):
    """``([ξ, *inputs], estimate)`` with the dense layers whose indices are in ``per_case`` squared per row."""
    import pytensor.tensor as pt

    from hf_symbolic.model.kronecker import _model_layers, layer_pullbacks

    layout = model.layout
    all_layers, _ = _model_layers(model)
    layers = [layer for k, layer in enumerate(all_layers) if k in per_case]
    xi, inputs, deltas, others, other_pairs = layer_pullbacks(model, layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parts = {}
        for layer, a, (d1, d2) in zip(layers, inputs, deltas):
            dd = d1 * d1 if d1 is d2 else d1 * d2
            parts[layer.w] = pt.dot((a * a).T, dd)  # Σ_i (a_i ⊗ δ_i)², the per-case squares
            if layer.b is not None:
                parts[layer.b] = pt.sum(dd, axis=0)
        for k, (g1, g2) in zip(others, other_pairs):
            parts[k] = g1 * g1 if g1 is g2 else g1 * g2  # (Jᵀ c)²: the batch sum, squared
        out = layout.symbolic_concat([parts[k].astype(layout.dtype) for k in range(len(model.p))])
    return [xi, *model.inputs], out


def function_name(per_case) -> str:
    """The :meth:`Model._function` name of the statistic treating the dense layers ``per_case`` per row."""
    return FUNCTION + ":" + ",".join(map(str, sorted(per_case)))


def parse_name(name):
    """The dense-layer indices of a :func:`function_name`."""
    tail = name[len(FUNCTION) + 1:]
    return frozenset(int(k) for k in tail.split(",") if k)


def per_case_diagonal(model, batch, seed=None):
    """The estimate on a checked batch, one Rademacher draw seeded by (seed, θ, batch); the model's dtype."""
    from hf_symbolic.model.statistics import case_count, rademacher, rademacher_draws

    n = case_count(batch, model.case_axes)
    rows = model._function("dense_rows")(*batch)
    per_case = frozenset(k for k, r in enumerate(rows) if int(r) == n)
    rng = rademacher(PER_CASE_SEED if seed is None else seed, model.get_flat(), batch)
    (xi,) = rademacher_draws(rng, model, batch, 1)
    return np.asarray(model._function(function_name(per_case))(xi, *batch))
