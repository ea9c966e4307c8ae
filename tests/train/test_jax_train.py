"""``hf_optimizer.train`` end to end with ``mode="JAX"``: the convergence tests of ``test_training.py``.

The models are those of ``test_training.py`` (L2-regularized logistic
regression reaching scipy's optimum, and the 2012 XOR network reaching zero
error) built for JAX: JAX compiles for static shapes, so the inputs have the
batch's static shape and the parameters their own (``pytensor.shared(...,
shape=...)``); the batch size in the graph is ``x.shape[0]``, which JAX sees
as a constant. Same data, same references, same tolerances as the default
backend's tests. float64 throughout (PyTensor turns on ``jax_enable_x64``
when ``floatX`` is float64, its default).
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

pytest.importorskip("jax")

from hf_symbolic import hf_optimizer  # noqa: E402
from problems import (  # noqa: E402,F401  (lr_optimum is a fixture)
    ALPHA, N_CASES, N_FEATURES, XOR_SIZES, XOR_X, XOR_Y, check_xor_solved, full_batch, lr_data, lr_optimum, np_cost,
)

MODE = "JAX"


def build_lr(curvature):
    """``test_training.build_lr`` with static shapes (see its docstring for the stacked split)."""
    w = pytensor.shared(np.zeros(N_FEATURES), name="w", shape=(N_FEATURES,))
    b = pytensor.shared(np.float64(0.0), name="b")
    x = pt.tensor("x", dtype="float64", shape=(N_CASES, N_FEATURES))
    y = pt.tensor("y", dtype="float64", shape=(N_CASES,))
    z = pt.dot(x, w) + b
    error = pt.mean(pt.neq(pt.gt(z, 0), pt.gt(y, 0.5)))
    if curvature == "gauss-newton":
        n = x.shape[0]
        s = pt.concatenate([z, np.sqrt(ALPHA) * w])
        cost = pt.mean(pt.softplus(s[:n]) - y * s[:n]) + 0.5 * pt.sum(s[n:] ** 2)
    else:
        s = z
        cost = pt.mean(pt.softplus(z) - y * z) + 0.5 * ALPHA * pt.sum(w ** 2)
    return hf_optimizer([w, b], [x, y], s, [cost, error], curvature=curvature, mode=MODE)


@pytest.mark.parametrize("curvature,preconditioner", [
    ("gauss-newton", False),
    ("gauss-newton", True),
    ("hessian", False),
    ("hessian", True),
])
def test_convex_problem_reaches_scipy_optimum(lr_optimum, curvature, preconditioner):
    opt = build_lr(curvature)
    x_ref, f_ref = lr_optimum
    X, Y = lr_data()
    params = opt.train(full_batch(X, Y), full_batch(X, Y, seed=1), num_updates=25, preconditioner=preconditioner)
    assert all(type(p) is np.ndarray for p in params)  # JAX arrays are converted
    theta = np.concatenate([np.ravel(p) for p in params])
    assert opt.result.status == "num_updates" and opt.result.updates == 25
    assert np.abs(theta - x_ref).max() <= 1e-6, np.abs(theta - x_ref).max()
    assert abs(np_cost(theta, X, Y) - f_ref) <= 1e-10
    assert np.array_equal(theta, opt.get_flat())
    last = [s for s in opt.result.history if s.accepted][-1]
    assert last.new_cost == pytest.approx(f_ref, abs=1e-10)
    assert np.abs(x_ref).max() > 0.5


@pytest.fixture(scope="module")
def xor_net():
    """``test_training.xor_net`` with static shapes: 2-50-40-30-1 sigmoid network, costs = [CE, error]."""
    x = pt.tensor("x", dtype="float64", shape=XOR_X.shape)
    y = pt.tensor("y", dtype="float64", shape=XOR_Y.shape)
    params, a = [], x
    for i, (m, n) in enumerate(zip(XOR_SIZES[:-1], XOR_SIZES[1:])):
        W = pytensor.shared(np.zeros((m, n)), name=f"W{i}", shape=(m, n))
        b = pytensor.shared(np.zeros(n), name=f"b{i}", shape=(n,))
        params += [W, b]
        s = pt.dot(a, W) + b
        a = pt.sigmoid(s)
    ce = pt.mean(pt.sum(pt.softplus(s) - y * s, axis=1))
    error = pt.mean(pt.neq(pt.gt(s, 0), pt.gt(y, 0.5)))
    return hf_optimizer(params, [x, y], s, [ce, error], mode=MODE)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_network_reaches_zero_validation_error(xor_net, seed):
    check_xor_solved(xor_net, seed)


def test_the_functions_are_jax_compiled():
    """The runs above really use JAX: the compiled gradient is a JAX function returning JAX arrays."""
    import jax

    opt = build_lr("hessian")
    X, Y = lr_data()
    out = opt._function("gradient")(X, Y)
    assert isinstance(out[0], jax.Array)
    g, _ = opt.gradient([X, Y])
    assert type(g) is np.ndarray and g.dtype == np.float64
