"""Curvature products against dense references built from explicit Jacobians (float64)."""

import numpy as np
import pytensor.tensor as pt
import pytest

from hf_symbolic import hf_optimizer
from models import explicit_gauss_newton, explicit_hessian, max_rel_err, mlp, reference_value, rnn

TOL = 1e-7

MODELS = {
    "mlp_sigmoid_ce": lambda: mlp("sigmoid"),
    "mlp_softmax_cce": lambda: mlp("softmax", sizes=(3, 4, 3)),
    "mlp_linear_se": lambda: mlp("linear"),
    "rnn_last_step": lambda: rnn(),
    "rnn_every_step": lambda: rnn(every_step=True),
}
STRUCTURAL = {"rnn_structural": lambda: rnn(structural=True)}


def _opt(m, **kw):
    return hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha, **kw)


@pytest.fixture(scope="module")
def built():
    """``get(name) -> (model, optimizer)``: each model is built and compiled once for this file.

    Every test that changes the optimizer's parameters puts them back.
    """
    cache = {}

    def get(name):
        if name not in cache:
            m = {**MODELS, **STRUCTURAL}[name]()
            cache[name] = m, _opt(m)
        return cache[name]

    return get


@pytest.fixture(params=sorted(MODELS))
def case(request, built):
    return (request.param, *built(request.param))


def test_gauss_newton_matches_explicit_jacobians(case):
    name, m, opt = case
    G = opt.curvature_operator(m.batch).todense()
    ref = explicit_gauss_newton(m, opt.layout)
    assert ref.shape == (opt.layout.size, opt.layout.size)
    assert np.abs(ref).max() > 1e-6, "reference is degenerate"
    assert max_rel_err(G, ref) <= TOL, name


def test_gauss_newton_symmetric_psd(case):
    name, m, opt = case
    G = opt.curvature_operator(m.batch).todense()
    scale = np.abs(G).max()
    assert np.abs(G - G.T).max() <= 1e-12 * scale
    assert np.linalg.eigvalsh((G + G.T) / 2).min() >= -1e-12 * scale


def test_product_method_equals_operator(case):
    name, m, opt = case
    v = np.random.default_rng(1).normal(size=opt.layout.size)
    a = opt.gauss_newton_product(v, m.batch)
    b = opt.curvature_operator(m.batch, damping=0.5).matvec(v)
    np.testing.assert_allclose(b, a + 0.5 * v, rtol=1e-12, atol=1e-14)


def test_hessian_product_matches_pytensor_hessian(case):
    name, m, opt = case
    H = opt.curvature_operator(m.batch, curvature="hessian").todense()
    ref = explicit_hessian(m, opt.layout)
    assert max_rel_err(H, ref) <= TOL, name
    v = np.random.default_rng(2).normal(size=opt.layout.size)
    np.testing.assert_allclose(opt.hessian_product(v, m.batch), ref @ v, rtol=1e-9, atol=1e-12)


def test_gradient_matches_finite_differences(case):
    name, m, opt = case
    theta = opt.get_flat()
    g, costs = opt.gradient(m.batch)
    assert costs[0] == pytest.approx(opt.cost(m.batch)[0], rel=1e-14)
    rng = np.random.default_rng(3)
    for _ in range(3):
        d = rng.normal(size=theta.size)
        eps = 1e-6
        opt.set_flat(theta + eps * d)
        fp = opt.cost(m.batch)[0]
        opt.set_flat(theta - eps * d)
        fm = opt.cost(m.batch)[0]
        opt.set_flat(theta)
        assert (fp - fm) / (2 * eps) == pytest.approx(g @ d, rel=1e-6, abs=1e-9)


def test_structural_damping_matches_its_explicit_gauss_newton(built):
    m, opt = built("rnn_structural")
    n = opt.layout.size
    G_plain = opt.curvature_operator(m.batch).todense()
    G_total = opt.curvature_operator(m.batch, structural_coefficient=0.7).todense()
    G_sd = (G_total - G_plain) / 0.7

    # D(ha) = sum CE(h0, h(ha)) / cases with h0 the current value, held fixed
    h_val = reference_value(m, m.h)
    n_cases = h_val.shape[-2]

    def distance(ha_var):
        from pytensor.graph.replace import clone_replace

        h = clone_replace(m.h, replace={m.ha: ha_var})
        return pt.sum(-(h_val * pt.log(h) + (1 - h_val) * pt.log(1 - h))) / n_cases

    ref = explicit_gauss_newton(m, opt.layout, split=m.ha, loss=distance)
    assert ref.shape == (n, n) and np.abs(ref).max() > 1e-6
    assert max_rel_err(G_sd, ref) <= TOL
    assert np.linalg.eigvalsh((G_sd + G_sd.T) / 2).min() >= -1e-12 * np.abs(G_sd).max()
    # the public product method adds the same term
    v = np.random.default_rng(4).normal(size=n)
    np.testing.assert_allclose(opt.gauss_newton_product(v, m.batch, structural_coefficient=0.7), G_total @ v, rtol=1e-10, atol=1e-13)


