"""NaN and inf injected into the cost, the gradient and the curvature products of chosen updates.

The training loop's evaluator is wrapped so that, at chosen updates, it
returns a poisoned value: the costs or the gradient of the update, a curvature
product inside CG, the undamped product used for the reduction ratio, or the
objective values of backtracking and the line search.  Every test compares
with an unpoisoned run of the same model and data (the tiny float64 MLP of
``crash_worker.py``), so "the parameters are untouched" means bit-identical to
the parameters before the update, and "lambda rises" means multiplied by the
damping rule's boost exactly.

Data-borne NaNs (a NaN in a gradient or CG batch), a cost that is NaN along the
step (a barrier) and recovery after failures are in ``test_training.py``.
"""

import math

import numpy as np
import pytest

import crash_worker as worker
import hf_symbolic.evaluate as evaluate
from hf_symbolic.train.checkpoint import load_checkpoint
from hf_symbolic.solve.damping import DampingRule
from hf_symbolic.errors import NumericalFailureError
from hf_symbolic.train.stats import STOP_REASONS

BOOST = DampingRule().boost
BAD = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


@pytest.fixture(scope="module")
def model():
    return worker.build_optimizer()


class Poisoned:
    """An evaluator whose results are poisoned at chosen updates.

    ``faults`` maps an update number to a list of ``(target, call, value)``:
    ``target`` is ``"cost"`` (costs[0] of the update's gradient evaluation),
    ``"gradient"`` (one component of the gradient), ``"matvec"`` (a curvature
    product inside CG), ``"plain"`` (the undamped product of the reduction
    ratio) or ``"objective"`` (every backtracking / line-search cost);
    ``call`` is the 1-based call number within the update (None: every call).
    Updates are counted by gradient evaluations, from ``first_update``.
    """

    def __init__(self, inner, faults, first_update):
        self.inner, self.faults, self.update = inner, faults, first_update - 1
        self.calls = {}
        self.injected = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _poison(self, target, out, where):
        n = self.calls[target] = self.calls.get(target, 0) + 1
        for t, call, value in self.faults.get(self.update, ()):
            if t == target and call in (None, n):
                out = np.array(out, dtype=np.float64, copy=True)
                out[where] = value
                self.injected.append((self.update, target, n))
        return out

    def gradient(self, key):
        self.update += 1
        self.calls = {}
        g, costs = self.inner.gradient(key)
        g = self._poison("gradient", g, 3)
        costs = tuple(np.asarray(self._poison("cost", costs, 0), dtype=np.float64).tolist())
        return g, costs

    def matvec(self, v):
        return self._poison("matvec", self.inner.matvec(v), 5)

    def plain_product(self, key, p):
        return self._poison("plain", self.inner.plain_product(key, p), 0)

    def cost(self, key):
        return tuple(np.asarray(self._poison("objective", self.inner.cost(key), 0), dtype=np.float64).tolist())


@pytest.fixture
def poison(monkeypatch):
    """``poison(faults, first_update=1)`` makes the next training run use a :class:`Poisoned` evaluator."""
    made = []
    real = evaluate.EVALUATORS["serial"]

    def install(faults, first_update=1):
        def make(opt, **settings):
            ev = Poisoned(real(opt, **settings), faults, first_update)
            made.append(ev)
            return ev

        monkeypatch.setitem(evaluate.EVALUATORS, "serial", make)
        return made

    return install


class Recorder:
    def __init__(self, opt):
        self.opt, self.stats, self.thetas = opt, [], []

    def __call__(self, stats):
        self.stats.append(stats)
        self.thetas.append(self.opt.get_flat())


def train(opt, theta0, num_updates, **kw):
    rec = Recorder(opt)
    opt.set_flat(theta0)
    grad, cg, valid = worker.make_datasets()
    options = dict(worker.TRAIN_OPTIONS, **kw.pop("options", {}))
    with np.errstate(invalid="ignore", over="ignore"):
        opt.train(grad, cg, num_updates=num_updates, validation=valid, callback=rec, **options, **kw)
    return rec


@pytest.fixture(scope="module")
def clean(model):
    """The unpoisoned run: 8 updates, all accepted."""
    opt, theta0 = model
    rec = train(opt, theta0, 8)
    assert all(s.accepted for s in rec.stats)
    return rec


def _same_until(rec, ref, update):
    """The first ``update - 1`` updates of ``rec`` equal the reference run's."""
    for a, b, ta, tb in zip(rec.stats[:update - 1], ref.stats, rec.thetas, ref.thetas):
        assert np.array_equal(ta, tb)
        assert (a.lambda_, a.next_lambda, a.costs) == (b.lambda_, b.next_lambda, b.costs)


