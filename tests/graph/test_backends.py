"""The same products on every PyTensor backend, and float32 products against float64 ones.

The reference is FAST_COMPILE (Python implementations, few rewrites, no C
code to compile; hf_symbolic leaves out its wrong rewrite). Other
backends compile the same symbolic graphs with other linkers and rewrite sets,
so agreement to rounding error checks that nothing in the curvature graphs
depends on one backend's behaviour. The Gauss-Newton product is compared both
as the plain graph (``cache_forward=False``) and as the partially evaluated
graph with a cached forward pass (the default).
"""

import importlib.util

import numpy as np
import pytensor.tensor as pt
import pytest
from pytensor.graph.replace import clone_replace

from hf_symbolic import hf_optimizer
from models import production_mode, rnn

# Largest error allowed, relative to the largest entry of the reference, keyed on dtype.
TOL = {np.dtype("float64"): 1e-10, np.dtype("float32"): 1e-4}

COEFFICIENT = 0.3  # structural-damping coefficient of the structural model's Gv
KINDS = {"rnn": dict(structural=False), "rnn_structural": dict(structural=True)}
HAS_JAX = importlib.util.find_spec("jax") is not None
REFERENCE = "FAST_COMPILE"
PRODUCTION = production_mode()  # what mode=None picks outside the suite: the C VM with OpenBLAS here


def build(kind, dtype="float64", static_shapes=False):
    """The RNN of ``models.rnn`` with weights exactly representable in float32.

    With ``static_shapes`` the symbolic inputs are replaced by tensors whose
    static shape is the batch's shape (JAX needs them to trace ``scan``).
    """
    m = rnn(dtype=dtype, **KINDS[kind])
    for x in m.p:  # float32 and float64 models then hold the same numbers
        x.set_value(x.get_value().astype("float32").astype(dtype))
    if static_shapes:
        new = [pt.tensor(x.name, dtype=x.dtype, shape=a.shape) for x, a in zip(m.inputs, m.batch)]
        outs = [m.s, *m.costs] + ([m.h, m.ha] if m.h is not None else [])
        outs = clone_replace(outs, replace=dict(zip(m.inputs, new)))
        m.inputs, m.s, m.costs = new, outs[0], outs[1 : 1 + len(m.costs)]
        if m.h is not None:
            m.h, m.ha = outs[-2:]
    return m


def direction(size, dtype):
    return np.random.default_rng(7).normal(size=size).astype("float32").astype(dtype)


def optimizer(m, mode, cache_forward):
    return hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha, mode=mode, cache_forward=cache_forward)


def products(m, mode):
    """Cost, gradient, Hv and the plain Gauss-Newton product (``cache_forward=False``)."""
    opt = optimizer(m, mode, cache_forward=False)
    v = direction(opt.layout.size, opt.layout.dtype)
    g, costs = opt.gradient(m.batch)
    out = dict(cost=np.asarray(costs[0]), gradient=g, hessian=opt.hessian_product(v, m.batch))
    if opt.has_structural_damping:
        out["gauss_newton"] = opt.gauss_newton_product(v, m.batch, structural_coefficient=COEFFICIENT)
        out["gauss_newton_at_0"] = opt.gauss_newton_product(v, m.batch)
    else:
        out["gauss_newton"] = opt.gauss_newton_product(v, m.batch)
    return out


def cached_gauss_newton(m, mode):
    """Gv through the default, partially evaluated product (the cached forward pass)."""
    opt = optimizer(m, mode, cache_forward=True)
    v = direction(opt.layout.size, opt.layout.dtype)
    c = COEFFICIENT if opt.has_structural_damping else 0.0
    a = opt.gauss_newton_product(v, m.batch, structural_coefficient=c)
    b = opt.curvature_operator(m.batch, structural_coefficient=c).matvec(v)
    np.testing.assert_array_equal(a, b)
    return a


@pytest.fixture(scope="module")
def reference():
    """float64 products of each model on the reference backend, computed once per model."""
    cache = {}

    def get(kind, cached=False):
        key = (kind, cached)
        if key not in cache:
            m = build(kind)
            cache[key] = cached_gauss_newton(m, REFERENCE) if cached else products(m, REFERENCE)
        return cache[key]

    return get


