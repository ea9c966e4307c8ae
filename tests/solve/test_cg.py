"""Tests of hf_symbolic.solve.cg and .backtrack: PCG against numpy/scipy, Martens' rule, iterate grid, backtracking."""

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from hf_symbolic.solve.backtrack import backtrack
from hf_symbolic.solve.cg import (
    conjugate_gradient,
    iterate_grid,
    martens_should_stop,
    martens_window,
)
from hf_symbolic.errors import ArgumentError, VectorSizeError


# --------------------------------------------------------------------------- helpers
def spd_matrix(n, cond, rng, diag_spread=1.0):
    """Random SPD matrix Q diag(eigs) Q^T with condition number ``cond``.

    ``diag_spread > 1`` rescales rows/columns by D^{1/2} . D^{1/2} with a
    random diagonal D in [1, diag_spread], so a diagonal preconditioner
    changes the iterates.
    """
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eigs = np.geomspace(1.0, cond, n)
    a = (q * eigs) @ q.T
    s = np.sqrt(rng.uniform(1.0, diag_spread, n))
    a = s[:, None] * a * s[None, :]
    return 0.5 * (a + a.T)


def quadratic(a, b, x):
    """phi(x) = 1/2 x^T A x - b^T x computed directly in float64."""
    x = np.asarray(x, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return 0.5 * x @ a @ x - b @ x


class Recorder:
    """CG callback recording every iterate and phi value."""

    def __init__(self):
        self.xs, self.phis, self.its = [], [], []

    def __call__(self, i, x, phi):
        self.its.append(i)
        self.xs.append(np.array(x, copy=True))
        self.phis.append(phi)


def reference_martens(phi, i, eps, window_min=10, window_frac_tenths=1):
    """Martens' rule written as in the papers, with the ceiling in integer arithmetic."""
    k = max(window_min, -(-(window_frac_tenths * i) // 10))
    return i > k and phi[i] < 0 and (phi[i] - phi[i - k]) / phi[i] < k * eps


# --------------------------------------------------------------------------- solving
def test_solves_spd_system_like_numpy():
    rng = np.random.default_rng(0)
    n = 200
    a = spd_matrix(n, 1e3, rng)
    b = rng.standard_normal(n)
    expected = np.linalg.solve(a, b)
    res = conjugate_gradient(lambda v: a @ v, b, maxiter=5 * n, eps=0.0, tol=1e-13 * np.linalg.norm(b))
    assert res.status == "converged"
    assert res.success
    assert np.linalg.norm(res.x - expected) <= 1e-8 * np.linalg.norm(expected)
    # without any tolerance CG runs to maxiter and still agrees
    res2 = conjugate_gradient(lambda v: a @ v, b, maxiter=400, eps=0.0)
    assert res2.status in ("maxiter", "converged")
    assert np.linalg.norm(res2.x - expected) <= 1e-8 * np.linalg.norm(expected)
    assert res2.x.dtype == np.float64


def test_solves_with_warm_start_and_preconditioner():
    rng = np.random.default_rng(1)
    n = 200
    a = spd_matrix(n, 1e3, rng, diag_spread=100.0)
    b = rng.standard_normal(n)
    expected = np.linalg.solve(a, b)
    x0 = expected + 0.1 * rng.standard_normal(n)
    res = conjugate_gradient(lambda v: a @ v, b, x0, M=np.diag(a).copy(), maxiter=5 * n, eps=0.0,
                             tol=1e-13 * np.linalg.norm(b))
    assert res.status == "converged"
    assert np.linalg.norm(res.x - expected) <= 1e-8 * np.linalg.norm(expected)


@pytest.mark.parametrize("precondition", [False, True])
@pytest.mark.parametrize("warm", [False, True])
def test_iterates_match_scipy_cg(precondition, warm):
    rng = np.random.default_rng(2)
    n = 120
    a = spd_matrix(n, 1e3, rng, diag_spread=50.0)
    b = rng.standard_normal(n)
    x0 = rng.standard_normal(n) if warm else None
    diag = np.diag(a).copy()
    steps = 10

    scipy_iterates = []
    m_op = spla.LinearOperator((n, n), matvec=lambda r: r / diag, dtype=np.float64) if precondition else None
    spla.cg(a, b, x0=x0, rtol=1e-300, atol=0.0, maxiter=steps, M=m_op,
            callback=lambda xk: scipy_iterates.append(np.array(xk, copy=True)))
    assert len(scipy_iterates) == steps

    rec = Recorder()
    res = conjugate_gradient(lambda v: a @ v, b, x0, M=diag if precondition else None,
                             maxiter=steps, eps=0.0, callback=rec)
    assert res.status == "maxiter" and res.iterations == steps
    assert rec.its == list(range(1, steps + 1))
    for ours, theirs in zip(rec.xs, scipy_iterates):
        assert np.linalg.norm(ours - theirs) <= 1e-10 * np.linalg.norm(theirs)

    # a callable preconditioner gives the same iterates as the diagonal one
    if precondition:
        rec2 = Recorder()
        conjugate_gradient(lambda v: a @ v, b, x0, M=lambda r: r / diag, maxiter=steps, eps=0.0, callback=rec2)
        for ours, theirs in zip(rec2.xs, rec.xs):
            np.testing.assert_array_equal(ours, theirs)


def test_matvec_count_and_warm_start_bookkeeping():
    rng = np.random.default_rng(3)
    n = 30
    a = spd_matrix(n, 10.0, rng)
    b = rng.standard_normal(n)
    calls = []

    def matvec(v):
        calls.append(1)
        return a @ v

    res = conjugate_gradient(matvec, b, maxiter=7, eps=0.0)
    assert res.matvecs == len(calls) == res.iterations == 7
    calls.clear()
    res = conjugate_gradient(matvec, b, np.zeros(n), maxiter=7, eps=0.0)
    assert res.matvecs == len(calls) == 7  # an all-zero x0 costs no product
    calls.clear()
    x0 = rng.standard_normal(n)
    res = conjugate_gradient(matvec, b, x0, maxiter=7, eps=0.0)
    assert res.matvecs == len(calls) == res.iterations + 1 == 8
    assert res.phi[0] == pytest.approx(quadratic(a, b, x0), rel=1e-12)
    # x0 is not modified and the result does not alias it
    x0_copy = x0.copy()
    res = conjugate_gradient(matvec, b, x0, maxiter=3, eps=0.0)
    np.testing.assert_array_equal(x0, x0_copy)


def test_exact_start_and_zero_rhs_converge_immediately():
    rng = np.random.default_rng(4)
    n = 20
    a = np.diag(2.0 ** rng.integers(-3, 4, n))  # powers of two: A @ exact == b without rounding
    b = rng.integers(-9, 10, n).astype(np.float64)
    exact = b / np.diag(a)
    res = conjugate_gradient(lambda v: a @ v, b, exact)
    assert res.status == "converged" and res.iterations == 0 and res.matvecs == 1
    assert res.iterate_indices == (0,)
    np.testing.assert_array_equal(res.x, exact)
    res = conjugate_gradient(lambda v: a @ v, np.zeros(n))
    assert res.status == "converged" and res.iterations == 0 and res.matvecs == 0
    assert not res.x.any() and res.phi.tolist() == [0.0]


def test_tol_stops_at_first_small_residual():
    rng = np.random.default_rng(5)
    n = 60
    a = spd_matrix(n, 1e2, rng)
    b = rng.standard_normal(n)
    tol = 1e-3 * np.linalg.norm(b)
    rec = Recorder()
    res = conjugate_gradient(lambda v: a @ v, b, tol=tol, eps=0.0, maxiter=500, callback=rec)
    assert res.status == "converged"
    norms = [np.linalg.norm(b - a @ x) for x in rec.xs]
    assert norms[-1] <= tol * (1 + 1e-9)
    assert all(nrm > tol * (1 - 1e-9) for nrm in norms[:-1])
    assert res.iterations == len(norms) > 1


def test_exact_convergence_in_n_steps_on_small_system():
    a = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])
    b = np.array([1.0, -2.0, 0.5])
    res = conjugate_gradient(lambda v: a @ v, b, maxiter=50, eps=0.0, tol=1e-12)
    assert res.status == "converged" and res.iterations <= 3
    np.testing.assert_allclose(res.x, np.linalg.solve(a, b), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- phi and kept iterates
def test_phi_matches_direct_quadratic_and_kept_iterates_follow_grid():
    rng = np.random.default_rng(6)
    n = 80
    a = spd_matrix(n, 1e3, rng)
    b = rng.standard_normal(n)
    x0 = 0.3 * rng.standard_normal(n)
    rec = Recorder()
    res = conjugate_gradient(lambda v: a @ v, b, x0, maxiter=37, eps=0.0, callback=rec)
    assert res.iterations == 37 and res.phi.shape == (38,) and res.phi.dtype == np.float64
    direct = [quadratic(a, b, x0)] + [quadratic(a, b, x) for x in rec.xs]
    scale = max(abs(v) for v in direct)
    np.testing.assert_allclose(res.phi, direct, rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(rec.phis, res.phi[1:], rtol=0, atol=0)
    # phi decreases monotonically for an SPD system
    assert np.all(np.diff(res.phi) < 0)

    expected_indices = (1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 24, 31, 37)
    assert res.iterate_indices == expected_indices
    assert len(res.iterates) == len(expected_indices)
    assert res.iterates[-1] is res.x
    for idx, it in zip(res.iterate_indices, res.iterates):
        np.testing.assert_array_equal(it, rec.xs[idx - 1])
        assert quadratic(a, b, it) == pytest.approx(res.phi[idx], rel=1e-10)


@pytest.mark.parametrize("precondition", [False, True])
def test_inputs_and_returned_iterates_are_never_modified(precondition):
    """CG updates its own direction and residual in place, never b, x0, M, or an iterate it handed out."""
    rng = np.random.default_rng(16)
    n = 40
    a = spd_matrix(n, 1e2, rng, diag_spread=10.0)
    b = rng.standard_normal(n).astype(np.float32)
    x0 = (0.1 * rng.standard_normal(n)).astype(np.float32)
    m = np.diag(a).astype(np.float32) if precondition else None
    saved = [v.copy() for v in (b, x0) + ((m,) if precondition else ())]
    rec, seen = Recorder(), []

    def matvec(v):
        seen.append(v)
        return (a @ v).astype(np.float32)

    res = conjugate_gradient(matvec, b, x0, M=m, maxiter=20, eps=0.0, callback=rec)
    for before, after in zip(saved, (b, x0) + ((m,) if precondition else ())):
        np.testing.assert_array_equal(before, after)
    for idx, it in zip(res.iterate_indices, res.iterates):
        np.testing.assert_array_equal(it, rec.xs[idx - 1])
    # the direction passed to matvec is one buffer, updated in place (a matvec must not keep it)
    assert all(v is seen[1] for v in seen[1:])
    assert not any(v is b or v is x0 for v in seen)


def test_last_iterate_is_kept_once_when_on_the_grid():
    a = np.diag(np.linspace(1.0, 100.0, 50))
    b = np.ones(50)
    res = conjugate_gradient(lambda v: a @ v, b, maxiter=14, eps=0.0)
    assert res.iterate_indices == (1, 2, 3, 4, 5, 7, 9, 11, 14)
    res = conjugate_gradient(lambda v: a @ v, b, maxiter=20, eps=0.0, grid_start=5.0)
    assert res.iterate_indices == (5, 7, 9, 11, 15, 19, 20)


def test_iterate_grid_values():
    # hand-computed ceil(1.3**j): 1, 1.3, 1.69, 2.197, 2.856, 3.71, 4.83, 6.27, 8.16, 10.6, 13.8, 17.9, 23.3, 30.3, 39.4
    assert iterate_grid(40) == (1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 24, 31, 40)
    # ceil(5 * 1.3**j): 5, 6.5, 8.45, 10.99, 14.28, 18.56, 24.13, 31.37, 40.79, 53.02
    assert iterate_grid(54, start=5.0) == (5, 7, 9, 11, 15, 19, 25, 32, 41, 54)
    assert iterate_grid(53, start=5.0)[-1] == 41
    assert iterate_grid(4, start=5.0) == ()
    assert iterate_grid(0) == ()


# (1.1, 100): 100 * 1.1 is 110.00000000000001 in floating point, yet the grid value is 110
@pytest.mark.parametrize("gamma,start", [(1.3, 1.0), (1.3, 5.0), (1.5, 2.0), (1.1, 1.0), (1.1, 100.0)])
def test_iterate_grid_against_exact_rational_arithmetic(gamma, start):
    g, s = Fraction(str(gamma)), Fraction(str(start))
    expected = sorted({math.ceil(s * g ** j) for j in range(200) if math.ceil(s * g ** j) <= 500})
    got = iterate_grid(500, gamma, start)
    assert list(got) == expected
    assert len(set(got)) == len(got)


def test_iterate_grid_validation():
    with pytest.raises(ArgumentError, match="gamma"):
        iterate_grid(10, gamma=1.0)
    with pytest.raises(ArgumentError, match="start"):
        iterate_grid(10, start=0.0)
    with pytest.raises(ArgumentError, match="maxiter"):
        iterate_grid(-1)


# --------------------------------------------------------------------------- Martens' rule
def test_martens_window_boundaries():
    assert [martens_window(i) for i in (0, 1, 50, 99, 100)] == [10] * 5
    assert martens_window(101) == 11
    assert martens_window(110) == 11
    assert martens_window(111) == 12
    # 0.07 * 100 and 0.55 * 100 round up in floating point (7.000000000000001, 55.00000000000001)
    assert martens_window(100, window_min=1, window_frac=0.07) == 7
    assert martens_window(101, window_min=1, window_frac=0.07) == 8
    assert martens_window(100, window_min=1, window_frac=0.55) == 55
    assert martens_window(250) == 25
    assert martens_window(30, window_min=2) == 3
    assert martens_window(31, window_min=2) == 4


def test_martens_rule_on_linear_phi_hits_exact_threshold():
    # phi_j = -j: relative progress over the window is k / i, so with eps = 1/64
    # the rule (k / i < k * eps) first holds at i = 65; at i = 64 it is an equality.
    phi = [-float(j) for j in range(200)]
    eps = 2.0 ** -6
    assert not martens_should_stop(phi, 64, eps)
    assert martens_should_stop(phi, 65, eps)
    assert all(not martens_should_stop(phi, i, eps) for i in range(0, 65))


def test_martens_rule_requires_more_than_k_iterations():
    phi = [0.0] + [-1.0] * 40          # no progress at all after the first iteration
    assert not martens_should_stop(phi, 10, 5e-4)  # i == k
    assert martens_should_stop(phi, 11, 5e-4)


def test_martens_rule_ignores_nonnegative_phi():
    phi = [float(j) for j in range(50)]  # phi positive
    assert not any(martens_should_stop(phi, i, 5e-4) for i in range(50))
    flat_zero = [0.0] * 50
    assert not any(martens_should_stop(flat_zero, i, 5e-4) for i in range(50))


def test_martens_rule_uses_the_window_that_grows_with_i():
    # Large progress between iterations 90 and 91, none afterwards.
    phi = [-1.0] * 91 + [-100.0] * 20
    # i = 100: k = 10 compares with phi_90 = -1: large progress, continue
    assert not martens_should_stop(phi, 100, 5e-4)
    # i = 101: k = 11 compares with phi_90 again: still large progress
    assert not martens_should_stop(phi, 101, 5e-4)
    # with a window fixed at 10, i = 101 would compare with phi_91 and stop
    assert martens_should_stop(phi, 101, 5e-4, window_frac=0.0)
    # i = 102 (k = 11) compares with phi_91: no progress, stop
    assert martens_should_stop(phi, 102, 5e-4)


def test_martens_rule_matches_paper_formula_on_random_sequences():
    rng = np.random.default_rng(7)
    for _ in range(200):
        steps = rng.exponential(1.0, 300) * np.geomspace(1.0, rng.uniform(1e-8, 1e-1), 300)
        steps *= rng.choice([1.0, -1.0], size=300, p=[0.9, 0.1])  # phi sometimes goes up
        phi = np.concatenate([[0.0], -np.cumsum(steps)]) + rng.choice([0.0, 1.0], p=[0.8, 0.2])
        eps = float(rng.choice([5e-4, 1e-3, 1e-2]))
        for i in range(0, 301, 7):
            assert martens_should_stop(phi, i, eps) == reference_martens(phi, i, eps), (i, eps)


def test_cg_stops_on_martens_rule_at_first_qualifying_iteration():
    rng = np.random.default_rng(8)
    n = 300
    a = spd_matrix(n, 1e4, rng)
    b = rng.standard_normal(n)
    res = conjugate_gradient(lambda v: a @ v, b, maxiter=n, eps=5e-3)
    assert res.status == "martens"
    m = res.iterations
    assert m > 10
    assert reference_martens(res.phi, m, 5e-3)
    assert not any(reference_martens(res.phi, i, 5e-3) for i in range(1, m))
    # miniter postpones the rule
    res2 = conjugate_gradient(lambda v: a @ v, b, maxiter=n, eps=5e-3, miniter=m + 5)
    assert res2.iterations == m + 5 and res2.status == "martens"
    # eps = 0 switches the rule off for a decreasing phi
    res3 = conjugate_gradient(lambda v: a @ v, b, maxiter=m + 20, eps=0.0)
    assert res3.status == "maxiter"


# --------------------------------------------------------------------------- failure modes
def krylov_basis(a, b, m):
    vs = [b]
    for _ in range(m - 1):
        vs.append(a @ vs[-1])
    q, _ = np.linalg.qr(np.stack(vs, axis=1))
    return q


def test_negative_curvature_stop_on_indefinite_matrix():
    rng = np.random.default_rng(9)
    n = 7
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -1.0])) @ q.T
    a = 0.5 * (a + a.T)
    b = q @ np.ones(n)
    rec = Recorder()
    res = conjugate_gradient(lambda v: a @ v, b, maxiter=50, eps=0.0, callback=rec)
    assert res.status == "negative_curvature"
    m = res.iterations
    assert m >= 1 and res.matvecs == m + 1
    assert np.all(np.isfinite(res.x)) and res.success
    np.testing.assert_array_equal(res.x, rec.xs[-1])
    # Independent check: x_m minimizes phi on the Krylov space K_m, on which A is
    # positive definite, while A restricted to K_{m+1} is not.
    v_m = krylov_basis(a, b, m)
    proj = v_m.T @ a @ v_m
    assert np.linalg.eigvalsh(proj).min() > 0
    np.testing.assert_allclose(res.x, v_m @ np.linalg.solve(proj, v_m.T @ b), rtol=1e-9, atol=1e-12)
    v_next = krylov_basis(a, b, m + 1)
    assert np.linalg.eigvalsh(v_next.T @ a @ v_next).min() <= 1e-10


