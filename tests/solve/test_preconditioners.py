"""CG's preconditioners: each statistic against a dense reference, the Hutchinson estimate, training, names.

References (float64, small models of ``tests/models.py`` and the logistic
regression of ``test_training.py``):

* ``squared_gradients`` (Martens): per-case gradients ``g_i = N · J_iᵀ (∂L/∂s)_i``
  from the explicit Jacobian ``J = ds/dθ`` of the whole batch (the cost is a
  mean over cases, so ``∂L/∂s_i = ∇ℓ_i / N``), squared and averaged;
* ``gauss_newton_diagonal``: the diagonal of ``Jᵀ H_L J`` with ``J`` and
  ``H_L = ∂²L/∂s²`` as dense matrices of the whole batch (never split into
  cases), and for the logistic regression the numpy Hessian (equal to ``G``
  for its stacked split);
* ``gauss_newton_hutchinson``: the mean of many draws against that exact
  diagonal, within a bound computed from the dense ``J`` and ``H_L``;
* ``gauss_newton_per_case``: for its own draw ``ξ``, the per-case pullbacks
  ``J_iᵀ c_i`` from the rows of the dense ``J`` (``c = H_L^{1/2} ξ``, or the
  symmetric form), squared per case for the dense layers and summed first for
  the other parameters; and the mean of many draws against ``diag(G)``.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.replace import clone_replace

import models
from hf_symbolic.errors import ArgumentError
from hf_symbolic.model import STATISTICS, Model
from hf_symbolic.solve.preconditioners import REGISTRY, make_preconditioner
from problems import (  # noqa: F401  (lr_optimum is a fixture)
    N_FEATURES, full_batch, lr_data, lr_optimum, np_cost, np_hessian, build_lr,
)

MODELS = {
    "mlp-sigmoid": lambda: models.mlp("sigmoid", n=6),  # H_L diagonal (elementwise dL/ds)
    "mlp-softmax": lambda: models.mlp("softmax", n=6),  # H_L block-diagonal per case, not diagonal
    "mlp-linear": lambda: models.mlp("linear", n=6),
    "rnn": lambda: models.rnn(),  # scan; split at the last step
    "rnn-every-step": lambda: models.rnn(every_step=True),  # split (time, cases, out): case axis 1
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    """``(spec, model, J, H, dL/ds)`` with the dense split Jacobian and loss Hessian of the whole batch."""
    m = MODELS[request.param]()
    opt = Model(m.p, m.inputs, m.s, m.costs, mode="FAST_COMPILE")
    J, H, dl = dense_split_terms(m, opt.layout)
    return m, opt, J, H, dl


def dense_split_terms(m, layout):
    """``J = ds/dθ`` (rows: ``s`` flattened), ``H = ∂²L/∂s²`` and ``∂L/∂s`` (flattened), all dense."""
    theta = pt.vector("theta", dtype=layout.dtype)
    theta0 = layout.flatten([x.get_value() for x in m.p])
    (s_theta,) = models.python_scans([clone_replace(m.s, replace=dict(zip(m.p, layout.symbolic_split(theta))))])
    fn = pytensor.function([theta, *m.inputs], pytensor.gradient.jacobian(s_theta.flatten(), theta, vectorize=True),
                           on_unused_input="ignore", mode=models.REFERENCE_MODE)
    J = fn(theta0, *m.batch)
    s_val = models.reference_value(m, m.s)
    s_flat = pt.vector("s_flat", dtype=m.s.dtype)
    (loss,) = models.python_scans([clone_replace(m.costs[0], replace={m.s: s_flat.reshape(s_val.shape)})])
    H, dl = pytensor.function([s_flat, *m.inputs], [models.dense_hessian(loss, s_flat), pytensor.grad(loss, s_flat)],
                              on_unused_input="ignore", mode=models.REFERENCE_MODE)(s_val.ravel(), *m.batch)
    return J, H, dl


def case_rows(m):
    """For each case, the rows of ``J`` (entries of ``s`` flattened) that belong to it."""
    shape = models.reference_value(m, m.s).shape
    index = np.arange(int(np.prod(shape))).reshape(shape)
    axis = 1 if len(shape) == 3 else 0  # (time, cases, out) or (cases, out)
    return [np.take(index, i, axis=axis).ravel() for i in range(shape[axis])]


# -- the statistics against dense references -------------------------------------------------
def test_squared_gradients_against_explicit_per_case_gradients(case):
    m, opt, J, H, dl = case
    rows = case_rows(m)
    n = len(rows)
    per_case = np.stack([n * J[r].T @ dl[r] for r in rows])
    # the per-case gradients really are the pieces of the batch gradient
    np.testing.assert_allclose(per_case.mean(axis=0), opt.gradient(m.batch)[0], rtol=1e-11, atol=1e-14)
    ref = np.mean(per_case ** 2, axis=0)
    np.testing.assert_allclose(opt.statistic("squared_gradients", m.batch), ref, rtol=1e-10, atol=1e-15)


def test_gauss_newton_diagonal_against_dense_jt_h_j(case):
    m, opt, J, H, dl = case
    G = J.T @ H @ J
    # the dense reference is the matrix CG sees
    np.testing.assert_allclose(G, opt.curvature_operator(m.batch).todense(), rtol=1e-10, atol=1e-14)
    d = opt.statistic("gauss_newton_diagonal", m.batch)
    assert d.dtype == np.float64 and d.shape == (opt.layout.size,)
    np.testing.assert_allclose(d, np.diag(G), rtol=1e-10, atol=1e-15)
    assert np.diag(G).min() >= 0 and np.diag(G).max() > 1e-3


def test_gauss_newton_diagonal_of_the_stacked_logistic_regression_is_the_numpy_hessians():
    """Non-elementwise loss at the split, with a data-independent penalty term: per-case means still give diag(G)."""
    opt = build_lr("gauss-newton")
    X, Y = lr_data(n=30)
    theta = np.random.default_rng(3).normal(size=N_FEATURES + 1)
    opt.set_flat(theta)
    np.testing.assert_allclose(opt.statistic("gauss_newton_diagonal", [X, Y]), np.diag(np_hessian(theta, X, Y)),
                               rtol=1e-12, atol=1e-15)


def test_hutchinson_is_deterministic_and_seeded_by_parameters_and_batch(case):
    m, opt, J, H, dl = case
    a = opt.statistic("gauss_newton_hutchinson", m.batch)
    assert np.array_equal(a, opt.statistic("gauss_newton_hutchinson", [x.copy() for x in m.batch]))
    assert not np.array_equal(a, opt.gauss_newton_hutchinson(m.batch, seed=1))
    theta = opt.get_flat()
    try:  # another θ draws other vectors; back at θ, the same estimate (a resumed run repeats it)
        opt.set_flat(theta + 1e-3)
        assert not np.allclose(opt.statistic("gauss_newton_hutchinson", m.batch), a, rtol=0.05)
    finally:
        opt.set_flat(theta)
    assert np.array_equal(opt.statistic("gauss_newton_hutchinson", m.batch), a)


def test_hutchinson_mean_converges_to_the_exact_diagonal(case):
    """The mean of K draws is within 6 standard deviations of diag(G), entry by entry.

    One draw is ``(uᵀz)(wᵀz)`` with Rademacher ``z``: ``u = w = D J_j`` when
    ``H_L = D²`` is diagonal, ``u = H_L J_j, w = J_j`` otherwise. Its variance
    is at most ``E[(uᵀz)²(wᵀz)²] <= sqrt(E(uᵀz)⁴ E(wᵀz)⁴) <= 3 |u|² |w|²``
    (``E(uᵀz)⁴ = 3|u|⁴ - 2 Σ u⁴``); the larger of the two forms' bounds
    covers whichever form the model uses. 6σ: probability <= 1/36 per entry by
    Chebyshev, ~2e-9 by the CLT; the seed is fixed, so the outcome is too.
    A factor 2 or a missing 1/N would exceed it (the bound is ~0.16·|u||w|).
    """
    m, opt, J, H, dl = case
    K = 2000
    exact = np.diag(J.T @ H @ J)
    est = opt.gauss_newton_hutchinson(m.batch, samples=K, seed=7)
    dj = np.sqrt(np.maximum(np.diag(H), 0))[:, None] * J
    bound_diag = 3 * np.sum(dj ** 2, axis=0) ** 2
    bound_full = 3 * np.sum((H @ J) ** 2, axis=0) * np.sum(J ** 2, axis=0)
    sigma = np.sqrt(np.maximum(bound_diag, bound_full) / K)
    assert np.all(np.abs(est - exact) <= 6 * sigma + 1e-15), np.max(np.abs(est - exact) / (sigma + 1e-300))
    assert np.linalg.norm(est - exact) <= 0.1 * np.linalg.norm(exact)


def test_hutchinson_samples_must_be_positive(case):
    m, opt, *_ = case
    with pytest.raises(ArgumentError, match="samples=0"):
        opt.gauss_newton_hutchinson(m.batch, samples=0)


def per_case_reference(m, opt, J, H, xi, per_case_entries):
    """The per-case estimate for the draw ``xi`` from the dense ``J`` and ``H_L`` (float64)."""
    from hf_symbolic.model.statistics import _loss_terms

    xi = xi.ravel().astype(np.float64)
    if _loss_terms(m.costs[0], m.s)[1] is not None:  # H_L diagonal: (Jᵀ D ξ)²
        c1 = c2 = np.sqrt(np.maximum(np.diag(H), 0)) * xi
    else:  # (Jᵀ H ξ) ⊙ (Jᵀ ξ)
        c1, c2 = H @ xi, xi
    ref = (J.T @ c1) * (J.T @ c2)  # batch sums first
    cases = sum((J[r].T @ c1[r]) * (J[r].T @ c2[r]) for r in case_rows(m))  # per case
    ref[per_case_entries] = cases[per_case_entries]
    return ref


def per_case_entries(opt, batch):
    """Flat indices of the parameters of the dense layers whose rows are the cases of ``batch``."""
    from hf_symbolic.model.kronecker import _model_layers

    layers, _ = _model_layers(opt)
    n = {a.shape[ax] for a, ax in zip(batch, opt.case_axes) if ax is not None}.pop()
    rows = opt._function("dense_rows")(*batch)
    offs = opt.layout.offsets
    idx = [np.arange(offs[k], offs[k + 1]) for layer, r in zip(layers, rows) if int(r) == n
           for k in (layer.w, layer.b) if k is not None]
    return np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)


def test_per_case_estimate_against_dense_per_case_pullbacks(case):
    """For its draw ξ, the statistic equals the dense per-case pullbacks (batch sums outside dense layers)."""
    from hf_symbolic.model.per_case import PER_CASE_SEED
    from hf_symbolic.model.statistics import rademacher, rademacher_draws

    m, opt, J, H, dl = case
    est = opt.statistic("gauss_newton_per_case", m.batch)
    assert est.dtype == np.float64 and est.shape == (opt.layout.size,)
    (xi,) = rademacher_draws(rademacher(PER_CASE_SEED, opt.get_flat(), m.batch), opt, m.batch, 1)
    entries = per_case_entries(opt, m.batch)
    ref = per_case_reference(m, opt, J, H, xi, entries)
    np.testing.assert_allclose(est, ref, rtol=1e-10, atol=1e-15 * np.abs(ref).max())
    # which layers are per case: both of an MLP; the output layer of the RNN split at its last step
    # (Wo, bo); none of the every-step RNN, whose output layer is inside its scan
    sizes = [x.get_value().size for x in m.p]
    expected = {4: sum(sizes), 5: sum(sizes[3:]) if m.s.ndim == 2 else 0}[len(m.p)]
    assert entries.size == expected
    # it really differs from the batch-sum estimate of the same draw where there are per-case layers
    if entries.size:
        batch_sum = per_case_reference(m, opt, J, H, xi, np.zeros(0, dtype=np.int64))
        assert not np.allclose(batch_sum[entries], ref[entries], rtol=1e-3)


def test_per_case_estimate_is_deterministic_and_unbiased(case):
    """Seeded by (seed, θ, batch); the mean of many draws converges to diag(G) (a factor or 1/N error would not)."""
    m, opt, J, H, dl = case
    a = opt.statistic("gauss_newton_per_case", m.batch)
    assert np.array_equal(a, opt.statistic("gauss_newton_per_case", [x.copy() for x in m.batch]))
    assert not np.array_equal(a, opt.gauss_newton_per_case(m.batch, seed=1))
    exact = np.diag(J.T @ H @ J)
    mean = np.mean([opt.gauss_newton_per_case(m.batch, seed=k) for k in range(400)], axis=0)
    assert np.linalg.norm(mean - exact) <= 0.1 * np.linalg.norm(exact), np.linalg.norm(mean - exact)


# -- the preconditioner objects ---------------------------------------------------------------
DIAGONAL = sorted(n for n, cls in REGISTRY.items() if hasattr(cls, "diagonal"))  # kfac: tests/solve/test_kfac.py


def test_every_registered_preconditioner_is_diagonal_or_an_inverse():
    assert "kfac" in REGISTRY and "kfac" not in DIAGONAL
    for name, cls in REGISTRY.items():
        pc = cls.from_options()
        assert pc.statistic in STATISTICS
        assert callable(getattr(pc, "diagonal", None)) != callable(getattr(pc, "inverse", None)), name


@pytest.mark.parametrize("name", DIAGONAL)
def test_registered_preconditioners_name_a_statistic_and_are_damped_powers(name):
    pc = make_preconditioner(name, exponent=0.5)
    assert pc.statistic in STATISTICS
    stat = np.array([0.0, 3.0, 8.0])
    np.testing.assert_allclose(pc.diagonal(stat, 1.0), np.sqrt(stat + 1.0), rtol=1e-15)
    assert make_preconditioner(name).diagonal(np.array([15.0]), 1.0)[0] == pytest.approx(8.0)  # α = 3/4
    with pytest.raises(ArgumentError, match="preconditioner_exponent"):
        make_preconditioner(name, exponent=1.5)


@pytest.mark.parametrize("name", ["gauss_newton_diagonal", "gauss_newton_hutchinson", "gauss_newton_per_case"])
def test_gauss_newton_preconditioners_clip_negative_estimates(name):
    assert make_preconditioner(name, exponent=1.0).diagonal(np.array([-0.5, 2.0]), 0.25).tolist() == [0.25, 2.25]


# -- training -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_training_with_each_preconditioner_reaches_scipys_optimum(lr_optimum, name):
    opt = build_lr("gauss-newton")
    x_ref, f_ref = lr_optimum
    X, Y = lr_data()
    params = opt.train(full_batch(X, Y), full_batch(X, Y, seed=1), num_updates=25, preconditioner=name)
    theta = np.concatenate([np.ravel(p) for p in params])
    assert opt.result.status == "num_updates"
    assert np.abs(theta - x_ref).max() <= 1e-6, np.abs(theta - x_ref).max()
    assert abs(np_cost(theta, X, Y) - f_ref) <= 1e-10
    assert np.abs(x_ref).max() > 0.5  # far from the zero start


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_preconditioner_reaches_cg(name):
    """Each update asks the model for the preconditioner's statistic, and CG's iterates change with it."""
    X, Y = lr_data()
    steps = {}
    for spec in (False, name):
        opt = build_lr("gauss-newton")
        asked = []
        statistic = opt.statistic
        opt.statistic = lambda stat, batch: asked.append(stat) or statistic(stat, batch)
        opt.train(full_batch(X, Y), full_batch(X, Y, seed=1), num_updates=2, preconditioner=spec)
        steps[spec] = opt.get_flat()
        assert asked == ([REGISTRY[name].from_options().statistic] * 2 if spec else [])
    assert not np.array_equal(steps[False], steps[name])


def test_unknown_preconditioner_names_the_value_and_the_choices():
    opt = build_lr("gauss-newton")
    X, Y = lr_data(n=20)
    with pytest.raises(ArgumentError) as err:
        opt.train(full_batch(X, Y), full_batch(X, Y, seed=1), num_updates=1, preconditioner="gauss-newton-diag")
    msg = str(err.value)
    assert "'gauss-newton-diag'" in msg
    for name in REGISTRY:
        assert repr(name) in msg
