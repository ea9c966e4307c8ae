"""ItemBatcher (vectorized over items) against the per-item loop of hf_optimizer, float64, to 1e-10."""

import logging

from hf_symbolic import hf_optimizer  # noqa: I001  (first: links BLAS before PyTensor is imported)
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from hf_symbolic.model.items import ItemBatcher
from models import max_rel_err, mlp

TOL = 1e-10


def _rnn_2012(n_h=4, seed=0):
    """The memorization client's shape: one (T, 1) sequence per item, tanh units, sigmoid output at the last step."""
    rng = np.random.default_rng(seed)
    Wx = pytensor.shared(rng.normal(size=(1, n_h)), name="Wx")
    Wh = pytensor.shared(rng.normal(size=(n_h, n_h)) * 0.5, name="Wh")
    bh = pytensor.shared(rng.normal(size=n_h) * 0.1, name="bh")
    Wo = pytensor.shared(rng.normal(size=(n_h, 1)), name="Wo")
    bo = pytensor.shared(np.full(1, 0.1), name="bo")
    x, y = pt.matrix("x"), pt.vector("y")
    ha = pytensor.scan(lambda x_t, a: pt.dot(x_t, Wx) + pt.dot(pt.tanh(a), Wh) + bh, sequences=[x],
                       outputs_info=[pt.zeros(n_h)], return_updates=False)
    h = pt.tanh(ha)
    s = pt.dot(h[-1], Wo) + bo
    out = pt.sigmoid(s)
    cost = pt.sum(-y * pt.log(out) - (1 - y) * pt.log(1 - out))
    err = pt.mean(pt.neq(pt.gt(s, 0), y))
    return [Wx, Wh, bh, Wo, bo], [x, y], s, [cost, err], (h + 1) / 2, ha


def _rnn_items(rng, lengths):
    return [[rng.integers(0, 2, size=(T, 1)).astype(float), rng.integers(0, 2, size=1).astype(float)] for T in lengths]


def _mlp_items(rng, sizes):
    return [[rng.normal(size=(n, 3)), rng.integers(0, 2, size=(n, 2)).astype(float)] for n in sizes]


def _pair(model_args, curvature="gauss-newton", **kw):
    p, inputs, s, costs, h, ha = model_args
    one = hf_optimizer(p, inputs, s, costs, h, ha, curvature=curvature)
    return ItemBatcher(p, inputs, s, costs, h, ha, curvature=curvature, per_item=one, **kw), one


@pytest.fixture(scope="module")
def ff():
    m = mlp("sigmoid", sizes=(3, 4, 2))
    batcher, one = _pair((m.p, m.inputs, m.s, m.costs, None, None))
    rng = np.random.default_rng(1)
    return batcher, one, _mlp_items(rng, [4] * 5 + [3] * 3)  # two buckets: 5 items of 4 cases, 3 of 3


@pytest.fixture(scope="module")
def rnn():
    batcher, one = _pair(_rnn_2012())
    rng = np.random.default_rng(2)
    return batcher, one, _rnn_items(rng, [5, 7, 5, 7, 7, 5, 5])  # variable lengths: two buckets


@pytest.fixture(scope="module")
def ff_hessian():
    m = mlp("softmax", sizes=(3, 4, 2), seed=3)
    batcher, one = _pair((m.p, m.inputs, m.s, m.costs, None, None), curvature="hessian")
    rng = np.random.default_rng(4)
    items = [[rng.normal(size=(n, 3)), np.eye(2)[rng.integers(0, 2, size=n)]] for n in [4, 4, 4, 2, 2]]
    return batcher, one, items


def _loop_gradient(one, items):
    gs, cs = zip(*(one.gradient(it) for it in items))
    return np.mean(gs, axis=0), np.mean(cs, axis=0)


def _loop_matrix(one, items, structural=0.0):
    return np.mean([one.curvature_operator(it, 0.0, structural).todense() for it in items], axis=0)