def test_flat_round_trip():
    m = mlp("linear")
    opt = _opt(m)
    theta = opt.get_flat()
    assert theta.shape == (opt.layout.size,) and theta.dtype == np.float64
    parts = opt.unflatten(theta)
    for x, a in zip(m.p, parts):
        np.testing.assert_array_equal(x.get_value(), a)
    new = np.arange(theta.size, dtype=float)
    opt.set_flat(new)
    np.testing.assert_array_equal(opt.get_flat(), new)
    new[0] = -1.0  # set_flat copied
    assert opt.get_flat()[0] == 0.0


def test_many_cases_in_one_call(built):
    """One compiled call over a batch equals the average of calls over its halves (cost is a mean)."""
    m = rnn(n=8)  # rnn()'s parameters and graph, 8 cases: rnn_last_step's compiled functions serve
    _, opt = built("rnn_last_step")
    for a, b in zip(m.p, opt.unflatten(opt.get_flat())):
        np.testing.assert_array_equal(a.get_value(), b)
    X, Y = m.batch
    g, _ = opt.gradient([X, Y])
    g1, _ = opt.gradient([X[:, :4], Y[:4]])
    g2, _ = opt.gradient([X[:, 4:], Y[4:]])
    np.testing.assert_allclose(g, (g1 + g2) / 2, rtol=1e-12, atol=1e-14)
    v = np.random.default_rng(0).normal(size=g.size)
    gv = opt.gauss_newton_product(v, [X, Y])
    gv1 = opt.gauss_newton_product(v, [X[:, :4], Y[:4]])
    gv2 = opt.gauss_newton_product(v, [X[:, 4:], Y[4:]])
    np.testing.assert_allclose(gv, (gv1 + gv2) / 2, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(MODELS) + sorted(STRUCTURAL))
def test_cached_forward_equals_plain_product(name, built):
    """The partially evaluated product (forward pass cached per CG run) equals the plain one."""
    m, cached = built(name)
    plain = _opt(m, cache_forward=False)
    coef = 0.3 if m.h is not None else 0.0
    op = cached.curvature_operator(m.batch, structural_coefficient=coef)
    assert cached._cached_gv_functions() is not None, "partial evaluation fell back to the plain product"
    rng = np.random.default_rng(5)
    for _ in range(3):
        v = rng.normal(size=cached.layout.size)
        a = op.matvec(v)
        b = plain.gauss_newton_product(v, m.batch, structural_coefficient=coef)
        assert max_rel_err(a, b) <= 1e-12


@pytest.fixture(scope="module")
def structural_models():
    """``get(form) -> (model, cached optimizer, plain optimizer)`` for the structural damping tests.

    The test RNN with structural damping on tanh units. ``tanh``: ``h =
    tanh(ha)`` given as it is (values in (-1, 1)), with zero bias and zero
    inputs at the first step of two cases (so ``ha`` and ``h`` are exactly 0
    there). ``mapped``: ``h = (tanh(ha) + 1) / 2``, as the other tests pass it.
    ``_saturated``: weights 40 times larger, so that some units round to
    exactly 0 or 1. A form and its saturated twin share one graph and its
    compiled functions; the weights are set for each test.
    """
    cache = {}

    def get(form):
        base = form.removesuffix("_saturated")
        if base not in cache:
            m = rnn(structural=True, n=4)
            if base == "tanh":
                m.h = pt.tanh(m.ha)
                m.p[2].set_value(np.zeros_like(m.p[2].get_value()))
                m.batch[0][0, :2] = 0.0
            cache[base] = m, [x.get_value() for x in m.p], _opt(m), _opt(m, cache_forward=False)
        m, values, cached, plain = cache[base]
        scale = 40.0 if form.endswith("_saturated") else 1.0
        for i, (x, value) in enumerate(zip(m.p, values)):
            x.set_value(value * scale if i < 2 else value)  # Wx, Wh
        return m, cached, plain

    return get


