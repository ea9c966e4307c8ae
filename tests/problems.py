"""Small training problems shared by the test folders: logistic regression with L2 (with its numpy
cost, gradient, Hessian and scipy's optimum) and the 2012 XOR network."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.optimize

from hf_symbolic import BatchDataset, SequenceDataset, hf_optimizer
from models import DatasetWrapper

MODE = "FAST_COMPILE"

# ---------------------------------------------------------------------------------------------
# Logistic regression with L2: f(w, b) = mean_i [softplus(z_i) - y_i z_i] + ALPHA/2 ||w||^2, z = Xw + b
# ---------------------------------------------------------------------------------------------
N_CASES, N_FEATURES, ALPHA = 200, 5, 0.01


def lr_data(seed=0, n=N_CASES):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    w_true = 1.5 * np.random.default_rng(99).normal(size=N_FEATURES)
    Y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ w_true + 0.3)))).astype(np.float64)
    return X, Y


def np_cost(theta, X, Y):
    z = X @ theta[:N_FEATURES] + theta[N_FEATURES]
    return float(np.mean(np.logaddexp(0.0, z) - Y * z) + 0.5 * ALPHA * theta[:N_FEATURES] @ theta[:N_FEATURES])


def np_grad(theta, X, Y):
    z = X @ theta[:N_FEATURES] + theta[N_FEATURES]
    r = (1.0 / (1.0 + np.exp(-z)) - Y) / len(Y)
    return np.r_[X.T @ r + ALPHA * theta[:N_FEATURES], r.sum()]


def np_hessian(theta, X, Y):
    z = X @ theta[:N_FEATURES] + theta[N_FEATURES]
    sig = 1.0 / (1.0 + np.exp(-z))
    Xa = np.c_[X, np.ones(len(Y))]
    H = (Xa * (sig * (1 - sig))[:, None]).T @ Xa / len(Y)
    H[:N_FEATURES, :N_FEATURES] += ALPHA * np.eye(N_FEATURES)
    return H


def build_lr(curvature="gauss-newton"):
    """The logistic regression as an hf_optimizer (parameters w then b, all zero).

    The L2 term depends on ``w`` directly, not through the pre-activation
    ``z``, so with the split at ``z`` the Gauss-Newton matrix would miss its
    curvature ``ALPHA * I``.  For ``"gauss-newton"`` the split is therefore the
    stack ``s = [z; sqrt(ALPHA) w]`` with the loss ``mean CE(s[:n]) + ||s[n:]||^2 / 2``:
    the same cost, a loss convex in ``s``, and, ``s`` being linear in the
    parameters, ``G = J^T H_L J`` equal to the exact Hessian (checked below).
    For ``"hessian"`` the split is ``z`` and the L2 term is outside it; the
    exact Hessian product sees it anyway.
    """
    w = pytensor.shared(np.zeros(N_FEATURES), name="w")
    b = pytensor.shared(np.float64(0.0), name="b")
    x, y = pt.matrix("x", dtype="float64"), pt.vector("y", dtype="float64")
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


@pytest.fixture(scope="module")
def lr():
    return build_lr("gauss-newton")


@pytest.fixture(scope="module")
def lr_hessian():
    return build_lr("hessian")


@pytest.fixture(scope="module")
def lr_optimum():
    """scipy's optimum of the full-data problem (BFGS with the exact gradient), polished by Newton steps."""
    X, Y = lr_data()
    res = scipy.optimize.minimize(np_cost, np.zeros(N_FEATURES + 1), args=(X, Y), jac=np_grad, method="BFGS",
                                  options=dict(gtol=1e-12, maxiter=10_000))
    assert np.linalg.norm(np_grad(res.x, X, Y)) < 1e-7
    x = res.x
    for _ in range(2):  # BFGS stops on precision loss near 1e-9; Newton converges quadratically from there
        x = x - np.linalg.solve(np_hessian(x, X, Y), np_grad(x, X, Y))
    # independent check of the reference: gradient ~ 0, so |x - x*| <= |g| / lambda_min(H) ~ 1e-14
    assert np.linalg.norm(np_grad(x, X, Y)) < 1e-14
    assert np.linalg.eigvalsh(np_hessian(x, X, Y)).min() > 0.05
    assert np.abs(x - res.x).max() < 1e-6
    return x, np_cost(x, X, Y)


def full_batch(X, Y, seed=0):
    return BatchDataset([X, Y], len(Y), seed=seed)