def _check_all(batcher, one, items, structural=0.0, damping=0.25):
    assert batcher.vectorized is not None, batcher.fallback_reason
    g, costs = batcher.gradient(items)
    g_ref, c_ref = _loop_gradient(one, items)
    assert max_rel_err(g, g_ref) < TOL
    np.testing.assert_allclose(costs, c_ref, rtol=TOL, atol=1e-14)
    np.testing.assert_allclose(batcher.cost(items), c_ref, rtol=TOL, atol=1e-14)

    op = batcher.curvature_operator(items, damping=damping, structural_coefficient=structural)
    B_ref = _loop_matrix(one, items, structural) + damping * np.eye(one.layout.size)
    assert max_rel_err(op.todense(), B_ref) < TOL

    v = np.random.default_rng(5).normal(size=one.layout.size)
    plain = batcher.plain_product(items, v)
    product = one.hessian_product if one.curvature == "hessian" else one.gauss_newton_product
    assert max_rel_err(plain, np.mean([product(v, it) for it in items], axis=0)) < TOL

    sq = batcher.per_case_squared_gradient(items)
    sq_ref = np.mean([one.gradient(it)[0] ** 2 for it in items], axis=0)
    assert max_rel_err(sq, sq_ref) < TOL
    assert not batcher._failed_shapes and batcher.fallback_reason is None  # every bucket ran vectorized


def test_feed_forward_items_of_several_cases(ff):
    _check_all(*ff)
    batcher, one, items = ff
    assert len({tuple(a.shape for a in it) for it in items}) == 2


def test_scan_rnn_variable_lengths_with_structural_damping(rnn):
    batcher, one, items = rnn
    _check_all(batcher, one, items, structural=0.3)
    # the structural term alone (G with coefficient minus without) matches too: its scaling is right
    v = np.random.default_rng(6).normal(size=one.layout.size)
    d = batcher.curvature_operator(items, 0.0, 1.0).matvec(v) - batcher.curvature_operator(items, 0.0, 0.0).matvec(v)
    d_ref = np.mean([one.curvature_operator(it, 0.0, 1.0).matvec(v) - one.gauss_newton_product(v, it)
                     for it in items], axis=0)
    assert np.max(np.abs(d_ref)) > 1e-6
    assert max_rel_err(d, d_ref) < TOL


def test_hessian_products(ff_hessian):
    _check_all(*ff_hessian)


def test_buckets_are_split_at_max_items(ff):
    batcher, one, items = ff
    small = ItemBatcher(*batcher._model_args, per_item=one, max_items=2)
    small.vectorized = batcher.vectorized  # share the compiled functions
    g, _ = small.gradient(items)
    assert max_rel_err(g, _loop_gradient(one, items)[0]) < TOL
    assert len(small._buckets(items)) == 5  # 5 items -> 2+2+1, 3 items -> 2+1


def test_parameters_are_shared(rnn):
    batcher, one, items = rnn
    theta = one.get_flat()
    try:
        one.set_flat(theta * 0.5)
        assert max_rel_err(batcher.gradient(items)[0], _loop_gradient(one, items)[0]) < TOL
    finally:
        one.set_flat(theta)


def test_fallback_for_a_graph_that_cannot_be_vectorized(caplog):
    """An op without a vectorization rule (an OpFromGraph becomes a Blockwise): per item, one warning."""
    from pytensor.compile.builders import OpFromGraph

    m = mlp("linear", sizes=(3, 3, 1), seed=7)
    a = pt.matrix("a")
    opaque = OpFromGraph([a], [a * 1.0])
    s = opaque(m.s)
    cost = pt.mean(pt.sum((s - m.inputs[1]) ** 2, axis=1))
    rng = np.random.default_rng(8)
    items = [[rng.normal(size=(n, 3)), rng.normal(size=(n, 1))] for n in [3, 3, 2]]
    with caplog.at_level(logging.WARNING, logger="hf_symbolic.model.items"):
        batcher, one = _pair((m.p, m.inputs, s, [cost], None, None))
        assert batcher.vectorized is None and "Blockwise" in batcher.fallback_reason
        g, costs = batcher.gradient(items)
        g_ref, c_ref = _loop_gradient(one, items)
        assert max_rel_err(g, g_ref) < TOL
        np.testing.assert_allclose(costs, c_ref, rtol=TOL)
        op = batcher.curvature_operator(items, damping=0.1)
        assert max_rel_err(op.todense(), _loop_matrix(one, items) + 0.1 * np.eye(one.layout.size)) < TOL
        sq = batcher.per_case_squared_gradient(items)
        assert max_rel_err(sq, np.mean([one.gradient(it)[0] ** 2 for it in items], axis=0)) < TOL
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "hf_symbolic.model.items"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
