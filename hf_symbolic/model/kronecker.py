"""Kronecker factors of the Gauss-Newton matrix for dense layers (K-FAC, Martens & Grosse 2015).

A *dense layer* of the split's graph is a 2-D parameter ``W`` whose only use
on the way to the split ``s`` is ``z = dot(a, W)`` with a 2-D input ``a``
(rows are cases), optionally followed by ``z + b`` with a 1-D parameter ``b``
used nowhere else on that way. Its block of ``G = Jᵀ H_L J`` (``W`` flattened
row by row, ``b`` as an extra row of ones in ``a``) is approximated by a
Kronecker product ``A ⊗ S`` with

- ``A = ãᵀ ã / N``, ``ã = [a, 1]`` the layer's inputs (with the bias column),
  averaged over the ``N`` rows;
- ``S = δᵀ δ`` with ``δ = ∂<c, s>/∂z`` the backpropagated signal of one
  random vector ``c = H_L^{1/2} ξ`` over the split, ``ξ`` Rademacher, so that
  ``E_ξ[δ_iᵀ δ_i]`` is row ``i``'s exact ``J_zᵀ H_L J_z`` (``H_L`` carries the
  cost's ``1/N``, so ``S`` is summed, not averaged).

Parameters outside every dense layer (recurrent weights inside a ``scan``, a
shared weight, ...) get the Hutchinson estimate of their Gauss-Newton
diagonal from the same draw (``(Jᵀ c)²``). Everything comes from one forward
and one backward pass over the CG batch. The statistic is one flat vector
(the diagonal of the other parameters, then ``A`` and ``S`` of each layer,
row-major), so every evaluator averages it over batches and shards like any
other statistic. When ``H_L`` is diagonal (sigmoid cross-entropy, squared
error, ...: ``dL/ds`` elementwise in ``s``) that is one pullback; otherwise
(softmax cross-entropy, a split that is not per element) two pullbacks of
``ξ`` and of ``H_L ξ`` give the unbiased symmetrized ``S = (δ₁ᵀδ₂ + δ₂ᵀδ₁)/2``
and diagonal ``(Jᵀ H_L ξ) ⊙ (Jᵀ ξ)``, whose negative eigenvalues and entries
the preconditioner clips to zero.

The draws are seeded like those of :mod:`hf_symbolic.model.statistics`: by
a seed and a digest of θ and the batch, so a resumed run repeats them.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["DenseLayer", "dense_layers", "kronecker_structure", "kronecker_graph", "kronecker_factors",
           "layer_pullbacks", "KRONECKER_SEED"]

#: Default seed of the draws (combined with a digest of θ and the batch).
KRONECKER_SEED = 20151


class DenseLayer(NamedTuple):
    """One dense layer found in the graph: parameter indices (into ``p``), its input and pre-activation."""

    w: int
    b: int | None
    a: object  # symbolic input of the dot, (rows, n_in)
    z: object  # symbolic pre-activation, dot(a, W) (+ b)


def _graph_nodes(outputs):
    from pytensor.graph.traversal import graph_inputs, io_toposort

    return io_toposort(list(graph_inputs(outputs)), outputs)


def dense_layers(p, split):
    """The :class:`DenseLayer` records of the parameters ``p`` on the way to ``split``, in the order of ``p``."""
    from pytensor.tensor.elemwise import DimShuffle, Elemwise
    from pytensor.scalar import Add
    from pytensor.tensor.math import Dot

    nodes = _graph_nodes([split])
    users = {}
    for node in nodes:
        for i, x in enumerate(node.inputs):
            users.setdefault(x, []).append((node, i))
    index = {x: k for k, x in enumerate(p)}
    layers = []
    for k, w in enumerate(p):
        uses = users.get(w, [])
        if w.ndim != 2 or len(uses) != 1:
            continue
        node, pos = uses[0]
        if not isinstance(node.op, Dot) or pos != 1 or node.inputs[0].ndim != 2:
            continue
        z = node.outputs[0]
        b = None
        zu = users.get(z, [])
        if len(zu) == 1 and isinstance(zu[0][0].op, Elemwise) and isinstance(zu[0][0].op.scalar_op, Add) \
                and len(zu[0][0].inputs) == 2:
            add = zu[0][0]
            other = add.inputs[1 - zu[0][1]]
            if other.owner is not None and isinstance(other.owner.op, DimShuffle) \
                    and tuple(other.owner.op.new_order) == ("x", 0):
                cand = other.owner.inputs[0]
                if cand in index and cand.ndim == 1 and len(users.get(cand, [])) == 1 \
                        and len(users.get(other, [])) == 1:
                    b, z = index[cand], add.outputs[0]
        layers.append(DenseLayer(w=k, b=b, a=node.inputs[0], z=z))
    return layers


def _model_layers(model):
    """``(layers, covered)``: the model's dense layers (a bias of the wrong length left out) and their parameters."""
    shapes = model.layout.shapes
    layers = [layer if layer.b is None or shapes[layer.b] == (shapes[layer.w][1],) else layer._replace(b=None)
              for layer in dense_layers(model.p, model._spec.s)]
    covered = {k for layer in layers for k in (layer.w, layer.b) if k is not None}
    return layers, covered