def assert_close(got, want, dtype, what):
    assert got.shape == want.shape, what
    scale = float(np.max(np.abs(want)))
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert err <= TOL[np.dtype(dtype)] * scale, f"{what}: max abs error {err:.3g}, scale {scale:.3g}"


def test_reference_is_informative(reference):
    plain, structural = reference("rnn"), reference("rnn_structural")
    for name in ("gradient", "gauss_newton", "hessian"):
        assert np.max(np.abs(plain[name])) > 1e-3, name
    # h only adds the damping term: cost, gradient, Hv and Gv at coefficient 0 are the plain model's.
    for name in ("cost", "gradient", "hessian"):
        assert_close(structural[name], plain[name], "float64", name)
    assert_close(structural["gauss_newton_at_0"], plain["gauss_newton"], "float64", "structural model's Gv at coefficient 0")
    # ... and the coefficient does change Gv, so comparing it across backends tests the damping term.
    diff = np.max(np.abs(structural["gauss_newton"] - plain["gauss_newton"]))
    assert diff > 1e-3 * np.max(np.abs(plain["gauss_newton"]))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_cached_forward_pass_matches_plain_product(reference, kind):
    assert_close(reference(kind, cached=True), reference(kind)["gauss_newton"], "float64", f"cached Gv {kind}")


def _skip_if_default(mode):
    if mode == REFERENCE:
        pytest.skip(f"{mode} is the reference itself")


BACKENDS = [
    pytest.param("NUMBA", False, id="NUMBA"),
    pytest.param("FAST_COMPILE", False, id="FAST_COMPILE"),
    pytest.param("CVM", False, id="CVM"),
    pytest.param("JAX", True, id="JAX-static-shapes", marks=pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")),
]


# Across backends only the structural model runs (to keep this file fast): its gradient
# and Hv graphs are the plain model's, its Gv graph holds every op of the plain one,
# and test_reference_is_informative ties its numbers to the plain model's.


@pytest.mark.parametrize("mode, static_shapes", BACKENDS)
def test_backend_agrees_with_default(reference, mode, static_shapes):
    _skip_if_default(mode)
    want = reference("rnn_structural")
    got = products(build("rnn_structural", static_shapes=static_shapes), mode=mode)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == np.float64, f"{name} was computed in {got[name].dtype}"
        assert_close(got[name], want[name], "float64", f"{mode} {name}")


@pytest.mark.parametrize("mode, static_shapes", BACKENDS)
def test_backend_cached_gauss_newton_agrees_with_default(reference, mode, static_shapes):
    _skip_if_default(mode)
    got = cached_gauss_newton(build("rnn_structural", static_shapes=static_shapes), mode=mode)
    assert_close(got, reference("rnn_structural")["gauss_newton"], "float64", f"{mode} cached Gv")


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
@pytest.mark.xfail(
    raises=TypeError,
    strict=True,
    reason="PyTensor 3.0.7's JAX backend cannot trace scan when the sequence length is only known at run time "
    "(a scan buffer's shape is a tracer); the inputs need static shapes",
)
def test_jax_without_static_shapes():
    m = build("rnn")
    optimizer(m, "JAX", cache_forward=False).gradient(m.batch)


def test_float32_matches_float64(reference):
    kind = "rnn_structural"  # covers every graph of the plain model plus the damping term
    m32, m64 = build(kind, "float32"), build(kind, "float64")
    for a, b in zip(m32.p, m64.p):
        np.testing.assert_array_equal(a.get_value().astype(np.float64), b.get_value())
    got, want = products(m32, mode=PRODUCTION), reference(kind)
    got["gauss_newton_cached"] = cached_gauss_newton(m32, mode=PRODUCTION)
    want = dict(want, gauss_newton_cached=want["gauss_newton"])
    assert sorted(got) == sorted(want)
    for name in want:
        if name != "cost":  # costs come back as Python floats
            assert got[name].dtype == np.float32, f"{name} was computed in {got[name].dtype}"
        assert_close(got[name], want[name], "float32", f"float32 {kind} {name}")
