"""Tests of hf_symbolic.graph.partial_eval.partial_eval (cached forward pass for Gv products).

Each model is built directly with PyTensor; the Gauss-Newton product is built with
the 2012 recipe (Jv by pushforward, H_L Jv by differentiating <dL/ds, Jv>, Gv by
pullback) and evaluated two ways: the plain graph, and residuals + product graph
from ``partial_eval``.  Models are tiny and compiled in FAST_COMPILE mode so the
file stays fast (their scans too: a scan built without a mode compiles its inner
graph in C whatever the outer function's mode); the split itself is checked
structurally as well.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import disconnected_grad, grad, pullback, pushforward
from pytensor.graph.traversal import ancestors, graph_inputs
from pytensor.scan.op import Scan
from pytensor.scan.utils import ScanArgs
from pytensor.tensor.special import log_softmax

from hf_symbolic.errors import ModelSpecError
from hf_symbolic.graph.partial_eval import PartialEvaluation, partial_eval

MODE = "FAST_COMPILE"
RTOL = {"float64": 1e-12, "float32": 1e-5}


def gn_product(s, cost, params, vs, use_op_pushforward=True):
    jv = pushforward(s, params, vs, use_op_pushforward=use_op_pushforward)
    hjv = grad(pt.sum(grad(cost, s) * disconnected_grad(jv)), s)
    return pullback(s, params, disconnected_grad(hjv))


def directions(params, seed=0):
    rng = np.random.default_rng(seed)
    vs = [p.type() for p in params]
    vals = [rng.standard_normal(p.get_value().shape) for p in params]
    return vs, vals


def shared(rng, shape, scale, name):
    return pytensor.shared(rng.standard_normal(shape) * scale, name=name)


def evaluate(gv, vs, inputs, data, v_vals, **kw):
    """(plain Gv, partial-eval Gv, PartialEvaluation)."""
    pe = partial_eval(gv, vs, **kw)
    f_plain = pytensor.function(inputs + vs, gv, mode=MODE)
    f_res = pytensor.function(inputs, list(pe.residuals), mode=MODE, on_unused_input="ignore")
    f_gv = pytensor.function(vs + list(pe.placeholders), list(pe.outputs), mode=MODE)
    residuals = f_res(*data)
    return f_plain(*data, *v_vals), f_gv(*v_vals, *residuals), pe


def assert_close(got, want, dtype="float64"):
    for g, w in zip(got, want, strict=True):
        scale = max(np.max(np.abs(w)), 1e-300)
        assert np.max(np.abs(np.asarray(g) - w)) / scale <= RTOL[dtype]


def assert_clean(pe, vs, data_inputs):
    """Residuals never read v; products never read data inputs."""
    res_roots = set(graph_inputs(list(pe.residuals)))
    assert not res_roots.intersection(vs)
    out_roots = set(graph_inputs(list(pe.outputs)))
    assert not out_roots.intersection(data_inputs)
    assert len(pe.placeholders) == len(pe.residuals)
    for r, p in zip(pe.residuals, pe.placeholders, strict=True):
        assert r.type == p.type and p.owner is None


def mlp(rng, sizes, x):
    params, a = [], x
    for i in range(len(sizes) - 1):
        w = shared(rng, (sizes[i], sizes[i + 1]), 1 / np.sqrt(sizes[i]), f"W{i}")
        b = shared(rng, (sizes[i + 1],), 0.1, f"b{i}")
        params += [w, b]
        z = pt.dot(a, w) + b
        a = pt.sigmoid(z) if i < len(sizes) - 2 else z
    return params, z


def test_mlp_sigmoid_cross_entropy():
    rng = np.random.default_rng(1)
    x = pt.matrix("x")
    params, s = mlp(rng, (5, 7, 4, 5), x)
    cost = pt.mean(pt.sum(pt.softplus(s) - x * s, axis=1))
    vs, v_vals = directions(params)
    gv = gn_product(s, cost, params, vs)
    data = [rng.random((9, 5))]
    want, got, pe = evaluate(gv, vs, [x], data, v_vals)
    assert_close(got, want)
    assert_clean(pe, vs, [x])
    # no sigmoid is recomputed per product: the activations are residuals
    out_nodes = {v.owner for v in ancestors(list(pe.outputs)) if v.owner}
    assert not any(
        getattr(getattr(n.op, "scalar_op", None), "name", "") == "sigmoid" for n in out_nodes
    )


def test_softmax_categorical_cross_entropy():
    rng = np.random.default_rng(2)
    x, y = pt.matrix("x"), pt.lvector("y")
    params, s = mlp(rng, (6, 8, 3), x)
    cost = -pt.mean(log_softmax(s, axis=1)[pt.arange(y.shape[0]), y])
    vs, v_vals = directions(params, 1)
    gv = gn_product(s, cost, params, vs)
    data = [rng.standard_normal((10, 6)), rng.integers(0, 3, size=10)]
    want, got, pe = evaluate(gv, vs, [x, y], data, v_vals)
    assert_close(got, want)
    assert_clean(pe, vs, [x, y])


def test_linear_squared_error_matches_closed_form():
    rng = np.random.default_rng(3)
    x, t = pt.matrix("x"), pt.matrix("t")
    w, b = shared(rng, (4, 2), 1.0, "W"), shared(rng, (2,), 1.0, "b")
    s = pt.dot(x, w) + b
    cost = 0.5 * pt.mean(pt.sum((s - t) ** 2, axis=1))
    vs, v_vals = directions([w, b], 2)
    gv = gn_product(s, cost, [w, b], vs)
    xv = rng.standard_normal((8, 4))
    data = [xv, rng.standard_normal((8, 2))]
    want, got, pe = evaluate(gv, vs, [x, t], data, v_vals)
    assert_close(got, want)
    # independent reference: G v = [X 1]^T [X 1] [Vw; Vb] / n
    n = xv.shape[0]
    jv = xv @ v_vals[0] + v_vals[1]
    assert np.allclose(got[0], xv.T @ jv / n, rtol=1e-12, atol=1e-14)
    assert np.allclose(got[1], jv.sum(0) / n, rtol=1e-12, atol=1e-14)


def rnn(rng, n_in, n_hid, n_out, x, every_step=False):
    w_in = shared(rng, (n_in, n_hid), 0.5, "W_in")
    w_hh = shared(rng, (n_hid, n_hid), 1 / np.sqrt(n_hid), "W_hh")
    b_h = shared(rng, (n_hid,), 0.1, "b_h")
    w_out = shared(rng, (n_hid, n_out), 0.5, "W_out")
    b_out = shared(rng, (n_out,), 0.1, "b_out")
    params = [w_in, w_hh, b_h, w_out, b_out]

    def step(x_t, h_prev, w_in, w_hh, b_h):
        ha = pt.dot(x_t, w_in) + pt.dot(h_prev, w_hh) + b_h
        return pt.tanh(ha), ha

    h0 = pt.zeros((x.shape[1], n_hid))
    h, ha = pytensor.scan(
        step,
        sequences=[x],
        outputs_info=[h0, None],
        non_sequences=[w_in, w_hh, b_h],
        return_updates=False,
        mode=MODE,
    )
    s = pt.dot(h, w_out) + b_out if every_step else pt.dot(h[-1], w_out) + b_out
    return params, h, ha, s


def scans_of(variables):
    return {v.owner for v in ancestors(list(variables)) if v.owner and isinstance(v.owner.op, Scan)}


@pytest.mark.parametrize("use_op_pushforward", [True, False])
def test_rnn_output_at_last_step(use_op_pushforward):
    rng = np.random.default_rng(4)
    x, y = pt.tensor3("x"), pt.matrix("y")
    params, _, _, s = rnn(rng, 2, 5, 1, x)
    cost = pt.mean(pt.sum(pt.softplus(s) - y * s, axis=1))
    vs, v_vals = directions(params, 3)
    gv = gn_product(s, cost, params, vs, use_op_pushforward)
    xv = rng.standard_normal((6, 4, 2))
    data = [xv, (xv[0, :, :1] > 0).astype(float)]
    want, got, pe = evaluate(gv, vs, [x, y], data, v_vals)
    assert_close(got, want)
    assert_clean(pe, vs, [x, y])
    # the forward recurrence lives in the residuals only: no tanh per product
    out_vars = ancestors(list(pe.outputs))
    for node in scans_of(pe.outputs):
        inner = ancestors(node.op.inner_outputs)
        assert not any(
            v.owner and getattr(getattr(v.owner.op, "scalar_op", None), "name", "") == "tanh"
            for v in inner
        )
    assert not any(
        v.owner and getattr(getattr(v.owner.op, "scalar_op", None), "name", "") == "tanh"
        for v in out_vars
    )
    assert scans_of(pe.residuals)


def test_rnn_products_that_share_a_factor_are_one_product():
    """``[h_prev x] @ [V_hh; V_in]`` forward, ``[h x 1]^T delta`` backward, each one GEMM."""
    rng = np.random.default_rng(14)
    n_in, n_hid = 2, 5
    x, y = pt.tensor3("x"), pt.matrix("y")
    params, _, _, s = rnn(rng, n_in, n_hid, 1, x)
    cost = pt.mean(pt.sum(pt.softplus(s) - y * s, axis=1))
    vs, v_vals = directions(params, 15)
    gv = gn_product(s, cost, params, vs)
    xv = rng.standard_normal((6, 4, n_in))
    data = [xv, (xv[0, :, :1] > 0).astype(float)]
    want, got, pe = evaluate(gv, vs, [x, y], data, v_vals)
    assert_close(got, want)
    f_res = pytensor.function([x, y], list(pe.residuals), mode=MODE, on_unused_input="ignore")
    widths = sorted(np.shape(r)[1] for r in f_res(*data) if np.ndim(r) == 2 and np.shape(r)[0] == 24)
    # side by side, over all 6 x 4 (step, sequence) rows: forward and backward factors
    assert n_hid + n_in in widths and n_hid + n_in + 1 in widths, widths
    nodes = {v.owner for v in ancestors(list(pe.outputs)) if v.owner is not None}
    # the bias gradient is the ones column of the backward product, not a sum of the error trace
    sums = [n for n in nodes if type(n.op).__name__ == "Sum" and n.inputs[0].ndim == 3]
    assert not sums
    # one tangent input sequence per step (not x_t @ V_in and h_{t-1} @ V_hh apart)
    (tangent,) = [n for n in scans_of(pe.outputs) if n.op.name.startswith("rop")]
    seqs = [i for i in ScanArgs.from_node(tangent).outer_in_seqs if set(vs) & set(graph_inputs([i]))]
    assert len(seqs) == 1
    # the zero tangent of the initial state is not a loop invariant array
    for node in scans_of(pe.outputs):
        for ns in ScanArgs.from_node(node).outer_in_non_seqs:
            assert not (ns.owner and type(ns.owner.op).__name__ == "Alloc"), ns


def test_rnn_outputs_at_every_step_and_structural_damping():
    rng = np.random.default_rng(5)
    x, y = pt.tensor3("x"), pt.tensor3("y")
    params, h, ha, s = rnn(rng, 3, 4, 2, x, every_step=True)
    cost = pt.mean(pt.sum(pt.softplus(s) - y * s, axis=2))
    # structural damping: cross-entropy between (h + 1)/2 and its current value
    p_h = (pt.tanh(ha) + 1) / 2
    target = disconnected_grad(p_h)
    damp = pt.mean(pt.sum(-(target * pt.log(p_h) + (1 - target) * pt.log1p(-p_h)), axis=2))
    vs, v_vals = directions(params, 4)
    gv_s = gn_product(s, cost, params, vs)
    gv_d = gn_product(ha, damp, params[:3], vs[:3])  # ha does not see the output layer
    gv = [a + 0.03 * b for a, b in zip(gv_s[:3], gv_d, strict=True)] + gv_s[3:]
    xv = rng.standard_normal((5, 3, 3))
    data = [xv, (rng.random((5, 3, 2)) < 0.5).astype(float)]
    want, got, pe = evaluate(gv, vs, [x, y], data, v_vals)
    assert_close(got, want)
    assert_clean(pe, vs, [x, y])
    # the damping term alone (outputs at every step, split at the pre-activation)
    want_d, got_d, _ = evaluate(gv_d, vs[:3], [x], data[:1], v_vals[:3])
    assert_close(got_d, want_d)


def test_rnn_float32_and_recompute_options():
    rng = np.random.default_rng(6)
    f32 = "float32"
    x, y = pt.tensor3("x", dtype=f32), pt.matrix("y", dtype=f32)
    shapes = {"W_in": (1, 6), "W_hh": (6, 6), "b_h": (6,), "W_out": (6, 1), "b_out": (1,)}
    params = [
        pytensor.shared((0.5 * rng.standard_normal(shp)).astype(f32), name=n)
        for n, shp in shapes.items()
    ]
    w_in, w_hh, b_h, w_out, b_out = params

    def step(x_t, h_prev):
        return pt.tanh(pt.dot(x_t, w_in) + pt.dot(h_prev, w_hh) + b_h)

    h0 = pt.zeros((x.shape[1], 6), dtype=f32)
    h = pytensor.scan(step, sequences=[x], outputs_info=[h0], return_updates=False, mode=MODE)
    s = pt.dot(h[-1], w_out) + b_out
    cost = pt.mean(pt.sum(pt.softplus(s) - y * s, axis=1))
    vs = [p.type() for p in params]
    v_vals = [rng.standard_normal(p.get_value().shape).astype(f32) for p in params]
    gv = gn_product(s, cost, params, vs)
    xv = (rng.random((7, 5, 1)) < 0.5).astype(f32)
    data = [xv, xv[0].copy()]
    want, got, pe_cheap = evaluate(gv, vs, [x, y], data, v_vals)
    assert_close(got, want, f32)
    _, got_all, pe_all = evaluate(gv, vs, [x, y], data, v_vals, recompute_cheap=False)
    assert_close(got_all, want, f32)
    # storing every frontier value needs more residual arrays than recomputing
    # the cheap ones (1 - h**2, time-shifted views of h)
    def n_arrays(pe):
        return sum(r.ndim >= 2 for r in pe.residuals)

    assert n_arrays(pe_cheap) < n_arrays(pe_all)
    _, got_no_push, _ = evaluate(gv, vs, [x, y], data, v_vals, push_out=False)
    assert_close(got_no_push, want, f32)


def test_result_record_and_errors():
    x, v = pt.vector("x"), pt.vector("v")
    out = pt.exp(x) * v
    pe = partial_eval([out], [v])
    assert isinstance(pe, PartialEvaluation)
    with pytest.raises(AttributeError):
        pe.outputs = ()
    f_res = pytensor.function([x], list(pe.residuals), mode=MODE)
    f = pytensor.function([v, *pe.placeholders], list(pe.outputs), mode=MODE)
    xv, vv = np.array([0.5, -1.0]), np.array([2.0, 3.0])
    np.testing.assert_allclose(f(vv, *f_res(xv))[0], np.exp(xv) * vv, rtol=1e-14)
    with pytest.raises(ModelSpecError, match="root"):
        partial_eval([out], [pt.exp(v)])