def test_negative_curvature_on_first_direction_returns_start():
    a = np.diag([1.0, -1.0])
    res = conjugate_gradient(lambda v: a @ v, np.array([1.0, 1.0]))
    assert res.status == "negative_curvature" and res.iterations == 0
    np.testing.assert_array_equal(res.x, [0.0, 0.0])
    assert res.iterate_indices == (0,)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_matvec_stops_with_last_finite_iterate(bad):
    rng = np.random.default_rng(10)
    n = 40
    a = spd_matrix(n, 1e2, rng)
    b = rng.standard_normal(n)
    calls = []

    def matvec(v):
        calls.append(1)
        out = a @ v
        if len(calls) == 3:
            out[5] = bad
        return out

    clean = Recorder()
    conjugate_gradient(lambda v: a @ v, b, maxiter=5, eps=0.0, callback=clean)
    res = conjugate_gradient(matvec, b, maxiter=50, eps=0.0)
    assert res.status == "nonfinite" and not res.success
    assert res.iterations == 2 and res.matvecs == 3
    np.testing.assert_array_equal(res.x, clean.xs[1])
    assert all(np.all(np.isfinite(it)) for it in res.iterates)
    assert res.iterate_indices == (1, 2)
    assert res.phi.shape == (3,) and np.all(np.isfinite(res.phi))


