"""The evaluator table: a new evaluator is one class and one registration, selected by name in train."""

from hf_symbolic import BatchDataset, hf_optimizer  # first: it links OpenBLAS
import hf_symbolic.evaluate as evaluate
from hf_symbolic.errors import ArgumentError
from hf_symbolic.evaluate import Evaluator, SerialEvaluator, make_evaluator

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest


def logistic(seed=0):
    rng = np.random.default_rng(seed)
    W = pytensor.shared(np.zeros((3, 1)), name="W")
    x, y = pt.matrix("x"), pt.matrix("y")
    s = pt.dot(x, W)
    cost = pt.mean(y * pt.softplus(-s) + (1 - y) * pt.softplus(s))
    X = rng.normal(size=(200, 3))
    Y = (X[:, :1] - X[:, 1:2] + 0.5 * rng.normal(size=(200, 1)) > 0).astype(float)
    return hf_optimizer([W], [x, y], s, [cost]), BatchDataset([X, Y], 200, seed=1)


class CountingEvaluator(SerialEvaluator):
    """A new evaluator: the serial one, counting the curvature products it computes."""

    def __init__(self, opt):
        super().__init__(opt)
        self.products = 0

    def matvec(self, v):
        self.products += 1
        return super().matvec(v)


def test_every_registered_evaluator_follows_the_contract():
    opt, _ = logistic()
    ev = make_evaluator(opt, name="serial")
    assert isinstance(ev, Evaluator)
    assert set(evaluate.EVALUATORS) >= {"serial", "forked", "dask"}
    abstract = Evaluator.__abstractmethods__
    assert {"load", "set_theta", "gradient", "cost", "begin_cg", "matvec", "plain_product", "statistic"} == abstract


def test_a_registered_evaluator_is_selected_by_name_and_gives_the_serial_result(monkeypatch):
    made = []

    def factory(model, **settings):
        made.append(CountingEvaluator(model))
        return made[-1]

    monkeypatch.setitem(evaluate.EVALUATORS, "counting", factory)
    opt, data = logistic()
    opt.train(data, data, num_updates=3, evaluator="counting", preconditioner=True)
    counted = opt.get_flat()
    iterations = sum(s.cg_iterations for s in opt.result.history)
    assert len(made) == 1 and iterations > 0
    # one product per CG iteration, plus one for the residual of each warm start (x0 != 0 after update 1)
    assert iterations <= made[0].products <= iterations + len(opt.result.history)

    ref, data2 = logistic()
    ref.train(data2, data2, num_updates=3, preconditioner=True)
    assert np.array_equal(counted, ref.get_flat())


def test_an_unknown_evaluator_is_refused_before_training():
    opt, data = logistic()
    with pytest.raises(ArgumentError, match=r"evaluator='gpu' is unknown: expected None .* one of \['dask', 'forked', 'items', 'serial'\]"):
        opt.train(data, data, num_updates=1, evaluator="gpu")
    assert opt.result is None


def test_item_datasets_train_like_the_per_item_path():
    """A 2012-style client (one item per sequence) trains on the item-vectorized model to the per-item result."""
    from hf_symbolic import SequenceDataset
    from models import rnn

    def run(evaluator):
        m = rnn(structural=True, n=1, T=6, seed=4)
        opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, h=m.h, ha=m.ha)
        rng = np.random.default_rng(5)
        x, y = m.batch
        xs = [rng.normal(size=x.shape) for _ in range(24)]
        ys = [rng.random(size=y.shape) for _ in range(24)]
        data = SequenceDataset([xs, ys], batch_size=None, number_batches=12, minimum_size=1, seed=1)
        cg = SequenceDataset([xs, ys], batch_size=None, number_batches=8, minimum_size=1, seed=2)
        opt.train(data, cg, num_updates=3, initial_lambda=0.5, mu=0.1, evaluator=evaluator)
        return opt.get_flat(), opt.result

    per_item, r1 = run("serial")
    vectorized, r2 = run(None)  # a model with a scan: the item evaluator is the default
    assert [s.cg_iterations for s in r1.history] == [s.cg_iterations for s in r2.history]
    np.testing.assert_allclose(vectorized, per_item, rtol=1e-9, atol=1e-12)
