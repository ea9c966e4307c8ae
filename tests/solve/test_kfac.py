"""The Kronecker-factored (K-FAC) preconditioner: layers found, factors and inverse against dense references.

* Factors: for a one-case batch, the dense Gauss-Newton block of a dense
  layer (``Jᵀ H_L J`` from the explicit Jacobian, the bias as the last row) is
  exactly ``A ⊗ E_ξ[S]``; the expectation is taken exactly by enumerating
  every Rademacher vector over the split (diagonal and full loss Hessians). On a many-case batch, one draw's
  factors equal a numpy forward and backward pass.
* Inverse: the callable CG receives against ``numpy.linalg.solve`` with the
  dense block-diagonal ``M`` built in the flat parameter coordinates.
"""

import itertools

import numpy as np
import pytensor.tensor as pt
import pytest

import models
from hf_symbolic.errors import ArgumentError
from hf_symbolic.model import Model
from hf_symbolic.solve.preconditioners import KroneckerFactored, make_preconditioner, operator
from test_preconditioners import dense_split_terms


def _model(m, costs=None):
    return Model(m.p, m.inputs, m.s, costs or m.costs, mode="FAST_COMPILE")


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _flat_index(block):
    """Flat index of row ``j`` (the bias row last), column ``k`` of a layer's augmented weight."""
    w0, n_in, n_out, b0 = block
    rows = [[w0 + j * n_out + k for k in range(n_out)] for j in range(n_in)]
    if b0 is not None:
        rows.append([b0 + k for k in range(n_out)])
    return np.array(rows).ravel()


# -- layers found ------------------------------------------------------------------------------
def test_mlp_layers_are_found_with_their_biases():
    m = models.mlp("sigmoid")
    opt = _model(m)
    blocks, other = opt.kronecker_structure()
    o = opt.layout.offsets
    assert blocks == ((o[0], 3, 4, o[1]), (o[2], 4, 2, o[3]))
    assert other.size == 0


def test_a_weight_penalty_does_not_hide_a_layer_but_a_tied_weight_does():
    m = models.mlp("sigmoid")
    W1 = m.p[0]
    penalised = _model(m, [m.costs[0] + 1e-3 * pt.sum(W1 ** 2), *m.costs[1:]])
    assert len(penalised.kronecker_structure()[0]) == 2
    # W1 used twice on the way to the split: not a dense layer, its entries (and b1's) get the diagonal
    x, y = m.inputs
    s = pt.dot(pt.sigmoid(pt.dot(x, W1) + m.p[1]) + pt.dot(x, W1), m.p[2]) + m.p[3]
    cost = pt.mean(pt.sum((s - y) ** 2, axis=1))
    tied = Model(m.p, m.inputs, s, [cost], mode="FAST_COMPILE")
    blocks, other = tied.kronecker_structure()
    o = tied.layout.offsets
    assert blocks == ((o[2], 4, 2, o[3]),)
    assert other.tolist() == list(range(o[0], o[2]))


def test_scan_weights_are_other_parameters():
    m = models.rnn()
    opt = _model(m)
    blocks, other = opt.kronecker_structure()
    covered = set(np.concatenate([_flat_index(b) for b in blocks]).tolist()) if blocks else set()
    assert covered.isdisjoint(other.tolist())
    assert sorted(covered | set(other.tolist())) == list(range(opt.layout.size))
    assert other.size > 0  # the recurrent weights live inside the scan
    pc = make_preconditioner("kfac").with_structure(blocks, other)
    stat = opt.kronecker_factors(m.batch)
    assert stat.shape == (pc.statistic_size,) and np.isfinite(stat).all()
    r = np.random.default_rng(0).normal(size=opt.layout.size)
    out = pc.inverse(stat, 0.5)(r)
    assert out.shape == r.shape and np.all(out @ r > 0)


# -- factors against dense references -------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sigmoid", "softmax", "linear"])
def test_one_case_factors_give_the_exact_gauss_newton_blocks(kind):
    """sigmoid/linear: H_L diagonal (one pullback); softmax: H_L full per case (two pullbacks, symmetrized)."""
    m = models.mlp(kind, n=1)
    opt = _model(m)
    J, H, _ = dense_split_terms(m, opt.layout)
    G = J.T @ H @ J
    pc = make_preconditioner("kfac").with_structure(*opt.kronecker_structure())
    fn = opt._function("kronecker_factors")
    n_split = J.shape[0]
    draws = [np.array(z, dtype="float64").reshape(1, n_split) for z in itertools.product((-1.0, 1.0), repeat=n_split)]
    stats = np.mean([fn(z, *m.batch) for z in draws], axis=0)  # the exact expectation over ξ
    _, pairs = pc.factors(stats)
    for block, (A, S) in zip(pc.blocks, pairs):
        idx = _flat_index(block)
        np.testing.assert_allclose(np.kron(A, S), G[np.ix_(idx, idx)], rtol=1e-10, atol=1e-14)
    assert max(np.abs(G[np.ix_(_flat_index(b), _flat_index(b))]).max() for b in pc.blocks) > 1e-3