def test_overflowing_float32_iterate_is_not_returned():
    # Finite products, but the step overflows float32: alpha = 1e30, x_1 = 1e50.
    b = np.array([1e20, 0.0], dtype=np.float32)
    res = conjugate_gradient(lambda v: v * np.float32(1e-30), b, maxiter=5)
    assert res.status == "nonfinite" and res.iterations == 0 and res.matvecs == 1
    assert np.all(np.isfinite(res.x)) and res.x.dtype == np.float32
    assert all(np.all(np.isfinite(it)) for it in res.iterates)


def test_nonfinite_initial_residual_keeps_x0():
    x0 = np.array([1.0, 2.0])
    res = conjugate_gradient(lambda v: np.full(2, np.nan), np.ones(2), x0)
    assert res.status == "nonfinite" and res.iterations == 0 and res.matvecs == 1
    np.testing.assert_array_equal(res.x, x0)


def test_nonfinite_preconditioner_output():
    a = np.diag([1.0, 2.0, 3.0])
    res = conjugate_gradient(lambda v: a @ v, np.ones(3), M=lambda r: r * np.nan)
    assert res.status == "nonfinite" and res.iterations == 0
    assert np.all(np.isfinite(res.x))


def test_callback_can_stop_cg():
    rng = np.random.default_rng(11)
    a = spd_matrix(30, 1e2, rng)
    b = rng.standard_normal(30)

    def cb(i, x, phi):
        if i == 6:
            raise StopIteration

    res = conjugate_gradient(lambda v: a @ v, b, maxiter=50, eps=0.0, callback=cb)
    assert res.status == "callback" and res.iterations == 6 and res.iterate_indices[-1] == 6


