"""Graphs and drivers of the Gauss-Newton diagonal statistics used by preconditioners.

``G = Jᵀ H_L J`` with ``J = ds/dθ`` at the split ``s`` and ``H_L`` the Hessian
of ``costs[0]`` with respect to ``s`` (see :mod:`hf_symbolic.model.curvature`).
Two statistics give its diagonal, one entry per parameter, on the scale of
``G`` (a cost averaged over cases):

``gauss_newton_diagonal`` (exact)
    Per case ``i`` (a one-case batch along ``case_axes``), the Jacobian ``J_i``
    of the case's split (one pullback per split entry, in one graph) and the
    Hessian ``H_i`` of the case's cost at its split; ``diag(J_iᵀ H_i J_i) =
    Σ_a J_i[a] ⊙ (H_i J_i)[a]``, averaged over cases. When ``dL/ds`` is
    elementwise in ``s`` (sigmoid cross-entropy, squared error, ...), ``H_i``
    is diagonal and only its diagonal is built. This equals the diagonal of
    the batch's ``G`` whenever ``costs[0]`` on a batch is the mean of its
    one-case values (the same assumption as the per-case squared gradients of
    Martens' preconditioner; terms that do not depend on the data, such as a
    weight penalty, are fine). Cost: ``N · dim(s_i)`` pullbacks of one case,
    memory ``dim(s_i) × dim(θ)``; for small models and references.

``gauss_newton_hutchinson`` (unbiased estimate, all cases at once)
    With a Rademacher vector ``z`` over the whole split of the batch:
    ``E_z[(Jᵀ D z)²] = diag(G)`` when ``H_L = D²`` is diagonal (curvature
    propagation, Martens, Sutskever & Swersky 2012: one pullback per sample,
    never negative); otherwise (e.g. softmax cross-entropy, or a split that
    is not per element) the symmetric form ``E_z[(Jᵀ H_L z) ⊙ (Jᵀ z)] =
    diag(G)``, two pullbacks per sample, which may be negative for a single
    draw (preconditioners clip at zero). :data:`HUTCHINSON_SAMPLES` draws per
    minibatch, averaged.

Random draws
------------
The vectors ``z`` come from ``numpy.random.default_rng(SeedSequence([seed,
*digest]))`` where ``digest`` is a BLAKE2 hash of the parameters and of the
minibatch's arrays (``seed`` defaults to :data:`HUTCHINSON_SEED`). So the
estimate is a deterministic function of (seed, θ, batch): the same update of
a resumed run draws the same ``z`` as the uninterrupted run, with no random
state in the checkpoint; successive updates (θ changes) draw fresh vectors
even on a fixed CG batch. An evaluator that splits a batch into shards of
cases draws per shard (another sample of the same distribution than the
serial evaluator's, still deterministic).
"""

from __future__ import annotations

import hashlib
import logging
import warnings

import numpy as np

__all__ = ["HUTCHINSON_SAMPLES", "HUTCHINSON_SEED", "exact_diagonal", "exact_diagonal_graph", "hutchinson_diagonal",
           "hutchinson_graph", "rademacher", "rademacher_draws", "statistic_graph"]

log = logging.getLogger(__name__)

#: Rademacher draws per minibatch of :meth:`~hf_symbolic.model.Model.gauss_newton_hutchinson`
#: (each entry's relative standard deviation is at most ``sqrt(2 / samples)`` for a diagonal ``H_L``).
HUTCHINSON_SAMPLES = 8

#: Default seed of the Hutchinson draws (combined with a digest of θ and the batch).
HUTCHINSON_SEED = 20121


def _loss_terms(cost, split):
    """``(dL/ds, diag(H_L) or None)``: the diagonal only when ``dL/ds`` is elementwise in ``s``."""
    import pytensor.tensor as pt
    from pytensor.gradient import grad

    from hf_symbolic.model.curvature import _elementwise_in

    dl_ds = grad(cost, split, disconnected_inputs="ignore")
    if _elementwise_in(dl_ds, split):
        return dl_ds, grad(pt.sum(dl_ds), split, disconnected_inputs="ignore")
    return dl_ds, None


