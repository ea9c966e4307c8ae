"""The Scan vectorizer against a per-item loop of the unvectorized compiled function (float64)."""

import hf_symbolic.graph.vectorize_scan  # noqa: F401  (first: links BLAS; registers the rule)
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.replace import vectorize_graph
from pytensor.scan.op import Scan
from pytensor.scan.utils import until
from pytensor.tensor.blockwise import Blockwise
from pytensor.tensor.math import Dot

from hf_symbolic.graph.backend import default_mode
from hf_symbolic.graph.vectorize_scan import blockwise_nodes, vectorize_equal_shapes

MODE = default_mode()
RTOL = 1e-12


def _batched_like(x, name=None):
    return pt.tensor(dtype=x.type.dtype, shape=(None, *x.type.shape), name=name or f"{x.name}_b")


def _scans(fgraph_or_fn):
    """Every Scan and Blockwise op of a compiled function, including inside inner graphs."""
    fg = fgraph_or_fn.maker.fgraph if hasattr(fgraph_or_fn, "maker") else fgraph_or_fn
    ops, todo = [], [fg]
    while todo:
        g = todo.pop()
        for node in g.apply_nodes:
            ops.append(node.op)
            if isinstance(node.op, Scan):
                todo.append(node.op.fgraph)
    return ops


def assert_no_blockwise_scan(fn, any_blockwise=False):
    """No Blockwise-of-Scan in the compiled graph (with ``any_blockwise``: no Blockwise at all, a Python loop)."""
    ops = _scans(fn)
    assert any(isinstance(op, Scan) for op in ops), "no Scan left: the test graph is not what it seems"
    bad = [op for op in ops if isinstance(op, Blockwise) and (any_blockwise or isinstance(op.core_op, Scan))]
    assert not bad, f"Blockwise fallback in the compiled graph: {bad}"


def check_against_loop(inputs, outputs, batched_values, unbatched=(), vectorize=vectorize_equal_shapes):
    """Vectorize ``outputs`` over the first axis of ``batched_values`` and compare with a loop.

    ``unbatched`` lists the positions of inputs that are passed whole to every item.
    """
    new_inputs = [x if i in unbatched else _batched_like(x) for i, x in enumerate(inputs)]
    replace = {x: nx for x, nx in zip(inputs, new_inputs) if x is not nx}
    vec = vectorize(outputs, replace)
    if vectorize is vectorize_equal_shapes:  # not even before compilation's rewrites (matmul is a real batched op)
        loops = [n for n in blockwise_nodes(vec) if not isinstance(n.op.core_op, Dot)]
        assert not loops, [str(n.op) for n in loops]
    f_vec = pytensor.function(new_inputs, vec, mode=MODE)
    f_one = pytensor.function(inputs, outputs, mode=MODE)
    n = next(len(v) for i, v in enumerate(batched_values) if i not in unbatched)
    got = f_vec(*batched_values)
    per_item = [f_one(*[v if i in unbatched else v[b] for i, v in enumerate(batched_values)]) for b in range(n)]
    for j, out in enumerate(outputs):
        want = np.stack([np.asarray(r[j]) for r in per_item])
        np.testing.assert_allclose(got[j], want, rtol=RTOL, atol=1e-13, err_msg=f"output {j}")
    assert_no_blockwise_scan(f_vec, any_blockwise=vectorize is vectorize_equal_shapes)
    return f_vec


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def test_sit_sot_cumulative_sum(rng):
    x = pt.matrix("x")
    ys = pytensor.scan(lambda x_t, a: a + x_t, sequences=[x], outputs_info=[pt.zeros(3)], return_updates=False)
    check_against_loop([x], [ys], [rng.normal(size=(4, 6, 3))])


def _rnn(n_h=5, seed=1):
    """The memorization example's shape: tanh RNN over a (T, 1) sequence, sigmoid output at the last step."""
    r = np.random.default_rng(seed)
    Wx = pytensor.shared(r.normal(size=(1, n_h)), name="Wx")
    Wh = pytensor.shared(r.normal(size=(n_h, n_h)) * 0.4, name="Wh")
    bh = pytensor.shared(r.normal(size=n_h) * 0.1, name="bh")
    Wo = pytensor.shared(r.normal(size=(n_h, 1)), name="Wo")
    bo = pytensor.shared(np.zeros(1), name="bo")
    x, y = pt.matrix("x"), pt.vector("y")  # one item: (T, 1) inputs, (1,) target
    hs = pytensor.scan(lambda x_t, h: pt.tanh(pt.dot(x_t, Wx) + pt.dot(h, Wh) + bh), sequences=[x],
                       outputs_info=[pt.zeros(n_h)], return_updates=False)
    s = pt.dot(hs[-1], Wo) + bo
    out = pt.sigmoid(s)
    cost = pt.sum(-y * pt.log(out) - (1 - y) * pt.log(1 - out))
    return [Wx, Wh, bh, Wo, bo], [x, y], hs, s, cost


