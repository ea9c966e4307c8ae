"""The HF training driver, :meth:`hf_optimizer.train`, end to end (float64, FAST_COMPILE).

* convergence to scipy's optimum on a strictly convex problem (logistic
  regression with L2), and the 2012 XOR network trained to zero error;
* faults: costs that turn NaN along the step, NaN batches, non-finite
  curvature, corrupt or foreign checkpoints, changed options, interrupts;
* the bookkeeping: callback stop, patience, validation frequency, the
  JSON-lines history, the result record and the best parameters.

Bit-identical resumption in a fresh process is in ``test_resume.py``.
"""

import dataclasses
import json
import math
import time

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.optimize

from hf_symbolic import BatchDataset, SequenceDataset, hf_optimizer
from hf_symbolic.train.checkpoint import load_checkpoint
from hf_symbolic.solve.damping import DampingRule
from hf_symbolic.errors import ArgumentError, CheckpointCorruptError, CheckpointMismatchError, NumericalFailureError
from hf_symbolic.train.stats import STOP_REASONS
from models import DatasetWrapper
from problems import (  # noqa: F401  (fixtures among them)
    ALPHA, N_CASES, N_FEATURES, Faulty, Recorder, XOR_SIZES, XOR_X, XOR_Y, build_lr, check_xor_solved, full_batch, lr, lr_data, lr_datasets, lr_hessian, lr_optimum, np_cost, np_grad, np_hessian, xor_init, xor_net, xor_predict,
)

MODE = "FAST_COMPILE"
BOOST = DampingRule().boost  # lambda factor after a failed update (Martens: 3/2)

def history_without_clock(history):
    out = []
    for s in history:
        d = s.to_json()
        d.pop("seconds")
        d.pop("timings")
        out.append(json.dumps(d, sort_keys=True))
    return out


# ---------------------------------------------------------------------------------------------
# 1. convex problem: HF reaches scipy's optimum
# ---------------------------------------------------------------------------------------------
def test_stacked_split_gauss_newton_equals_the_exact_hessian(lr):
    """Justifies the split of ``build_lr``: its G is the numpy Hessian of the full cost (L2 included)."""
    X, Y = lr_data()
    theta = np.random.default_rng(7).normal(size=N_FEATURES + 1)
    lr.set_flat(theta)
    G = lr.curvature_operator([X, Y]).todense()
    np.testing.assert_allclose(G, np_hessian(theta, X, Y), rtol=1e-12, atol=1e-14)
    g, costs = lr.gradient([X, Y])
    np.testing.assert_allclose(g, np_grad(theta, X, Y), rtol=1e-12, atol=1e-15)
    assert costs[0] == pytest.approx(np_cost(theta, X, Y), rel=1e-13)


@pytest.mark.parametrize("curvature,preconditioner", [
    ("gauss-newton", False),
    ("gauss-newton", True),
    ("hessian", False),
    ("hessian", True),
])
def test_convex_problem_reaches_scipy_optimum(lr, lr_hessian, lr_optimum, curvature, preconditioner):
    opt = lr if curvature == "gauss-newton" else lr_hessian
    x_ref, f_ref = lr_optimum
    X, Y = lr_data()
    opt.set_flat(np.zeros(N_FEATURES + 1))
    params = opt.train(full_batch(X, Y), full_batch(X, Y, seed=1), num_updates=25, preconditioner=preconditioner)
    theta = np.concatenate([np.ravel(p) for p in params])
    assert opt.result.status == "num_updates" and opt.result.updates == 25
    assert np.abs(theta - x_ref).max() <= 1e-6, np.abs(theta - x_ref).max()
    assert abs(np_cost(theta, X, Y) - f_ref) <= 1e-10
    assert np.array_equal(theta, opt.get_flat())
    # HF's own record agrees with the numpy cost of the last accepted parameters
    last = [s for s in opt.result.history if s.accepted][-1]
    assert last.new_cost == pytest.approx(f_ref, abs=1e-10)
    # the starting point was far from the optimum: the test measures real progress
    assert np.abs(x_ref).max() > 0.5


# ---------------------------------------------------------------------------------------------
# 2. the 2012 XOR network
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_network_reaches_zero_validation_error(xor_net, seed):
    check_xor_solved(xor_net, seed)


