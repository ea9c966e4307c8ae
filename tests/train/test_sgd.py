"""The SGD baseline, :class:`sgd_optimizer`: the update rule, convergence and HF's training interface."""

import json
import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.optimize

from hf_symbolic import BatchDataset, SequenceDataset
from hf_symbolic.train.checkpoint import load_checkpoint
from hf_symbolic.errors import ArgumentError, CheckpointMismatchError, NumericalFailureError
from hf_symbolic.optimizer import sgd_optimizer
from hf_symbolic.train.stats import STOP_REASONS

MODE = "FAST_COMPILE"
N_CASES, N_FEATURES, ALPHA = 200, 5, 0.01


# logistic regression with L2: f(w, b) = mean_i [softplus(z_i) - y_i z_i] + ALPHA/2 ||w||^2, z = Xw + b
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


@pytest.fixture(scope="module")
def sgd():
    w = pytensor.shared(np.zeros(N_FEATURES), name="w")
    b = pytensor.shared(np.float64(0.0), name="b")
    x, y = pt.matrix("x", dtype="float64"), pt.vector("y", dtype="float64")
    z = pt.dot(x, w) + b
    cost = pt.mean(pt.softplus(z) - y * z) + 0.5 * ALPHA * pt.sum(w ** 2)
    error = pt.mean(pt.neq(pt.gt(z, 0), pt.gt(y, 0.5)))
    return sgd_optimizer([w, b], [x, y], z, [cost, error], mode=MODE)


@pytest.fixture(scope="module")
def optimum():
    X, Y = lr_data()
    res = scipy.optimize.minimize(np_cost, np.zeros(N_FEATURES + 1), args=(X, Y), jac=np_grad, method="BFGS",
                                  options=dict(gtol=1e-11, maxiter=10_000))
    assert np.linalg.norm(np_grad(res.x, X, Y)) < 1e-7  # |x - x*| <= |g| / 0.05
    return res.x


def minibatches(batch_size=50, seed=1):
    X, Y = lr_data()
    return BatchDataset([X, Y], batch_size, seed=seed)


def validation_set():
    Xv, Yv = lr_data(seed=5, n=100)
    return BatchDataset([Xv, Yv], 100, seed=3)


class Recorder:
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


class Scripted:
    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def __call__(self):
        self.calls += 1
        return [self.values[self.calls - 1]]


def history_without_clock(history):
    out = []
    for s in history:
        d = s.to_json()
        d.pop("seconds")
        d.pop("timings")
        out.append(json.dumps(d, sort_keys=True))
    return out


def test_update_rule_is_heavy_ball_momentum(sgd):
    """v <- momentum v - lr g(theta); theta <- theta + v, one step per batch, against numpy."""
    X, Y = lr_data()

    def thirds():  # 3 items of 50 cases (the last 50 cases unused), 2 items per update
        return SequenceDataset([[X[:50], X[50:100], X[100:150]], [Y[:50], Y[50:100], Y[100:150]]], None, 2, seed=0)

    lr, mom = 0.3, 0.7
    theta0 = np.linspace(-0.5, 0.5, N_FEATURES + 1)
    probe = thirds()  # same seed: replays the batches the optimizer sees
    theta, v, first_costs = theta0.copy(), np.zeros_like(theta0), []
    for _ in range(3):
        for i, (xb, yb) in enumerate(probe.iterate(update=True)):
            if i == 0:
                first_costs.append(np_cost(theta, xb, yb))
            v = mom * v - lr * np_grad(theta, xb, yb)
            theta = theta + v
    sgd.set_flat(theta0)
    params = sgd.train(thirds(), learning_rate=lr, momentum=mom, num_updates=3)
    np.testing.assert_allclose(np.concatenate([np.ravel(p) for p in params]), theta, rtol=1e-13, atol=1e-15)
    assert sgd.result.updates == 3 and sgd.result.status == "num_updates"
    # costs[0] of an update is the cost of its first batch before its first step
    np.testing.assert_allclose([s.costs[0] for s in sgd.result.history], first_costs, rtol=1e-13)


def test_full_batch_momentum_reaches_the_optimum(sgd, optimum):
    X, Y = lr_data()
    sgd.set_flat(np.zeros(N_FEATURES + 1))
    params = sgd.train(BatchDataset([X, Y], N_CASES, seed=0), learning_rate=2.0, momentum=0.5, num_updates=30,
                       steps_per_update=20)
    theta = np.concatenate([np.ravel(p) for p in params])
    assert np.abs(theta - optimum).max() < 1e-6
    assert np_cost(theta, X, Y) == pytest.approx(np_cost(optimum, X, Y), abs=1e-12)
    assert np.abs(optimum).max() > 0.5  # far from the start