def _rnn_data(rng, n=6, T=7):
    return [rng.integers(0, 2, size=(n, T, 1)).astype(float), rng.integers(0, 2, size=(n, 1)).astype(float)]


@pytest.mark.parametrize("vectorize", [vectorize_equal_shapes, vectorize_graph])
def test_rnn_values(rng, vectorize):
    p, inputs, hs, s, cost = _rnn()
    check_against_loop(inputs, [hs, s, cost], _rnn_data(rng), vectorize=vectorize)


@pytest.mark.parametrize("vectorize", [vectorize_equal_shapes, vectorize_graph])
def test_rnn_gradient_of_vectorized_scan(rng, vectorize):
    p, (x, y), hs, s, cost = _rnn()
    xb, yb = _batched_like(x), _batched_like(y)
    costs_b = vectorize(cost, {x: xb, y: yb})
    f_vec = pytensor.function([xb, yb], pytensor.grad(pt.mean(costs_b), p), mode=MODE)
    f_one = pytensor.function([x, y], pytensor.grad(cost, p), mode=MODE)
    X, Y = _rnn_data(rng)
    got = f_vec(X, Y)
    want = [np.mean([f_one(X[i], Y[i])[j] for i in range(len(X))], axis=0) for j in range(len(p))]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=1e-13)
    assert_no_blockwise_scan(f_vec)


def test_per_item_gradients_by_vectorizing_the_gradient_graph(rng):
    """The backward scan (mit-mot states, accumulators starting at zeros) vectorized: per-item gradients."""
    p, inputs, hs, s, cost = _rnn()
    grads = pytensor.grad(cost, p)
    check_against_loop(inputs, grads, _rnn_data(rng))


@pytest.mark.parametrize("vectorize, use_op", [(vectorize_equal_shapes, True), (vectorize_graph, False)])
def test_pushforward_through_vectorized_scan(rng, vectorize, use_op):
    """Scan's own pushforward on the batched loop, and the double-pullback one.

    (``vectorize_graph`` makes the sequence slicing a Blockwise, which has no
    op-level pushforward; ``vectorize_equal_shapes`` keeps it a Subtensor.)
    """
    p, (x, y), hs, s, cost = _rnn()
    xb, yb = _batched_like(x), _batched_like(y)
    sb = vectorize(s, {x: xb, y: yb})
    vs = [pt.tensor(dtype="float64", shape=q.type.shape, name=f"v_{q.name}") for q in p]
    vals = [rng.normal(size=q.get_value().shape) for q in p]
    X, Y = _rnn_data(rng)
    if True:
        jv_b = pytensor.gradient.pushforward(sb, p, vs, use_op_pushforward=use_op)
        jv = pytensor.gradient.pushforward(s, p, vs, use_op_pushforward=True)  # the reference
        f_vec = pytensor.function([xb, *vs], jv_b, mode=MODE, on_unused_input="ignore")
        f_one = pytensor.function([x, *vs], jv, mode=MODE, on_unused_input="ignore")
        want = np.stack([f_one(X[i], *vals) for i in range(len(X))])
        np.testing.assert_allclose(f_vec(X, *vals), want, rtol=RTOL, atol=1e-13)
        assert_no_blockwise_scan(f_vec)


def test_cost_on_every_step_nit_sot_and_multiple_outputs(rng):
    r = np.random.default_rng(3)
    W = pytensor.shared(r.normal(size=(2, 3)), name="W")
    U = pytensor.shared(r.normal(size=(3, 3)) * 0.5, name="U")
    V = pytensor.shared(r.normal(size=(3, 1)), name="V")
    x, y = pt.matrix("x"), pt.matrix("y")

    def step(x_t, y_t, h):
        h_new = pt.tanh(pt.dot(x_t, W) + pt.dot(h, U))
        o = pt.sigmoid(pt.dot(h_new, V))
        c = pt.sum(-y_t * pt.log(o) - (1 - y_t) * pt.log(1 - o))
        return h_new, o, c  # sit-sot, nit-sot, nit-sot

    hs, os_, cs = pytensor.scan(step, sequences=[x, y], outputs_info=[pt.zeros(3), None, None], return_updates=False)
    cost = pt.mean(cs)
    data = [r.normal(size=(5, 6, 2)), r.integers(0, 2, size=(5, 6, 1)).astype(float)]
    check_against_loop([x, y], [hs, os_, cs, cost, *pytensor.grad(cost, [W, U, V])], data)