# --------------------------------------------------------------------------- precision
def test_float32_vectors_stay_float32_with_float64_phi():
    rng = np.random.default_rng(12)
    n = 100
    a = spd_matrix(n, 1e2, rng).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    m = np.diag(a).astype(np.float64)  # a float64 diagonal does not upcast the vectors
    rec = Recorder()
    res = conjugate_gradient(lambda v: a @ v, b, np.zeros(n, dtype=np.float64), M=m, maxiter=60, eps=0.0,
                             callback=rec)
    assert res.x.dtype == np.float32
    assert all(it.dtype == np.float32 for it in res.iterates)
    assert all(x.dtype == np.float32 for x in rec.xs)
    assert res.phi.dtype == np.float64
    expected = np.linalg.solve(a.astype(np.float64), b.astype(np.float64))
    assert np.linalg.norm(res.x - expected) <= 1e-4 * np.linalg.norm(expected)


def test_phi_is_accumulated_in_float64_for_float32_vectors():
    # With A = I the first iteration gives alpha = 1, x_1 = b, r_1 = 0, so
    # phi_1 = -1/2 b^T b exactly in exact arithmetic. A float32 dot product
    # would be off by ~1e-7 relative; float64 accumulation is ~1e-15.
    rng = np.random.default_rng(13)
    b = (rng.standard_normal(100_000) + 0.5).astype(np.float32)
    res = conjugate_gradient(lambda v: v.copy(), b, maxiter=5, eps=0.0)
    assert res.status == "converged" and res.iterations == 1
    b64 = b.astype(np.float64)
    exact = -0.5 * math.fsum(b64 * b64)
    assert abs(res.phi[1] - exact) <= 1e-12 * abs(exact)
    float32_dot = -0.5 * float(np.dot(b, b))
    assert abs(float32_dot - exact) > 1e-10 * abs(exact)  # the test can tell the two apart


