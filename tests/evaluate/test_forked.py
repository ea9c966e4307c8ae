"""Evaluating batches in shards of cases on worker processes gives the single-process results."""

import numpy as np

from hf_symbolic import BatchDataset, hf_optimizer
from hf_symbolic.evaluate import SerialEvaluator, make_evaluator, split_cases
from models import max_rel_err, rnn


def test_split_cases_covers_every_case_once():
    x = np.arange(2 * 7 * 3, dtype=float).reshape(2, 7, 3)
    y = np.arange(7, dtype=float)[:, None]
    shards, weights = split_cases([x, y], (1, 0), 3)
    assert len(shards) == 3 and np.isclose(sum(weights), 1.0)
    np.testing.assert_array_equal(np.concatenate([s[0] for s in shards], axis=1), x)
    np.testing.assert_array_equal(np.concatenate([s[1] for s in shards], axis=0), y)
    assert [s[1].shape[0] for s in shards] == [round(w * 7) for w in weights]


def test_sharded_products_equal_serial():
    m = rnn(structural=True, n=9, T=5)
    opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha)
    serial, sharded = SerialEvaluator(opt), make_evaluator(opt, 3)
    try:
        assert sharded.workers == 3
        theta = opt.get_flat()
        for ev in (serial, sharded):
            ev.set_theta(theta)
            ev.load("g", [m.batch])
            ev.begin_cg("g", 0.4)
        g1, c1 = serial.gradient("g")
        g2, c2 = sharded.gradient("g")
        assert max_rel_err(g2, g1) <= 1e-12 and np.allclose(c1, c2, rtol=1e-12)
        v = np.random.default_rng(0).normal(size=theta.size)
        assert max_rel_err(sharded.matvec(v), serial.matvec(v)) <= 1e-12
        assert max_rel_err(sharded.plain_product("g", v), serial.plain_product("g", v)) <= 1e-12
        # a new evaluation point reaches the workers
        sharded.set_theta(theta + 0.01 * v)
        serial.set_theta(theta + 0.01 * v)
        assert np.allclose(sharded.cost("g"), serial.cost("g"), rtol=1e-12)
        assert not np.allclose(sharded.cost("g"), c1)
    finally:
        sharded.close()
    assert all(not p.is_alive() for p in sharded._procs)


def test_training_with_two_workers_matches_one():
    results = []
    for workers in (1, 2):
        m = rnn(structural=True, n=12, T=5, seed=3)
        opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha)
        X, Y = m.batch
        grad_ds = BatchDataset([X, Y], 12, case_axis=[1, 0], seed=0)
        cg_ds = BatchDataset([X, Y], 6, case_axis=[1, 0], seed=1)
        opt.train(grad_ds, cg_ds, num_updates=3, workers=workers)
        results.append((opt.get_flat(), [s.cg_iterations for s in opt.result.history]))
    (a, ia), (b, ib) = results
    assert ia == ib
    assert max_rel_err(b, a) <= 1e-8