def test_mit_sot_taps(rng):
    a = pt.vector("a")  # per item: two initial values of the recurrence
    x = pt.vector("x")
    fib = pytensor.scan(lambda x_t, f2, f1: 0.5 * f1 + 0.3 * f2 + x_t, sequences=[x],
                        outputs_info=[dict(initial=a, taps=[-2, -1])], return_updates=False)
    cost = pt.sum(fib ** 2)
    check_against_loop([a, x], [fib, cost, pytensor.grad(cost, a)], [rng.normal(size=(4, 2)), rng.normal(size=(4, 8))])


def test_sequence_taps_and_shared_non_sequence(rng):
    W = pytensor.shared(rng.normal(size=(3, 3)) * 0.5, name="W")
    x = pt.matrix("x")
    ys = pytensor.scan(lambda x_prev, x_t, h: pt.tanh(pt.dot(h, W) + x_t - x_prev),
                       sequences=[dict(input=x, taps=[-1, 0])], outputs_info=[pt.ones(3)], return_updates=False)
    check_against_loop([x], [ys, pytensor.grad(pt.sum(ys), W)], [rng.normal(size=(3, 5, 3))])


@pytest.mark.parametrize("batched_scale", [True, False])
def test_batched_and_unbatched_non_sequences(rng, batched_scale):
    x, scale, W = pt.matrix("x"), pt.vector("scale"), pt.matrix("W")
    ys = pytensor.scan(lambda x_t, h, sc, w: pt.tanh(pt.dot(h, w) * sc + x_t), sequences=[x],
                       outputs_info=[pt.zeros(2)], non_sequences=[scale, W], return_updates=False)
    data = [rng.normal(size=(4, 5, 2)), rng.normal(size=(4, 2) if batched_scale else (2,)), rng.normal(size=(2, 2))]
    unbatched = (2,) if batched_scale else (1, 2)
    check_against_loop([x, scale, W], [ys], data, unbatched=unbatched)


def test_batched_initial_state_only(rng):
    """Only the initial state carries the item axis; the sequence is shared by all items."""
    h0, x = pt.vector("h0"), pt.matrix("x")
    W = pytensor.shared(rng.normal(size=(3, 3)) * 0.5, name="W")
    ys = pytensor.scan(lambda x_t, h: pt.tanh(pt.dot(h, W) + x_t), sequences=[x], outputs_info=[h0],
                       return_updates=False)
    check_against_loop([h0, x], [ys], [rng.normal(size=(4, 3)), rng.normal(size=(6, 3))], unbatched=(1,))


def test_two_batch_dimensions(rng):
    x = pt.matrix("x")
    ys = pytensor.scan(lambda x_t, a: pt.sin(a) + x_t, sequences=[x], outputs_info=[pt.zeros(2)],
                       return_updates=False)
    xb = pt.tensor4("xb")
    f = pytensor.function([xb], vectorize_graph(ys, {x: xb}), mode=MODE)
    f_one = pytensor.function([x], ys, mode=MODE)
    X = rng.normal(size=(2, 3, 4, 2))
    want = np.array([[f_one(X[i, j]) for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(f(X), want, rtol=RTOL)
    assert_no_blockwise_scan(f)


def test_batched_while_condition_falls_back_to_blockwise(rng):
    """A loop whose length depends on the item cannot be one batched loop: the generic fallback, same values."""

    def step(a, lim):
        return a + 1.0, until(a >= lim)

    lim = pt.scalar("lim")
    ys = pytensor.scan(step, outputs_info=[pt.zeros(())], non_sequences=[lim], n_steps=10, return_updates=False)
    limb = pt.vector("limb")
    ysb = vectorize_graph(pt.sum(ys), {lim: limb})
    ops = [n.op for n in pytensor.graph.traversal.applys_between([limb], [ysb])]
    assert any(isinstance(op, Blockwise) and isinstance(op.core_op, Scan) for op in ops)
    f = pytensor.function([limb], ysb, mode=MODE)
    f_one = pytensor.function([lim], pt.sum(ys), mode=MODE)
    L = np.array([4.2, 4.7])  # same length: Blockwise cannot stack loops of different lengths
    np.testing.assert_allclose(f(L), [f_one(v) for v in L])


def test_batched_n_steps_must_be_equal():
    n = pt.iscalar("n")
    ys = pytensor.scan(lambda a: a + 1.0, outputs_info=[pt.zeros(())], n_steps=n, return_updates=False)
    nb = pt.ivector("nb")
    f = pytensor.function([nb], vectorize_graph(ys, {n: nb}), mode=MODE)
    np.testing.assert_allclose(f(np.array([3, 3], dtype="int32")), [[1.0, 2.0, 3.0]] * 2)
    with pytest.raises(Exception):  # never a wrong number (here the per-item buffers disagree first)
        f(np.array([3, 4], dtype="int32"))
    assert_no_blockwise_scan(f)