# ---------------------------------------------------------------------------------------------
# 4. faults
# ---------------------------------------------------------------------------------------------
BARRIER_Y = np.array([1.2, -1.6, 0.0])  # ||y|| = 2, outside the barrier's unit ball
BARRIER_BETA = 0.01


@pytest.fixture(scope="module")
def barrier():
    """cost(w) = 1/2 ||w - y||^2 - beta log(1 - ||w||^2): NaN outside the unit ball.

    With the split ``s = I w`` the Gauss-Newton matrix is ``I`` (the barrier
    depends on ``w`` directly, so its curvature is not in ``G``), the gradient
    at ``w = 0`` is ``-y`` and the CG solution of ``(1 + lambda) p = y`` is
    ``p = y / (1 + lambda)``, outside the ball while ``lambda < ||y|| - 1 = 1``.
    """
    w = pytensor.shared(np.zeros(3), name="w")
    x, y = pt.matrix("x", dtype="float64"), pt.vector("y", dtype="float64")
    s = pt.dot(x, w)
    cost = 0.5 * pt.sum((s - y) ** 2) - BARRIER_BETA * pt.log(1.0 - pt.sum(w ** 2))
    return hf_optimizer([w], [x, y], s, [cost], mode=MODE)


def barrier_cost(w):
    return 0.5 * np.sum((w - BARRIER_Y) ** 2) - BARRIER_BETA * np.log(1.0 - w @ w)


def barrier_data():
    return BatchDataset([np.eye(3), BARRIER_Y], 3, seed=0)


def test_nan_cost_along_the_step_raises_lambda_and_keeps_parameters_finite(barrier):
    barrier.set_flat(np.zeros(3))
    rec = Recorder(barrier)
    with np.errstate(invalid="ignore"):
        barrier.train(barrier_data(), barrier_data(), num_updates=12, callback=rec)
    first = rec.stats[0]
    # the full step y / 1.1 is outside the ball: rho is NaN, lambda rises by 3/2, and the
    # line search finds the first Armijo point inside, alpha = 0.8^3 (0.8, 0.64 are still outside)
    assert math.isnan(first.rho) and first.new_cost < first.costs[0] and first.accepted
    assert first.next_lambda == pytest.approx(0.1 * BOOST, rel=1e-15)
    assert first.step == pytest.approx(0.8 ** 3, rel=1e-12)
    np.testing.assert_allclose(rec.thetas[0], 0.8 ** 3 * BARRIER_Y / 1.1, rtol=1e-10, atol=1e-14)
    assert first.new_cost == pytest.approx(barrier_cost(rec.thetas[0]), rel=1e-12)
    for s, theta in zip(rec.stats, rec.thetas):
        assert np.all(np.isfinite(theta)) and theta @ theta < 1.0
        if math.isnan(s.rho):
            assert s.next_lambda == pytest.approx(s.lambda_ * BOOST, rel=1e-15)
    costs = [barrier_cost(t) for t in rec.thetas]
    assert all(b <= a for a, b in zip(costs, costs[1:])), costs
    assert barrier.result.status == "num_updates"
    assert costs[-1] < barrier_cost(np.zeros(3)) - 1.0


def test_consecutive_failures_stop_with_numerical_failure(barrier):
    """Without a line search, every step outside the ball is a failure; max_failures of them stop training."""
    theta0 = np.array([0.0, 0.0, 0.0])
    barrier.set_flat(theta0)
    with np.errstate(invalid="ignore"), pytest.raises(NumericalFailureError, match="3 consecutive"):
        barrier.train(barrier_data(), barrier_data(), num_updates=20, line_search=False, max_failures=3)
    assert np.array_equal(barrier.get_flat(), theta0)