def draw_pullbacks(cost, split, xi, wrt):
    """``[(u, w), ...]`` per variable of ``wrt`` with ``E_ξ[u ⊙ w]`` the Gauss-Newton diagonal of the draw ``ξ``.

    ``H_L = D²`` diagonal: one pullback of ``c = D ξ``, ``u`` is ``w`` (the
    same variable). Otherwise ``u = Jᵀ H_L ξ`` and ``w = Jᵀ ξ``, two pullbacks.
    """
    import pytensor.tensor as pt
    from pytensor.gradient import disconnected_grad, grad

    dl_ds, h_diag = _loss_terms(cost, split)
    if h_diag is not None:
        c = disconnected_grad(pt.sqrt(pt.maximum(h_diag, 0)) * xi)
        return [(g, g) for g in grad(pt.sum(c * split), wrt, disconnected_inputs="ignore")]
    hxi = disconnected_grad(grad(pt.sum(dl_ds * disconnected_grad(xi)), split, disconnected_inputs="ignore"))
    g1 = grad(pt.sum(hxi * split), wrt, disconnected_inputs="ignore")
    g2 = grad(pt.sum(disconnected_grad(xi) * split), wrt, disconnected_inputs="ignore")
    return list(zip(g1, g2))


def exact_diagonal_graph(p, split, cost, layout):
    """Flat ``diag(Jᵀ H_L J)`` for a graph whose split is small (one case): Jacobian rows in one graph.

    The rows are pullbacks batched by vectorization (one pass for all rows);
    for graphs PyTensor cannot vectorize (e.g. some ``Scan`` bodies), a loop
    over the rows.
    """
    try:
        return _exact_diagonal_graph(p, split, cost, layout, vectorize=True)
    except (NotImplementedError, TypeError, ValueError, AttributeError) as exc:
        log.debug("vectorized Jacobian unavailable (%s: %s); looping over the rows", type(exc).__name__, exc)
        return _exact_diagonal_graph(p, split, cost, layout, vectorize=False)


def _exact_diagonal_graph(p, split, cost, layout, vectorize):
    import pytensor.tensor as pt
    from pytensor.gradient import jacobian

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        s_flat = split.ravel()
        m = s_flat.shape[0]
        jac = jacobian(s_flat, p, disconnected_inputs="ignore", vectorize=vectorize)
        dl_ds, h_diag = _loss_terms(cost, split)
        if h_diag is None:
            hess = jacobian(dl_ds.ravel(), split, disconnected_inputs="ignore", vectorize=vectorize).reshape((m, m))
        parts = []
        for j in jac:
            j2 = j.reshape((m, -1))
            hj = h_diag.ravel()[:, None] * j2 if h_diag is not None else pt.dot(hess, j2)
            parts.append(pt.sum(j2 * hj, axis=0).astype(layout.dtype))
    return layout.symbolic_concat(parts)


def hutchinson_graph(p, split, cost, layout):
    """``(z, estimate)``: one draw's flat estimate of ``diag(Jᵀ H_L J)`` for the Rademacher input ``z``."""
    import pytensor.tensor as pt

    z = pt.tensor("z", dtype=split.dtype, shape=(None,) * split.ndim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parts = [u * w for u, w in draw_pullbacks(cost, split, z, p)]
    return z, layout.symbolic_concat([x.astype(layout.dtype) for x in parts])


def rademacher(seed, theta, batch):
    """The numpy Generator of one Hutchinson statistic: seeded by ``seed`` and a digest of θ and the batch."""
    h = hashlib.blake2b(digest_size=16)
    for a in (theta, *batch):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes() if a.dtype != object else repr(a).encode())
    words = np.frombuffer(h.digest(), dtype=np.uint32).tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def rademacher_draws(rng, model, batch, n):
    """``n`` Rademacher arrays of ±1 shaped like the model's split on ``batch`` (in its dtype), drawn from ``rng``."""
    shape = tuple(int(d) for d in model._function("split_shape")(*batch))
    for _ in range(int(n)):
        yield (2 * rng.integers(0, 2, size=shape, dtype=np.int8) - 1).astype(model._spec.s.dtype)