def lr_datasets(grad_seed=1, cg_seed=2):
    """Gradient batches of 50 and CG batches of 20 cases from the 200 training cases, and 100 validation cases."""
    X, Y = lr_data()
    Xv, Yv = lr_data(seed=5, n=100)
    return (BatchDataset([X, Y], 50, seed=grad_seed), BatchDataset([X, Y], 20, seed=cg_seed),
            BatchDataset([Xv, Yv], 100, seed=3))


class Recorder:
    """Callback keeping every UpdateStats and the parameters after each update."""

    def __init__(self, opt, stop_at=None, interrupt_at=None):
        self.opt, self.stop_at, self.interrupt_at = opt, stop_at, interrupt_at
        self.stats, self.thetas = [], []

    def __call__(self, stats):
        self.stats.append(stats)
        self.thetas.append(self.opt.get_flat())
        if stats.update == self.interrupt_at:
            raise KeyboardInterrupt
        if stats.update == self.stop_at:
            raise StopIteration


class Faulty(DatasetWrapper):
    """A dataset wrapper that poisons or interrupts chosen ``iterate`` calls (1-based call numbers).

    ``nan_at``: the first array of every batch of those calls gets a NaN;
    ``interrupt_at``: that call raises KeyboardInterrupt after yielding its first batch.
    The position and generator state are the wrapped dataset's, so checkpoints work.
    """

    def __init__(self, inner, nan_at=(), interrupt_at=None):
        super().__init__(inner)
        self.nan_at, self.interrupt_at = set(nan_at), interrupt_at
        self.calls = 0

    def iterate(self, update=True):
        self.calls += 1
        call = self.calls
        for i, batch in enumerate(self.inner.iterate(update)):
            if call == self.interrupt_at and i == 1:
                raise KeyboardInterrupt
            if call in self.nan_at:
                batch = [batch[0].copy(), *batch[1:]]
                batch[0].flat[0] = np.nan
            yield batch


XOR_SIZES = (2, 50, 40, 30, 1)
XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])


@pytest.fixture(scope="module")
def xor_net():
    """2-50-40-30-1 sigmoid network, cross-entropy on the output; costs = [CE, zero-one error]."""
    x, y = pt.matrix("x", dtype="float64"), pt.matrix("y", dtype="float64")
    params, a = [], x
    for i, (m, n) in enumerate(zip(XOR_SIZES[:-1], XOR_SIZES[1:])):
        W = pytensor.shared(np.zeros((m, n)), name=f"W{i}")
        b = pytensor.shared(np.zeros(n), name=f"b{i}")
        params += [W, b]
        s = pt.dot(a, W) + b
        a = pt.sigmoid(s)
    ce = pt.mean(pt.sum(pt.softplus(s) - y * s, axis=1))  # = -y log a - (1 - y) log(1 - a), stable
    error = pt.mean(pt.neq(pt.gt(s, 0), pt.gt(y, 0.5)))
    return hf_optimizer(params, [x, y], s, [ce, error], mode=MODE)


def xor_init(seed):
    rng = np.random.default_rng(seed)
    out = []
    for m, n in zip(XOR_SIZES[:-1], XOR_SIZES[1:]):
        out += [rng.normal(size=(m, n)) / np.sqrt(m), np.zeros(n)]
    return out


def xor_predict(params):
    a = XOR_X
    for W, b in zip(params[:-2:2], params[1:-2:2]):
        a = 1.0 / (1.0 + np.exp(-(a @ W + b)))
    return (a @ params[-2] + params[-1]) > 0


def check_xor_solved(xor_net, seed):
    """Train the XOR net from ``xor_init(seed)`` until 0 validation errors (at most 40 updates) and check it."""
    init = xor_init(seed)
    assert (xor_predict(init) != (XOR_Y > 0.5)).any(), "the initial network must not solve XOR already"
    for p, v in zip(xor_net.p, init):
        p.set_value(v)

    def stop_when_solved(stats):
        if stats.validation[1] == 0.0:
            raise StopIteration

    data = BatchDataset([XOR_X, XOR_Y], 4, seed=seed)
    valid = BatchDataset([XOR_X, XOR_Y], 4, seed=seed)
    params = xor_net.train(data, data, num_updates=40, validation=valid, callback=stop_when_solved)
    result = xor_net.result
    assert result.status == "callback", f"not solved in 40 updates: {[s.validation for s in result.history]}"
    assert result.updates <= 40
    assert result.history[-1].validation[1] == 0.0
    # independent forward pass of the returned parameters
    assert np.array_equal(xor_predict(params), XOR_Y > 0.5)
    assert result.best_validation[0] < result.history[0].costs[0]
