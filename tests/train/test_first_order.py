"""SGD (classical and Nesterov momentum) and Adam as step rules of the one training loop.

Each rule is checked step for step against a numpy implementation of its
update on a least-squares problem whose gradient is known in closed form (one
full batch per update, float64), and a run resumed from its checkpoint is
checked in lockstep against the uninterrupted run.
"""

from hf_symbolic import BatchDataset  # first: it links OpenBLAS
from hf_symbolic.errors import ArgumentError, NumericalFailureError
from hf_symbolic.optimizer import adam_optimizer, sgd_optimizer

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

RNG = np.random.default_rng(3)
X = RNG.normal(size=(32, 4))
Y = X @ np.array([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * RNG.normal(size=(32, 1))


def problem(cls):
    W = pytensor.shared(np.zeros((4, 1)), name="W")
    x, y = pt.matrix("x"), pt.matrix("y")
    s = pt.dot(x, W)
    opt = cls([W], [x, y], s, [pt.mean((s - y) ** 2)], mode="FAST_COMPILE")
    return opt, BatchDataset([X, Y], 32, seed=0)


def grad(w):
    return (2.0 / len(X)) * X.T @ (X @ w - Y)


def reference_sgd(steps, lr, mom, nesterov):
    w, v = np.zeros((4, 1)), np.zeros((4, 1))
    for _ in range(steps):
        g = grad(w + mom * v) if nesterov else grad(w)
        v = mom * v - lr * g
        w = w + v
    return w.ravel()


def reference_adam(steps, lr, b1, b2, eps):
    w, m, s = np.zeros((4, 1)), np.zeros((4, 1)), np.zeros((4, 1))
    for t in range(1, steps + 1):
        g = grad(w)
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(s / (1 - b2 ** t)) + eps)
    return w.ravel()


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_the_numpy_update(nesterov):
    opt, data = problem(sgd_optimizer)
    opt.train(data, learning_rate=0.05, momentum=0.8, num_updates=12, nesterov=nesterov)
    np.testing.assert_allclose(opt.get_flat(), reference_sgd(12, 0.05, 0.8, nesterov), rtol=1e-12, atol=1e-14)


def test_nesterov_differs_from_classical_momentum():
    a, b = reference_sgd(5, 0.05, 0.8, False), reference_sgd(5, 0.05, 0.8, True)
    assert np.max(np.abs(a - b)) > 1e-3  # so the test above tells them apart


def test_adam_matches_the_numpy_update():
    opt, data = problem(adam_optimizer)
    opt.train(data, learning_rate=0.1, beta1=0.8, beta2=0.99, eps=1e-6, num_updates=15)
    np.testing.assert_allclose(opt.get_flat(), reference_adam(15, 0.1, 0.8, 0.99, 1e-6), rtol=1e-12, atol=1e-14)
    assert opt.result.status == "num_updates" and opt.result.updates == 15


@pytest.mark.parametrize("cls, kw", [
    (adam_optimizer, dict(learning_rate=0.1, beta1=0.8)),
    (sgd_optimizer, dict(learning_rate=0.05, momentum=0.8, nesterov=True)),
])
def test_resumed_run_is_in_lockstep_with_the_uninterrupted_one(tmp_path, cls, kw):
    full, data = problem(cls)
    full.train(data, num_updates=9, **kw)
    part, data2 = problem(cls)
    path = tmp_path / "run.ckpt"
    part.train(data2, num_updates=4, save_progress=path, **kw)
    again, data3 = problem(cls)  # a new process would build everything anew
    again.train(data3, num_updates=9, save_progress=path, **kw)
    assert np.array_equal(again.get_flat(), full.get_flat())
    assert [s.update for s in again.result.history] == list(range(1, 10))


def test_resuming_with_other_adam_options_is_refused(tmp_path):
    from hf_symbolic.errors import CheckpointMismatchError

    opt, data = problem(adam_optimizer)
    path = tmp_path / "run.ckpt"
    opt.train(data, num_updates=2, save_progress=path, learning_rate=0.1)
    with pytest.raises(CheckpointMismatchError, match=r"beta1=0\.9 \(now 0\.5\)"):
        opt.train(data, num_updates=4, save_progress=path, learning_rate=0.1, beta1=0.5)


@pytest.mark.parametrize("kw, expected", [
    (dict(learning_rate=0.0), "learning_rate=0.0 is invalid: expected a finite number > 0"),
    (dict(beta1=1.0), "beta1=1.0 is invalid: expected a number in [0, 1)"),
    (dict(eps="tiny"), "eps='tiny' is invalid: expected a finite number > 0"),
    (dict(steps_per_update=0), "steps_per_update=0 is invalid: expected an integer >= 1"),
])
def test_bad_adam_options_are_named(kw, expected):
    opt, data = problem(adam_optimizer)
    with pytest.raises(ArgumentError) as err:
        opt.train(data, **kw)
    assert expected in str(err.value)


def test_adam_stops_after_max_failures_with_parameters_untouched():
    class NaNTargets:  # a dataset (the datasets refuse NaN data themselves)
        def iterate(self, update=True):
            yield [X, np.full_like(Y, np.nan)]

        def update(self):
            pass

    opt, _ = problem(adam_optimizer)
    bad = NaNTargets()
    before = opt.get_flat()
    with pytest.raises(NumericalFailureError, match="Adam stopped at update 3: 3 consecutive non-finite updates"):
        opt.train(bad, num_updates=10, max_failures=3)
    assert np.array_equal(opt.get_flat(), before)
    assert opt.result.status == "numerical_failure"