def test_minibatch_sgd_gets_close(sgd, optimum):
    X, Y = lr_data()
    sgd.set_flat(np.zeros(N_FEATURES + 1))
    params = sgd.train(minibatches(), learning_rate=0.5, momentum=0.5, num_updates=150)
    theta = np.concatenate([np.ravel(p) for p in params])
    gap0 = np_cost(np.zeros(N_FEATURES + 1), X, Y) - np_cost(optimum, X, Y)
    assert np_cost(theta, X, Y) - np_cost(optimum, X, Y) < 0.02 * gap0


def test_validation_best_parameters_and_patience(sgd):
    sgd.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(sgd)
    validation = Scripted([3.0, 2.0, 2.5, 2.0, 2.2, 9.0])
    params = sgd.train(minibatches(), learning_rate=0.1, num_updates=6, validation=validation, patience=3,
                       callback=rec)
    r = sgd.result
    assert r.status == "patience" and r.message == STOP_REASONS["patience"] and r.updates == 5
    assert r.best_update == 2 and r.best_validation == (2.0,)
    assert np.array_equal(np.concatenate([np.ravel(p) for p in params]), rec.thetas[1])
    assert np.array_equal(sgd.get_flat(), rec.thetas[1]) and np.array_equal(r.x, rec.thetas[1])


def test_validation_dataset_and_frequency(sgd):
    sgd.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(sgd)
    sgd.train(minibatches(), learning_rate=0.1, num_updates=4, validation=validation_set(), validation_frequency=2,
              callback=rec)
    r = sgd.result
    assert [s.validation is None for s in r.history] == [True, False, True, False]
    Xv, Yv = lr_data(seed=5, n=100)
    for s, theta in zip(r.history, rec.thetas):
        if s.validation is not None:
            assert s.validation[0] == pytest.approx(np_cost(theta, Xv, Yv), rel=1e-12)
    assert r.best_update in (2, 4) and np.array_equal(r.x, rec.thetas[r.best_update - 1])


def test_callback_stop_iteration(sgd):
    sgd.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(sgd, stop_at=2)
    params = sgd.train(minibatches(), learning_rate=0.1, num_updates=10, callback=rec)
    r = sgd.result
    assert r.status == "callback" and r.success and r.updates == 2 and len(r.history) == 2
    assert np.array_equal(np.concatenate([np.ravel(p) for p in params]), rec.thetas[-1])


def _run(sgd, num_updates, path, *, callback=None, history_file=None, **kw):
    sgd.set_flat(np.zeros(N_FEATURES + 1))
    sgd.train(minibatches(), learning_rate=0.2, momentum=0.9, num_updates=num_updates, validation=validation_set(),
              save_progress=path, callback=callback, history_file=history_file, **kw)
    return sgd.result