def test_failures_then_recovery_when_lambda_is_large_enough(barrier):
    """lambda 0.1 * 1.5^k: the step y / (1 + lambda) lands inside the ball first for k = 6 (lambda = 1.139)."""
    barrier.set_flat(np.zeros(3))
    rec = Recorder(barrier, stop_at=7)
    with np.errstate(invalid="ignore"):
        barrier.train(barrier_data(), barrier_data(), num_updates=20, line_search=False, max_failures=10,
                      callback=rec)
    assert len(rec.stats) == 7
    for k, (s, theta) in enumerate(zip(rec.stats[:6], rec.thetas)):
        assert not s.accepted and s.failure == "nonfinite cost after the step"
        assert s.lambda_ == pytest.approx(0.1 * BOOST ** k, rel=1e-14)
        assert s.next_lambda == pytest.approx(s.lambda_ * BOOST, rel=1e-15)
        assert np.array_equal(theta, np.zeros(3))
    ok = rec.stats[6]
    lam = 0.1 * BOOST ** 6
    assert ok.accepted and ok.failure == "" and ok.lambda_ == pytest.approx(lam, rel=1e-14)
    np.testing.assert_allclose(rec.thetas[6], BARRIER_Y / (1.0 + lam), rtol=1e-10)
    assert ok.new_cost == pytest.approx(barrier_cost(BARRIER_Y / (1.0 + lam)), rel=1e-10)