@pytest.mark.parametrize("form", ["tanh", "mapped", "tanh_saturated", "mapped_saturated"])
def test_structural_damping_finite_and_equal_to_dense_reference(form, structural_models):
    """``c J_ha^T H_D J_ha v`` with ``D`` the cross-entropy on ``(tanh(ha) + 1) / 2``, from explicit Jacobians.

    ``H_D`` at ``ha`` is ``diag(1 - tanh(ha)**2) / cases`` for tanh units (0 at
    saturated units). The products must be finite for every coefficient,
    including 0, with and without the cached forward pass.
    """
    import pytensor

    m, cached, plain = structural_models(form)
    ha_val = pytensor.function(m.inputs, m.ha, on_unused_input="ignore")(*m.batch)
    u_val = (np.tanh(ha_val) + 1) / 2
    saturated = (u_val == 0) | (u_val == 1)
    if form.startswith("tanh"):
        assert (ha_val == 0).any()
    assert saturated.any() == form.endswith("saturated")
    n_cases = ha_val.shape[-2]
    with np.errstate(over="ignore"):
        w = 1 / np.cosh(ha_val) ** 2 / n_cases  # 1 - tanh**2 without its cancellation near saturation

    n = cached.layout.size
    ref = explicit_gauss_newton(m, cached.layout, split=m.ha, loss=lambda a: 0.5 * pt.sum(w * a ** 2))
    assert np.abs(ref).max() > 1e-6
    if not saturated.any():  # the definition: Hessian of the cross-entropy D at ha, by PyTensor
        def distance(ha_var):
            from pytensor.graph.replace import clone_replace

            u = (pt.tanh(ha_var) + 1) / 2
            return pt.sum(-(u_val * pt.log(u) + (1 - u_val) * pt.log(1 - u))) / n_cases

        assert max_rel_err(explicit_gauss_newton(m, cached.layout, split=m.ha, loss=distance), ref) <= 1e-12
    G = explicit_gauss_newton(m, cached.layout)
    # (h + 1) / 2 computed from tanh loses the relative accuracy of 1 - tanh**2 near saturation
    tol = TOL if form == "mapped_saturated" else 1e-10
    rng = np.random.default_rng(11)
    for opt in (cached, plain):
        for _ in range(2):
            v = rng.normal(size=n)
            g0 = opt.gauss_newton_product(v, m.batch, structural_coefficient=0.0)
            g1 = opt.gauss_newton_product(v, m.batch, structural_coefficient=0.05)
            assert np.isfinite(g0).all() and np.isfinite(g1).all()
            assert max_rel_err(g0, G @ v) <= 1e-12
            assert max_rel_err((g1 - g0) / 0.05, ref @ v) <= tol
    # the structural term alone (added to exact Hessian products)
    op = cached.curvature_operator(m.batch, structural_coefficient=0.05, curvature="hessian")
    v = rng.normal(size=n)
    assert max_rel_err((op.matvec(v) - cached.hessian_product(v, m.batch)) / 0.05, ref @ v) <= tol


def test_structural_damping_tanh_units_split_at_themselves():
    """``h = tanh(ha)`` without ``ha``: ``D`` (cross-entropy on ``(h + 1) / 2``) is split at ``h`` itself."""
    import pytensor

    m = rnn(structural=True, n=4)
    m.h, m.ha = pt.tanh(m.ha), None
    opt = _opt(m)
    h_val = pytensor.function(m.inputs, m.h, on_unused_input="ignore")(*m.batch)
    u_val, n_cases = (h_val + 1) / 2, h_val.shape[-2]

    def distance(h_var):
        u = (h_var + 1) / 2
        return pt.sum(-(u_val * pt.log(u) + (1 - u_val) * pt.log(1 - u))) / n_cases

    ref = explicit_gauss_newton(m, opt.layout, split=m.h, loss=distance)
    assert np.abs(ref).max() > 1e-6
    rng = np.random.default_rng(12)
    for _ in range(2):
        v = rng.normal(size=opt.layout.size)
        g0 = opt.gauss_newton_product(v, m.batch, structural_coefficient=0.0)
        g1 = opt.gauss_newton_product(v, m.batch, structural_coefficient=0.05)
        assert max_rel_err((g1 - g0) / 0.05, ref @ v) <= 1e-10