def test_many_case_factors_match_a_numpy_forward_and_backward_pass():
    m = models.mlp("sigmoid", n=7)
    opt = _model(m)
    W1, b1, W2, b2 = (x.get_value() for x in m.p)
    X, Y = m.batch
    rng = np.random.default_rng(3)
    xi = rng.choice([-1.0, 1.0], size=(7, 2))
    stat = opt._function("kronecker_factors")(xi, *m.batch)
    n = len(X)
    h = _sigmoid(X @ W1 + b1)
    out = _sigmoid(h @ W2 + b2)
    d_s = np.sqrt(out * (1 - out) / n) * xi  # H_L of the mean cross-entropy is diag(σ(1-σ)/n)
    d_h = (d_s @ W2.T) * h * (1 - h)
    x1, h1 = np.hstack([X, np.ones((n, 1))]), np.hstack([h, np.ones((n, 1))])
    expect = np.concatenate([(x1.T @ x1 / n).ravel(), (d_h.T @ d_h).ravel(), (h1.T @ h1 / n).ravel(),
                             (d_s.T @ d_s).ravel()])
    np.testing.assert_allclose(stat, expect, rtol=1e-12, atol=1e-15)


def test_the_statistic_is_seeded_by_parameters_and_batch():
    m = models.mlp("sigmoid", n=7)
    opt = _model(m)
    a, b = opt.kronecker_factors(m.batch), opt.kronecker_factors(m.batch)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, opt.kronecker_factors(m.batch, seed=1))
    assert opt.statistic("kronecker_factors", m.batch).shape == a.shape


# -- the inverse against numpy.linalg.solve ---------------------------------------------------------
def _spd(rng, n, scale=1.0):
    q = rng.normal(size=(n, n))
    return scale * (q @ q.T / n + 0.05 * np.eye(n))


@pytest.mark.parametrize("lam", [1e-3, 0.3, 40.0])
def test_inverse_equals_solving_with_the_dense_damped_kronecker_matrix(lam):
    rng = np.random.default_rng(0)
    # flat: W0 (3x2) at 0, b0 at 6, W1 (2x1) at 8, two other entries at 10 and 11, b-less layer
    blocks, other, size = ((0, 3, 2, 6), (8, 2, 1, None)), np.array([10, 11]), 12
    pc = make_preconditioner("kfac").with_structure(blocks, other)
    diag = np.array([0.7, -0.1])  # a negative estimate is clipped to 0
    factors = [(_spd(rng, 4), _spd(rng, 2, 1e-3)), (_spd(rng, 2, 5.0), _spd(rng, 1))]
    stat = np.concatenate([diag, *[x.ravel() for pair in factors for x in pair]])
    assert stat.size == pc.statistic_size
    M = np.zeros((size, size))
    g = np.sqrt(lam)
    for block, (A, S) in zip(blocks, factors):
        pi = np.sqrt((np.trace(A) / len(A)) / (np.trace(S) / len(S)))
        idx = _flat_index(block)
        M[np.ix_(idx, idx)] = np.kron(A + pi * g * np.eye(len(A)), S + g / pi * np.eye(len(S)))
    M[other, other] = np.maximum(diag, 0) + lam
    assert sorted(np.flatnonzero(M.any(axis=0))) == list(range(size))  # every entry covered
    r = rng.normal(size=size)
    apply = operator(pc, stat, lam, np.float64)
    np.testing.assert_allclose(apply(r), np.linalg.solve(M, r), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(apply(r.astype(np.float32)), np.linalg.solve(M, r), rtol=2e-4, atol=1e-5)
    assert apply(r.astype(np.float32)).dtype == np.float32


def test_inverse_checks_its_statistic_structure_and_damping():
    pc = KroneckerFactored().with_structure(((0, 2, 1, None),), np.array([2]))
    with pytest.raises(ArgumentError, match=r"expected \(6,\)"):
        pc.inverse(np.ones(5), 1.0)
    with pytest.raises(ArgumentError, match="damping=0"):
        pc.inverse(np.ones(6), 0)
    with pytest.raises(ArgumentError, match="with_structure"):
        KroneckerFactored().inverse(np.ones(6), 1.0)


def test_training_an_mlp_with_kfac_lowers_the_cost_and_changes_cg():
    from hf_symbolic import BatchDataset, hf_optimizer

    m = models.mlp("sigmoid", n=40)
    start = [x.get_value() for x in m.p]
    runs = {}
    for spec in (False, "kfac"):
        for x, v in zip(m.p, start):
            x.set_value(v.copy())
        opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, mode="FAST_COMPILE")
        f0 = opt.cost(m.batch)[0]
        ds = BatchDataset(m.batch, 40, shuffle=False)
        iters = []
        opt.train(ds, ds, num_updates=10, initial_lambda=1.0, mu=0.0, preconditioner=spec,
                  callback=lambda st: iters.append(st.cg_iterations))
        assert opt.result.status == "num_updates"
        runs[spec] = (opt.cost(m.batch)[0], iters)
        assert runs[spec][0] < f0 - 0.1
    assert runs[False][1] != runs["kfac"][1]