# -- drivers (called by the Model methods of the same names) ---------------------------------
def statistic_graph(model, name):
    """``(inputs, output)`` of the function ``name`` that :meth:`Model._function` compiles."""
    from pytensor.graph.replace import clone_replace

    spec = model._spec
    if name == "split_shape":
        return list(model.inputs), spec.s.shape
    # Fresh copies of inner-graph ops (Scan): a Scan nested in the Jacobian's loop compiles its
    # inner graph in place when it runs, which would leave the model's own Scan unable to take
    # gradients afterwards (a later statistic graph would fail on an in-place Gemm).
    if name == "gauss_newton_hutchinson":
        s, cost = clone_replace([spec.s, spec.costs[0]], clone_inner_graphs=True)
        z, est = hutchinson_graph(model.p, s, cost, model.layout)
        return [z, *model.inputs], est
    if name == "gauss_newton_diagonal":  # on one case: inputs with a static case dimension narrowed to one
        ins = [model._one_case_input(x, ax) for x, ax in zip(model.inputs, model.case_axes)]
        s, cost = clone_replace([spec.s, spec.costs[0]], replace=dict(zip(model.inputs, ins)), rebuild_strict=False,
                                clone_inner_graphs=True)
        return ins, exact_diagonal_graph(model.p, s, cost, model.layout)
    raise KeyError(name)  # pragma: no cover - internal


def case_count(batch, case_axes):
    """The number of cases of ``batch`` along ``case_axes`` (1 when no input has a case axis)."""
    from hf_symbolic.errors import BatchError

    sizes = {a.shape[ax] for a, ax in zip(batch, case_axes) if ax is not None}
    if len(sizes) > 1:
        raise BatchError(f"inputs disagree on the number of cases along case_axes {case_axes}: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def _cases(batch, case_axes):
    """The one-case batches of ``batch`` along ``case_axes``."""
    for i in range(case_count(batch, case_axes)):
        yield [a if ax is None else np.take(a, [i], axis=ax) for a, ax in zip(batch, case_axes)]


def exact_diagonal(model, batch):
    """``(1/N) Σ_i diag(J_iᵀ H_i J_i)`` over the cases of a checked batch (float64 sums, the model's dtype)."""
    fn = model._function("gauss_newton_diagonal")
    acc, n = np.zeros(model.layout.size, dtype=np.float64), 0
    for one in _cases(batch, model.case_axes):
        acc += np.asarray(fn(*one), dtype=np.float64)
        n += 1
    return (acc / n).astype(model.layout.dtype)


def hutchinson_diagonal(model, batch, samples=None, seed=None):
    """The mean of ``samples`` one-draw estimates of ``diag(G)`` on a checked batch (see the module docstring)."""
    from hf_symbolic.errors import ArgumentError

    samples = HUTCHINSON_SAMPLES if samples is None else samples
    if not (isinstance(samples, (int, np.integer)) and samples >= 1):
        raise ArgumentError(f"samples={samples!r} is invalid: expected an integer >= 1")
    rng = rademacher(HUTCHINSON_SEED if seed is None else seed, model.get_flat(), batch)
    fn = model._function("gauss_newton_hutchinson")
    acc = np.zeros(model.layout.size, dtype=np.float64)
    for z in rademacher_draws(rng, model, batch, samples):
        acc += np.asarray(fn(z, *batch), dtype=np.float64)
    return (acc / samples).astype(model.layout.dtype)