def test_nan_gradient_batch_rejects_that_update(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(lr)
    with np.errstate(invalid="ignore"):
        lr.train(Faulty(grad_ds, nan_at={3}), cg_ds, num_updates=5, callback=rec)
    bad = rec.stats[2]
    assert not bad.accepted and bad.failure == "nonfinite cost or gradient"
    assert math.isnan(bad.costs[0])
    assert bad.next_lambda == pytest.approx(bad.lambda_ * BOOST, rel=1e-15)
    assert np.array_equal(rec.thetas[2], rec.thetas[1])
    assert all(s.accepted for i, s in enumerate(rec.stats) if i != 2)
    assert not np.array_equal(rec.thetas[3], rec.thetas[2])
    assert all(np.all(np.isfinite(t)) for t in rec.thetas)


def test_nan_curvature_batch_rejects_that_update(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(lr)
    with np.errstate(invalid="ignore"):
        lr.train(grad_ds, Faulty(cg_ds, nan_at={2}), num_updates=4, callback=rec)
    bad = rec.stats[1]
    assert not bad.accepted and bad.failure == "nonfinite curvature product"
    assert bad.next_lambda == pytest.approx(bad.lambda_ * BOOST, rel=1e-15)
    assert np.array_equal(rec.thetas[1], rec.thetas[0])
    assert rec.stats[2].accepted and rec.stats[3].accepted
    assert all(np.all(np.isfinite(t)) for t in rec.thetas)


def test_a_permanently_bad_batch_is_skipped_every_epoch(lr):
    """One of 4 gradient items holds a NaN: its update is rejected once per epoch, never twice in a row."""
    X, Y = lr_data()
    xs, ys = [X[i:i + 50].copy() for i in range(0, N_CASES, 50)], [Y[i:i + 50] for i in range(0, N_CASES, 50)]
    xs[2][3, 1] = np.nan
    _, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    with np.errstate(invalid="ignore"):
        lr.train(SequenceDataset([xs, ys], None, 1, seed=4), cg_ds, num_updates=8, max_failures=2)
    failed = [s.update for s in lr.result.history if not s.accepted]
    assert len(failed) == 2 and failed[1] - failed[0] >= 2
    assert lr.result.status == "num_updates" and np.all(np.isfinite(lr.result.x))


def test_numerical_failure_keeps_parameters_and_advances_each_dataset_once_per_update(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(lr)
    with np.errstate(invalid="ignore"), pytest.raises(NumericalFailureError, match="2 consecutive"):
        lr.train(Faulty(grad_ds, nan_at={3, 4, 5}), cg_ds, num_updates=10, max_failures=2, callback=rec)
    assert len(rec.stats) == 3  # updates 1, 2 and the first failure; the second raises
    assert np.array_equal(lr.get_flat(), rec.thetas[1])
    # 4 updates ran: the CG dataset (10 items of 20 cases per epoch) moved by exactly 4 items
    assert cg_ds.position == 4


def _checkpointed_lr_run(lr, path, num_updates, **kw):
    grad_ds, cg_ds, valid = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    lr.train(grad_ds, cg_ds, num_updates=num_updates, validation=valid, save_progress=path, **kw)
    return lr.result


def test_truncated_checkpoint_raises_and_changes_nothing(lr, tmp_path):
    path = tmp_path / "run.ckpt"
    _checkpointed_lr_run(lr, path, 2)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    before = path.read_bytes()
    theta = np.arange(N_FEATURES + 1, dtype=np.float64)
    lr.set_flat(theta)
    grad_ds, cg_ds, valid = lr_datasets()
    for _ in range(2):  # the second call shows the lock was released
        with pytest.raises(CheckpointCorruptError):
            lr.train(grad_ds, cg_ds, num_updates=4, validation=valid, save_progress=path)
    assert path.read_bytes() == before
    assert np.array_equal(lr.get_flat(), theta)
    assert grad_ds.position == 0 and cg_ds.position == 0


def test_checkpoint_of_another_model_is_refused(lr, barrier, tmp_path):
    path = tmp_path / "run.ckpt"
    _checkpointed_lr_run(lr, path, 2)
    before = path.read_bytes()
    barrier.set_flat(np.full(3, 0.1))
    with pytest.raises(CheckpointMismatchError, match="another model"):
        barrier.train(barrier_data(), barrier_data(), num_updates=4, save_progress=path)
    assert path.read_bytes() == before
    assert np.array_equal(barrier.get_flat(), np.full(3, 0.1))


def test_checkpoint_of_other_curvature_is_refused(lr, lr_hessian, tmp_path):
    path = tmp_path / "run.ckpt"
    _checkpointed_lr_run(lr, path, 1)
    grad_ds, cg_ds, valid = lr_datasets()
    with pytest.raises(CheckpointMismatchError, match="curvature"):
        lr_hessian.train(grad_ds, cg_ds, num_updates=3, validation=valid, save_progress=path)


@pytest.mark.parametrize("option,value", [("initial_lambda", 0.2), ("preconditioner", True), ("cg_decay", 0.9),
                                          ("max_cg_iterations", 30)])
def test_changed_training_option_is_refused(lr, tmp_path, option, value):
    path = tmp_path / "run.ckpt"
    _checkpointed_lr_run(lr, path, 2)
    before = path.read_bytes()
    theta = np.full(N_FEATURES + 1, 0.25)
    lr.set_flat(theta)
    grad_ds, cg_ds, valid = lr_datasets()
    with pytest.raises(CheckpointMismatchError, match=option):
        lr.train(grad_ds, cg_ds, num_updates=4, validation=valid, save_progress=path, **{option: value})
    assert path.read_bytes() == before
    assert np.array_equal(lr.get_flat(), theta)
    assert grad_ds.position == 0 and cg_ds.position == 0


def test_mismatched_dataset_leaves_every_dataset_untouched(lr, tmp_path):
    """A checkpoint whose CG dataset differs is refused before anything is restored."""
    path = tmp_path / "run.ckpt"
    _checkpointed_lr_run(lr, path, 3)
    X, Y = lr_data()
    grad_ds, _, valid = lr_datasets()
    other_cg = BatchDataset([X, Y], 25, seed=2)
    states = [json.dumps(d.state_dict()["json"], sort_keys=True) for d in (grad_ds, other_cg, valid)]
    with pytest.raises(CheckpointMismatchError):
        lr.train(grad_ds, other_cg, num_updates=5, validation=valid, save_progress=path)
    assert [json.dumps(d.state_dict()["json"], sort_keys=True) for d in (grad_ds, other_cg, valid)] == states


def test_allowed_changes_resume(lr, tmp_path):
    """num_updates, patience, max_failures and time_budget may change between a run and its resumption."""
    path = tmp_path / "run.ckpt"
    _checkpointed_lr_run(lr, path, 2, patience=10, max_failures=4)
    grad_ds, cg_ds, valid = lr_datasets()
    lr.train(grad_ds, cg_ds, num_updates=3, validation=valid, save_progress=path, patience=20, max_failures=7,
             time_budget=1000.0)
    assert lr.result.updates == 3 and len(lr.result.history) == 3


def _interrupt_datasets(where):
    grad_ds, cg_ds, valid = lr_datasets()
    if where == "dataset":  # a CG dataset yielding two batches per update
        cg_ds = BatchDataset(list(lr_data()), 20, number_batches=2, seed=2)
    return grad_ds, cg_ds, valid


@pytest.mark.parametrize("where", ["callback", "dataset"])
def test_keyboard_interrupt_leaves_a_resumable_checkpoint(lr, tmp_path, where):
    n_updates, zeros = 6, np.zeros(N_FEATURES + 1)
    grad_ds, cg_ds, valid = _interrupt_datasets(where)
    lr.set_flat(zeros)
    lr.train(grad_ds, cg_ds, num_updates=n_updates, validation=valid, save_progress=tmp_path / "straight.ckpt")
    x_ref, hist_ref = lr.result.x.copy(), history_without_clock(lr.result.history)
    _, meta_ref = load_checkpoint(tmp_path / "straight.ckpt")

    path = tmp_path / "run.ckpt"
    grad_ds, cg_ds, valid = _interrupt_datasets(where)
    kw = {}
    if where == "callback":
        kw["callback"] = Recorder(lr, interrupt_at=3)  # after the checkpoint of update 3
    else:
        cg_ds = Faulty(cg_ds, interrupt_at=4)  # during update 4, between its two CG batches
    lr.set_flat(zeros)
    lr.train(grad_ds, cg_ds, num_updates=n_updates, validation=valid, save_progress=path, **kw)
    result = lr.result
    assert result.status == "interrupted" and not result.success
    assert result.message == STOP_REASONS["interrupted"]
    assert result.updates == 3
    _, meta = load_checkpoint(path)
    assert meta["update"] == 3 and len(meta["history"]) == 3

    # resume with fresh datasets built the same way, from scrambled parameters
    grad_ds, cg_ds, valid = _interrupt_datasets(where)
    lr.set_flat(np.full(N_FEATURES + 1, 3.0))
    lr.train(grad_ds, cg_ds, num_updates=n_updates, validation=valid, save_progress=path)
    assert lr.result.status == "num_updates" and lr.result.updates == n_updates
    assert np.array_equal(lr.result.x, x_ref)
    assert history_without_clock(lr.result.history) == hist_ref
    arrays, meta = load_checkpoint(path)
    arrays_ref, _ = load_checkpoint(tmp_path / "straight.ckpt")
    assert all(np.array_equal(arrays[k], arrays_ref[k]) for k in arrays_ref)
    assert meta["lambda"] == meta_ref["lambda"] and meta["datasets"] == meta_ref["datasets"]


# ---------------------------------------------------------------------------------------------
# 5. stopping rules and bookkeeping
# ---------------------------------------------------------------------------------------------
def test_callback_stop_iteration_halts_cleanly(lr, tmp_path):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(lr, stop_at=3)
    params = lr.train(grad_ds, cg_ds, num_updates=10, callback=rec, save_progress=tmp_path / "c.ckpt")
    result = lr.result
    assert result.status == "callback" and result.success and result.message == STOP_REASONS["callback"]
    assert result.updates == 3 and len(result.history) == 3 and len(rec.stats) == 3
    assert np.array_equal(np.concatenate([np.ravel(p) for p in params]), rec.thetas[-1])
    _, meta = load_checkpoint(tmp_path / "c.ckpt")
    assert meta["update"] == 3


class Scripted:
    """A validation callable returning scripted cost lists, counting its calls."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def __call__(self):
        v = self.values[self.calls]
        self.calls += 1
        return [v, 10.0 * v]


def test_patience_stops_after_that_many_updates_without_improvement(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    validation = Scripted([5.0, 4.0, 3.0, 3.0, 3.5, 3.2, 1.0, 0.5])  # 3.0 again is not an improvement
    rec = Recorder(lr)
    params = lr.train(grad_ds, cg_ds, num_updates=8, validation=validation, patience=3, callback=rec)
    result = lr.result
    assert result.status == "patience" and result.message == STOP_REASONS["patience"]
    assert result.updates == 6 and validation.calls == 6
    assert result.best_update == 3 and result.best_validation == (3.0, 30.0)
    flat = np.concatenate([np.ravel(p) for p in params])
    assert np.array_equal(flat, rec.thetas[2])  # the parameters after update 3, not the last ones
    assert np.array_equal(lr.get_flat(), rec.thetas[2])
    assert not np.array_equal(rec.thetas[5], rec.thetas[2])


def test_patience_reached_at_the_last_update(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    lr.train(grad_ds, cg_ds, num_updates=4, validation=Scripted([1.0, 2.0, 2.0, 2.0]), patience=3)
    assert lr.result.updates == 4 and lr.result.status == "patience" and lr.result.best_update == 1


def test_validation_frequency(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    validation = Scripted([2.0, 1.0, 3.0])
    rec = Recorder(lr)
    lr.train(grad_ds, cg_ds, num_updates=7, validation=validation, validation_frequency=3, callback=rec)
    # updates 3 and 6, then the last (7) because the loop ended between validations
    assert validation.calls == 3
    assert [s.validation for s in lr.result.history] == [None, None, (2.0, 20.0), None, None, (1.0, 10.0), None]
    assert lr.result.best_update == 6
    assert np.array_equal(lr.result.x, rec.thetas[5])


@pytest.mark.parametrize("stop", ["num_updates", "time_budget", "callback"])
def test_the_last_update_is_validated_when_the_frequency_skipped_it(lr, stop):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    validation = Scripted([2.0, 1.0, 0.5])
    budget = 2.0

    class Stopper(Recorder):  # ends the run after update 5: by StopIteration, or by outlasting the budget
        def __call__(self, stats):
            super().__call__(stats)
            if stats.update == 5 and stop == "time_budget":
                time.sleep(budget)

    rec = Stopper(lr, stop_at=5 if stop == "callback" else None)
    kw = dict(time_budget=budget) if stop == "time_budget" else {}
    lr.train(grad_ds, cg_ds, num_updates=5 if stop == "num_updates" else 9, validation=validation,
             validation_frequency=3, callback=rec, **kw)
    r = lr.result
    assert r.status == stop
    assert r.updates == 5 and validation.calls == 2
    assert r.best_update == 5 and r.best_validation == (1.0, 10.0)
    assert np.array_equal(r.x, rec.thetas[4]) and np.array_equal(lr.get_flat(), rec.thetas[4])


def test_the_last_update_is_not_validated_twice(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    validation = Scripted([2.0, 1.0, 0.5])
    lr.train(grad_ds, cg_ds, num_updates=6, validation=validation, validation_frequency=3)
    assert validation.calls == 2 and lr.result.best_update == 6


def test_returned_parameters_are_the_best_validated_ones(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(lr)
    params = lr.train(grad_ds, cg_ds, num_updates=4, validation=Scripted([3.0, 1.0, 2.0, 4.0]), callback=rec)
    assert lr.result.best_update == 2 and lr.result.best_validation == (1.0, 10.0)
    for p, shared, want in zip(params, lr.p, lr.unflatten(rec.thetas[1])):
        assert np.array_equal(p, want) and np.array_equal(shared.get_value(), want)


def test_nan_validation_is_never_best(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    rec = Recorder(lr)
    lr.train(grad_ds, cg_ds, num_updates=3, validation=Scripted([2.0, math.nan, 1.0]), callback=rec)
    assert lr.result.best_update == 3
    assert np.array_equal(lr.result.x, rec.thetas[2])


def test_num_updates_zero_changes_nothing(lr):
    grad_ds, cg_ds, valid = lr_datasets()
    theta = np.linspace(-1.0, 1.0, N_FEATURES + 1)
    lr.set_flat(theta)
    params = lr.train(grad_ds, cg_ds, num_updates=0, validation=valid)
    result = lr.result
    assert result.status == "num_updates" and result.updates == 0 and result.history == ()
    assert result.njev == 0 and result.nhev == 0 and result.best_update == 0
    assert np.array_equal(np.concatenate([np.ravel(p) for p in params]), theta)
    assert np.array_equal(result.x, theta)
    assert grad_ds.position == 0 and cg_ds.position == 0


def test_resuming_a_finished_checkpoint(lr, tmp_path):
    path = tmp_path / "run.ckpt"
    first = _checkpointed_lr_run(lr, path, 3)
    x = first.x.copy()
    grad_ds, cg_ds, valid = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    lr.train(grad_ds, cg_ds, num_updates=2, validation=valid, save_progress=path)
    assert lr.result.status == "already_done" and lr.result.updates == 3
    assert np.array_equal(lr.result.x, x) and lr.result.njev == 0


def _strict_json(line):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


def test_history_file_one_line_per_update_and_truncated_on_resume(lr, tmp_path):
    path, hist = tmp_path / "run.ckpt", tmp_path / "history.jsonl"
    hist.write_text('{"update": 1, "stale": true}\n')  # a fresh run (no checkpoint) starts the file anew
    grad_ds, cg_ds, valid = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    lr.train(grad_ds, cg_ds, num_updates=3, validation=valid, save_progress=path, history_file=hist)
    lines = hist.read_text().splitlines()
    records = [_strict_json(line) for line in lines]
    assert [r["update"] for r in records] == [1, 2, 3]
    for r, s in zip(records, lr.result.history):
        assert r["costs"] == list(s.costs) and r["lambda_"] == s.lambda_ and r["accepted"] == s.accepted
        assert r["validation"] == list(s.validation)
    # a crash after the history line of update 4 but before its checkpoint, mid-way through line 5
    with open(hist, "a", encoding="utf-8") as f:
        f.write(json.dumps({"update": 4, "stale": True}) + "\n" + '{"update": 5, "co')
    grad_ds, cg_ds, valid = lr_datasets()
    lr.train(grad_ds, cg_ds, num_updates=5, validation=valid, save_progress=path, history_file=hist)
    new_lines = hist.read_text().splitlines()
    assert new_lines[:3] == lines
    records = [_strict_json(line) for line in new_lines]
    assert [r["update"] for r in records] == [1, 2, 3, 4, 5]
    assert not any("stale" in r for r in records)
    for r, s in zip(records, lr.result.history):
        assert r["costs"] == list(s.costs) and r["new_cost"] == s.new_cost


def test_result_record(lr):
    grad_ds, cg_ds, valid = lr_datasets()
    lr.set_flat(np.zeros(N_FEATURES + 1))
    params = lr.train(grad_ds, cg_ds, num_updates=4, validation=valid)
    r = lr.result
    assert np.array_equal(r.x, np.concatenate([np.ravel(p) for p in params]))
    assert all(np.array_equal(a, b) for a, b in zip(r.params, params))
    assert r.status == "num_updates" and r.success and r.message == STOP_REASONS["num_updates"]
    assert r.updates == 4 and len(r.history) == 4 and [s.update for s in r.history] == [1, 2, 3, 4]
    vals = [s.validation[0] for s in r.history]
    assert r.best_validation[0] == min(vals) and r.best_update == 1 + int(np.argmin(vals))
    assert r.history[r.best_update - 1].validation == r.best_validation
    assert r.lambda_ == r.history[-1].next_lambda
    assert all(a.next_lambda == b.lambda_ for a, b in zip(r.history, r.history[1:]))
    assert r.njev == 4 and r.nfev > 0 and r.nhev > 0
    # validation costs are the mean costs of the validation set at the parameters after each update
    Xv, Yv = lr_data(seed=5, n=100)
    assert r.best_validation[0] == pytest.approx(np_cost(r.x, Xv, Yv), rel=1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.status = "x"


def test_invalid_arguments_are_refused_before_training(lr):
    grad_ds, cg_ds, _ = lr_datasets()
    theta = np.full(N_FEATURES + 1, 0.5)
    lr.set_flat(theta)
    with pytest.raises(ArgumentError, match="initial_lambda"):
        lr.train(grad_ds, cg_ds, initial_lambda=-1.0)
    with pytest.raises(ArgumentError, match="unknown training option"):
        lr.train(grad_ds, cg_ds, not_an_option=1)
    with pytest.raises(ArgumentError, match="cg_dataset"):
        lr.train(grad_ds, [np.zeros((2, 5)), np.zeros(2)])
    with pytest.raises(ArgumentError, match="callback"):
        lr.train(grad_ds, cg_ds, callback=3)
    assert np.array_equal(lr.get_flat(), theta) and grad_ds.position == 0