def test_checkpoint_resume_is_bit_identical(sgd, tmp_path):
    straight = _run(sgd, 7, tmp_path / "straight.ckpt")
    x_ref, hist_ref = straight.x.copy(), history_without_clock(straight.history)
    first = _run(sgd, 3, tmp_path / "run.ckpt", history_file=tmp_path / "h.jsonl")
    assert first.updates == 3
    sgd.set_flat(np.full(N_FEATURES + 1, 5.0))  # ignored: the checkpoint's parameters are loaded
    sgd.train(minibatches(), learning_rate=0.2, momentum=0.9, num_updates=7, validation=validation_set(),
              save_progress=tmp_path / "run.ckpt", history_file=tmp_path / "h.jsonl")
    r = sgd.result
    assert r.updates == 7 and r.status == "num_updates"
    assert np.array_equal(r.x, x_ref)
    assert history_without_clock(r.history) == hist_ref
    assert r.best_update == straight.best_update
    a, meta_a = load_checkpoint(tmp_path / "run.ckpt")
    b, meta_b = load_checkpoint(tmp_path / "straight.ckpt")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert meta_a["datasets"] == meta_b["datasets"]
    assert np.any(a["velocity"] != 0)  # the momentum really had to be carried over
    lines = (tmp_path / "h.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == list(range(1, 8))


def test_keyboard_interrupt_then_resume(sgd, tmp_path):
    x_ref = _run(sgd, 5, tmp_path / "straight.ckpt").x.copy()
    path = tmp_path / "run.ckpt"
    r = _run(sgd, 5, path, callback=Recorder(sgd, interrupt_at=2))
    assert r.status == "interrupted" and not r.success and r.updates == 2
    assert load_checkpoint(path)[1]["update"] == 2
    assert np.array_equal(_run(sgd, 5, path).x, x_ref)


def test_changed_settings_are_refused(sgd, tmp_path):
    path = tmp_path / "run.ckpt"
    _run(sgd, 2, path)
    before = path.read_bytes()
    sgd.set_flat(np.full(N_FEATURES + 1, 0.5))
    with pytest.raises(CheckpointMismatchError):
        sgd.train(minibatches(), learning_rate=0.3, momentum=0.9, num_updates=4, save_progress=path)
    assert path.read_bytes() == before and np.array_equal(sgd.get_flat(), np.full(N_FEATURES + 1, 0.5))


def _with_bad_item(bad):
    """A dataset of 4 items of 50 cases, one item per update, item ``bad`` (in data order) holding a NaN."""
    X, Y = lr_data()
    xs, ys = [X[i:i + 50].copy() for i in range(0, N_CASES, 50)], [Y[i:i + 50] for i in range(0, N_CASES, 50)]
    xs[bad][0, 0] = np.nan
    return SequenceDataset([xs, ys], None, 1, seed=4)


def test_nan_batch_is_rejected_and_skipped(sgd):
    """A NaN batch rejects its update (parameters kept, momentum reset) and is skipped, as in HF."""
    sgd.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(sgd)
    with np.errstate(invalid="ignore"):
        sgd.train(_with_bad_item(2), learning_rate=0.1, num_updates=8, max_failures=2, callback=rec)
    failed = [s.update for s in sgd.result.history if not s.accepted]
    assert len(failed) == 2  # once per epoch of 4 items
    assert all(s.failure == "nonfinite cost or gradient" for s in sgd.result.history if not s.accepted)
    for u in failed:
        before = rec.thetas[u - 2] if u >= 2 else np.zeros(N_FEATURES + 1)
        assert np.array_equal(rec.thetas[u - 1], before)
    assert all(np.all(np.isfinite(t)) for t in rec.thetas)


def test_consecutive_failures_raise(sgd):
    X, Y = lr_data()
    X = X.copy()
    X[0, 0] = np.nan
    theta = np.full(N_FEATURES + 1, 0.1)
    sgd.set_flat(theta)
    with np.errstate(invalid="ignore"), pytest.raises(NumericalFailureError, match="3 consecutive"):
        sgd.train(SequenceDataset([[X], [Y]], None, 1, seed=0), learning_rate=0.1, num_updates=10, max_failures=3)
    assert np.array_equal(sgd.get_flat(), theta)


@pytest.mark.parametrize("kw,match", [(dict(learning_rate=0.0), "learning_rate"), (dict(momentum=1.0), "momentum"),
                                      (dict(steps_per_update=0), "steps_per_update"),
                                      (dict(learning_rate=math.inf), "learning_rate")])
def test_invalid_arguments(sgd, kw, match):
    with pytest.raises(ArgumentError, match=match):
        sgd.train(minibatches(), **kw)


class AtPositions:
    """Wraps a dataset: batches served from the given positions hold a NaN; ``interrupt`` raises mid-pass instead.

    Keyed on the wrapped dataset's position, which checkpoints restore, so a resumed run meets the same faults.
    """

    def __init__(self, inner, nan_positions=(), interrupt_positions=()):
        self.inner, self.nan, self.interrupt = inner, set(nan_positions), set(interrupt_positions)
        self.calls = 0

    def iterate(self, update=True):
        self.calls += 1
        position = self.inner.position
        for i, batch in enumerate(self.inner.iterate(update)):
            if position in self.interrupt and i == 1:
                raise KeyboardInterrupt
            if position in self.nan:
                batch = [batch[0].copy(), *batch[1:]]
                batch[0].flat[0] = np.nan
            yield batch

    def update(self):
        self.inner.update()

    @property
    def position(self):
        return self.inner.position

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def test_failure_count_survives_resume(sgd, tmp_path):
    """Positions 2 and 3 (updates 3 and 4) fail; with max_failures=2 a resumed run stops where a straight one does."""
    def train(n, path):
        sgd.set_flat(np.zeros(N_FEATURES + 1))
        sgd.train(AtPositions(minibatches(), nan_positions={2, 3}), learning_rate=0.1, num_updates=n, max_failures=2,
                  save_progress=path)

    with np.errstate(invalid="ignore"):
        with pytest.raises(NumericalFailureError, match="update 4"):
            train(8, tmp_path / "straight.ckpt")
        train(3, tmp_path / "run.ckpt")
        assert [s.accepted for s in sgd.result.history] == [True, True, False]
        with pytest.raises(NumericalFailureError, match="update 4"):
            train(8, tmp_path / "run.ckpt")


def test_interrupt_inside_an_update_keeps_the_last_whole_update(sgd):
    X, Y = lr_data()
    data = AtPositions(BatchDataset([X, Y], 25, number_batches=2, seed=1), interrupt_positions={4})
    sgd.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(sgd)
    sgd.train(data, learning_rate=0.1, num_updates=10, callback=rec)  # positions 0, 2, 4: interrupted in update 3
    assert sgd.result.status == "interrupted" and sgd.result.updates == 2
    assert np.array_equal(sgd.get_flat(), rec.thetas[1]) and np.array_equal(sgd.result.x, rec.thetas[1])