def kronecker_structure(model):
    """``(blocks, other)`` for :class:`hf_symbolic.solve.preconditioners.KroneckerFactored`.

    ``blocks``: one ``(w_offset, n_in, n_out, b_offset or None)`` per dense
    layer (flat offsets of the layout); ``other``: the flat indices of every
    other parameter entry, ascending.
    """
    layout = model.layout
    offs = layout.offsets
    layers, covered = _model_layers(model)
    blocks = tuple((offs[layer.w], *map(int, layout.shapes[layer.w]), None if layer.b is None else offs[layer.b])
                   for layer in layers)
    other = [np.arange(offs[k], offs[k + 1]) for k in range(len(layout.shapes)) if k not in covered]
    other = np.concatenate(other) if other else np.zeros(0, dtype=np.int64)
    return blocks, other.astype(np.int64)


def layer_pullbacks(model, layers):
    """One draw's pullbacks for the dense ``layers`` and every parameter outside them.

    Returns ``(ξ, inputs, layer_pairs, others, other_pairs)``: the symbolic
    draw over the split, each layer's input ``a``, each layer's pair ``(δ₁,
    δ₂)`` of signals at its pre-activation, the indices (into ``p``) of the
    parameters outside the layers and their pairs, all from
    :func:`hf_symbolic.model.statistics.draw_pullbacks` on a fresh copy of the
    graph (one variable for both members when ``H_L`` is diagonal).
    """
    import pytensor.tensor as pt
    from pytensor.graph.replace import clone_replace

    from hf_symbolic.model.statistics import draw_pullbacks

    spec = model._spec
    covered = {k for layer in layers for k in (layer.w, layer.b) if k is not None}
    inner = [x for layer in layers for x in (layer.a, layer.z)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        outs = clone_replace([spec.s, spec.costs[0], *inner], clone_inner_graphs=True)
        s, cost, inner = outs[0], outs[1], outs[2:]
        xi = pt.tensor("xi", dtype=s.dtype, shape=(None,) * s.ndim)
        others = [k for k in range(len(model.p)) if k not in covered]
        pairs = draw_pullbacks(cost, s, xi, [*inner[1::2], *(model.p[k] for k in others)])
    return xi, inner[0::2], pairs[:len(layers)], others, pairs[len(layers):]


def kronecker_graph(model):
    """``(inputs, output)``: ``[ξ, *model.inputs]`` and the flat statistic for the draw ``ξ``."""
    import pytensor.tensor as pt

    layout = model.layout
    layers, _ = _model_layers(model)
    # H_L = D²: one pullback of D ξ; otherwise E[(Jᵀ H_L ξ)(Jᵀ ξ)ᵀ] = Jᵀ H_L J, symmetrized below
    xi, inputs, deltas, _, other_pairs = layer_pullbacks(model, layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parts = [(g * h).ravel().astype(layout.dtype) for g, h in other_pairs]
        for layer, a, (d1, d2) in zip(layers, inputs, deltas):
            if layer.b is not None:
                a = pt.concatenate([a, pt.ones((a.shape[0], 1), dtype=a.dtype)], axis=1)
            n = pt.cast(a.shape[0], a.dtype)
            parts.append((pt.dot(a.T, a) / n).ravel().astype(layout.dtype))
            sd = pt.dot(d1.T, d1) if d1 is d2 else (pt.dot(d1.T, d2) + pt.dot(d2.T, d1)) / 2
            parts.append(sd.ravel().astype(layout.dtype))
        out = pt.concatenate(parts) if parts else pt.zeros((0,), dtype=layout.dtype)
    return [xi, *model.inputs], out


def kronecker_factors(model, batch, seed=None):
    """The flat Kronecker statistic on a checked batch, one Rademacher draw seeded by (seed, θ, batch)."""
    from hf_symbolic.model.statistics import rademacher, rademacher_draws

    rng = rademacher(KRONECKER_SEED if seed is None else seed, model.get_flat(), batch)
    (xi,) = rademacher_draws(rng, model, batch, 1)
    return np.asarray(model._function("kronecker_factors")(xi, *batch))