@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("target, call, failure", [
    ("cost", None, "nonfinite cost or gradient"),
    ("gradient", None, "nonfinite cost or gradient"),
    ("matvec", 1, "nonfinite curvature product"),
    ("objective", None, "nonfinite cost after the step"),
])
def test_a_poisoned_update_is_rejected_untouched_and_lambda_rises(model, clean, poison, target, call, failure, bad):
    opt, theta0 = model
    made = poison({3: [(target, call, BAD[bad])]})
    rec = train(opt, theta0, 5)
    assert [u for u, *_ in made[0].injected] and {u for u, *_ in made[0].injected} == {3}
    _same_until(rec, clean, 3)
    hit = rec.stats[2]
    assert not hit.accepted and hit.failure == failure and hit.step == 0.0
    assert np.array_equal(rec.thetas[2], rec.thetas[1])  # bit-identical: no bad step touched them
    assert hit.lambda_ == clean.stats[2].lambda_
    assert hit.next_lambda == DampingRule()(hit.lambda_, math.nan) == pytest.approx(hit.lambda_ * BOOST, rel=1e-15)
    # the run goes on from there: the next update starts with the raised lambda and is accepted
    assert rec.stats[3].lambda_ == hit.next_lambda and rec.stats[3].accepted
    assert [s.failure for s in rec.stats] == ["", "", failure, "", ""]
    assert opt.result.status == "num_updates" and all(np.all(np.isfinite(t)) for t in rec.thetas)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_curvature_product_failing_inside_cg_keeps_the_finite_iterates_and_raises_lambda(model, clean, poison,
                                                                                             bad):
    """A product that fails after some CG iterations: the step comes from the finite iterates before it."""
    opt, theta0 = model
    made = poison({3: [("matvec", 4, BAD[bad])]})
    rec = train(opt, theta0, 4)
    assert made[0].injected == [(3, "matvec", 4)]
    _same_until(rec, clean, 3)
    hit = rec.stats[2]
    assert hit.cg_status == "nonfinite"
    # with a warm start the first product is the initial residual's: iterations 1 and 2 completed
    assert hit.cg_iterations == 2 < clean.stats[2].cg_iterations
    assert hit.accepted and hit.failure == "" and hit.new_cost < hit.costs[0]
    assert np.all(np.isfinite(rec.thetas[2])) and not np.array_equal(rec.thetas[2], rec.thetas[1])
    assert hit.next_lambda == pytest.approx(hit.lambda_ * BOOST, rel=1e-15)  # the curvature model failed


def test_a_poisoned_reduction_ratio_product_raises_lambda(model, clean, poison):
    opt, theta0 = model
    poison({3: [("plain", None, math.nan)]})
    rec = train(opt, theta0, 4)
    _same_until(rec, clean, 3)
    hit = rec.stats[2]
    assert math.isnan(hit.rho)
    assert hit.next_lambda == pytest.approx(hit.lambda_ * BOOST, rel=1e-15)
    # the step itself was computed from finite products and decreased the cost: it may be taken
    assert hit.accepted and hit.new_cost < hit.costs[0] and np.all(np.isfinite(rec.thetas[2]))


def test_consecutive_failures_stop_training_with_a_clear_message(model, clean, poison):
    opt, theta0 = model
    # three different faults in a row: each is a failure, the third stops training
    poison({3: [("cost", None, math.nan)], 4: [("matvec", 1, math.inf)], 5: [("objective", None, math.nan)]})
    rec = Recorder(opt)
    opt.set_flat(theta0)
    grad, cg, valid = worker.make_datasets()
    with np.errstate(invalid="ignore", over="ignore"), pytest.raises(NumericalFailureError) as info:
        opt.train(grad, cg, num_updates=10, validation=valid, callback=rec, max_failures=3, **worker.TRAIN_OPTIONS)
    msg = str(info.value)
    assert "training stopped at update 5" in msg and "3 consecutive updates failed" in msg
    assert "nonfinite cost after the step" in msg and "parameters are those before the failed updates" in msg
    result = opt.result
    assert result.status == "numerical_failure" and not result.success
    assert result.message == STOP_REASONS["numerical_failure"]
    assert result.updates == 5 and len(result.history) == 5
    assert [s.failure for s in result.history] == ["", "", "nonfinite cost or gradient", "nonfinite curvature product",
                                                   "nonfinite cost after the step"]
    # the parameters are those after update 2, bit for bit, in the model and in the result
    assert np.array_equal(opt.get_flat(), clean.thetas[1]) and np.array_equal(result.x, clean.thetas[1])
    lam = clean.stats[2].lambda_
    assert [s.lambda_ for s in result.history[2:]] == pytest.approx([lam, lam * BOOST, lam * BOOST ** 2], rel=1e-14)
    assert result.lambda_ == pytest.approx(lam * BOOST ** 3, rel=1e-14)


def test_failures_must_be_consecutive_to_stop_training(model, poison):
    opt, theta0 = model
    faults = {u: [("gradient", None, math.inf)] for u in (2, 3, 5, 6)}
    poison(faults)
    rec = train(opt, theta0, 8, options=dict(max_failures=3))
    assert opt.result.status == "num_updates" and opt.result.updates == 8
    assert [s.accepted for s in rec.stats] == [True, False, False, True, False, False, True, True]


def test_the_failure_count_survives_a_resume(model, clean, poison, tmp_path):
    """Failures are checkpointed: a resumed run that keeps failing stops after the same bound."""
    opt, theta0 = model
    path = tmp_path / "run.ckpt"
    persistent = {u: [("cost", None, math.nan)] for u in range(3, 20)}
    poison(persistent)
    train(opt, theta0, 4, save_progress=path, options=dict(max_failures=3))
    assert opt.result.status == "num_updates"
    _, meta = load_checkpoint(path)
    assert meta["update"] == 4 and meta["failures"] == 2
    before = path.read_bytes()

    made = poison(persistent, first_update=5)
    with pytest.raises(NumericalFailureError, match="training stopped at update 5: 3 consecutive"):
        train(opt, theta0, 10, save_progress=path, options=dict(max_failures=3))
    assert made[-1].injected == [(5, "cost", 1)]
    assert path.read_bytes() == before  # the failing update was not checkpointed
    assert np.array_equal(opt.get_flat(), clean.thetas[1])

    poison({}, first_update=5)  # the fault is gone: the run continues from update 4
    rec = train(opt, theta0, 6, save_progress=path, options=dict(max_failures=3))
    assert [s.update for s in rec.stats] == [5, 6] and all(s.accepted for s in rec.stats)
    assert rec.stats[0].lambda_ == pytest.approx(clean.stats[2].lambda_ * BOOST ** 2, rel=1e-14)