# --------------------------------------------------------------------------- validation
def test_argument_validation():
    a = np.eye(3)
    mv = lambda v: a @ v  # noqa: E731
    with pytest.raises(VectorSizeError, match=r"b must be .*shape \(3, 1\)"):
        conjugate_gradient(mv, np.ones((3, 1)))
    with pytest.raises(VectorSizeError, match=r"x0 must be a 1-D vector of length 3.*\(4,\)"):
        conjugate_gradient(mv, np.ones(3), np.ones(4))
    with pytest.raises(VectorSizeError, match="x0 must be finite"):
        conjugate_gradient(mv, np.ones(3), np.array([0.0, np.nan, 0.0]))
    with pytest.raises(VectorSizeError, match="b must be finite"):
        conjugate_gradient(mv, np.array([1.0, np.inf, 0.0]))
    with pytest.raises(VectorSizeError, match=r"length 3.*\(2,\)"):
        conjugate_gradient(mv, np.ones(3), M=np.ones(2))
    with pytest.raises(VectorSizeError, match="positive.*0.0 at index 1"):
        conjugate_gradient(mv, np.ones(3), M=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(VectorSizeError, match=r"matvec returned .*\(2,\)"):
        conjugate_gradient(lambda v: v[:2], np.ones(3))
    with pytest.raises(VectorSizeError, match="preconditioner M returned"):
        conjugate_gradient(mv, np.ones(3), M=lambda r: r[:1])
    with pytest.raises(ArgumentError, match="not positive definite"):
        conjugate_gradient(mv, np.ones(3), M=lambda r: -r)
    for kwargs, name in [({"maxiter": 0}, "maxiter"), ({"maxiter": 2.5}, "maxiter"), ({"miniter": 0}, "miniter"),
                         ({"eps": -1.0}, "eps"), ({"tol": np.nan}, "tol"), ({"window_min": 0}, "window_min"),
                         ({"grid_gamma": 0.9}, "gamma"), ({"window_frac": -0.1}, "window_frac")]:
        with pytest.raises(ArgumentError, match=name):
            conjugate_gradient(mv, np.ones(3), **kwargs)
    with pytest.raises(ValueError):  # ArgumentError is a ValueError
        conjugate_gradient(mv, np.ones(3), maxiter=0)
    with pytest.raises(ArgumentError, match="matvec must be callable"):
        conjugate_gradient(a, np.ones(3))


# --------------------------------------------------------------------------- backtracking
def table_objective(table, calls=None):
    def objective(p):
        pos = int(p[0])
        if calls is not None:
            calls.append(pos)
        return table[pos]
    return objective


def steps(n):
    return [np.array([float(j)]) for j in range(n)]


def test_backtrack_local_walks_back_while_lower():
    table = [1.0, 3.0, 4.0, 2.0, 6.0]
    calls = []
    res = backtrack(steps(5), table_objective(table, calls))
    assert res.index == 3 and res.value == 2.0 and res.evaluations == 3
    assert calls == [4, 3, 2]
    np.testing.assert_array_equal(res.step, [3.0])


def test_backtrack_global_takes_argmin():
    table = [1.0, 3.0, 4.0, 2.0, 6.0]
    res = backtrack(steps(5), table_objective(table), global_search=True)
    assert res.index == 0 and res.value == 1.0 and res.evaluations == 5


def test_backtrack_ties():
    # global: ties go to the later iterate
    res = backtrack(steps(4), table_objective([2.0, 5.0, 2.0, 7.0]), global_search=True)
    assert res.index == 2
    # local: an equal previous value is not lower, so the walk stops
    res = backtrack(steps(3), table_objective([1.0, 3.0, 3.0]))
    assert res.index == 2 and res.evaluations == 2
    # monotonically improving iterates: keep the last one
    res = backtrack(steps(4), table_objective([4.0, 3.0, 2.0, 1.0]))
    assert res.index == 3 and res.evaluations == 2


def test_backtrack_nonfinite_counts_as_inf():
    res = backtrack(steps(3), table_objective([1.0, 2.0, np.nan]))
    assert res.index == 0 and res.value == 1.0
    res = backtrack(steps(3), table_objective([5.0, np.inf, np.nan]))
    assert res.index == 2 and res.value == math.inf
    res = backtrack(steps(3), table_objective([np.nan, 4.0, np.inf]), global_search=True)
    assert res.index == 1 and res.value == 4.0


def test_backtrack_uses_known_values():
    table = [1.0, 3.0, 4.0, 2.0, 6.0]
    calls = []
    res = backtrack(steps(5), table_objective(table, calls), values={4: 6.0})
    assert res.index == 3 and res.evaluations == 2 and calls == [3, 2]
    calls.clear()
    res = backtrack(steps(5), table_objective(table, calls), global_search=True,
                    values=[None, None, 4.0, None, 6.0])
    assert res.index == 0 and res.evaluations == 3 and sorted(calls) == [0, 1, 3]
    with pytest.raises(ArgumentError, match="one entry per iterate"):
        backtrack(steps(5), table_objective(table), values=[1.0])
    with pytest.raises(ArgumentError, match="positions 0..4"):
        backtrack(steps(5), table_objective(table), values={7: 1.0})
    with pytest.raises(ArgumentError, match="empty"):
        backtrack([], table_objective(table))


def test_backtrack_on_cg_iterates_of_a_nonquadratic_objective():
    # f(theta + p) = quadratic + a quartic penalty: later CG iterates of the
    # quadratic model overshoot, so backtracking picks an earlier one; the local
    # choice is the first local minimum met from the end of the list.
    rng = np.random.default_rng(14)
    n = 40
    a = spd_matrix(n, 1e3, rng)
    g = rng.standard_normal(n)
    res = conjugate_gradient(lambda v: a @ v, -g, maxiter=60, eps=0.0)

    def f(p):
        return float(g @ p + 0.5 * p @ a @ p + 0.05 * np.sum(p ** 4))

    vals = [f(p) for p in res.iterates]
    loc = backtrack(res.iterates, f)
    glob = backtrack(res.iterates, f, global_search=True)
    j = len(vals) - 1
    while j > 0 and vals[j - 1] < vals[j]:
        j -= 1
    assert loc.index == j
    assert glob.index == int(np.argmin(vals))
    assert glob.value <= loc.value
