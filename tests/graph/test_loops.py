"""The vectorizable elementwise loop (``hf_symbolic.graph.rewrites.row_loops.RowElemwise``).

Compiled without vector math, its results must equal PyTensor's own loop bit
for bit (same scalar code, same order of operations per element), on every
layout: contiguous, row- and column-broadcast, scalar, in place, Fortran-ordered,
strided, empty. The fast loop runs only when its conditions hold; otherwise
PyTensor's loop runs.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from hf_symbolic import hf_optimizer
from hf_symbolic.graph import backend
from hf_symbolic.graph.rewrites.row_loops import RowElemwise
from models import production_mode
from pytensor.scan.op import Scan

needs_cxx = pytest.mark.skipif(not pytensor.config.cxx, reason="no C compiler configured")


def _compile(inputs, outputs, row_loops, monkeypatch, vector_math="0"):
    monkeypatch.setenv("HF_SYMBOLIC_VECTOR_MATH", vector_math)
    monkeypatch.setenv("HF_SYMBOLIC_ROW_LOOPS", "1" if row_loops else "0")
    mode = production_mode()  # the C VM, linked to OpenBLAS when it can
    with backend.compile_flags():
        return pytensor.function(inputs, outputs, mode=mode)


def _row_nodes(f):
    nodes = list(f.maker.fgraph.apply_nodes)
    return [n for n in nodes if isinstance(n.op, RowElemwise)]


def _pair(inputs, outputs, monkeypatch):
    fast = _compile(inputs, outputs, True, monkeypatch)
    plain = _compile(inputs, outputs, False, monkeypatch)
    assert _row_nodes(fast), "the rewrite did not install the row loop"
    assert not _row_nodes(plain)
    return fast, plain


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bias_and_full_operands_bit_identical(dtype, monkeypatch):
    x, y = pt.matrix("x", dtype=dtype), pt.matrix("y", dtype=dtype)
    b, c = pt.vector("b", dtype=dtype), pt.scalar("c", dtype=dtype)
    out = [pt.tanh(x + b), x * y + c, pt.exp(-(x - b) ** 2) * y, pt.sigmoid(x) * (1 - y)]
    fast, plain = _pair([x, y, b, c], out, monkeypatch)
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((37, 53)).astype(dtype), rng.standard_normal((37, 53)).astype(dtype),
            rng.standard_normal(53).astype(dtype), np.asarray(0.7, dtype=dtype)]
    args[0][0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    for got, want in zip(fast(*args), plain(*args)):
        _same(got, want)


@needs_cxx
def test_layouts_that_take_the_plain_loop_are_still_right(monkeypatch):
    x, y, b = pt.matrix("x"), pt.matrix("y"), pt.vector("b")
    fast, plain = _pair([x, y, b], [pt.tanh(x + b) * y], monkeypatch)
    rng = np.random.default_rng(1)
    base = rng.standard_normal((40, 60))
    yv = rng.standard_normal((20, 30))
    bv = rng.standard_normal(30)
    cases = {
        "fortran": (np.asfortranarray(base[:20, :30]), np.asfortranarray(yv), bv),
        "strided rows": (base[::2, :30], yv, bv),
        "strided columns": (base[:20, ::2], yv, bv),
        "strided bias": (base[:20, :30], yv, rng.standard_normal(60)[::2]),
        "transposed": (base[:30, :20].T, yv, bv),
        "empty": (np.zeros((0, 30)), np.zeros((0, 30)), bv),
    }
    for name, args in cases.items():
        _same(fast(*args)[0] if isinstance(fast(*args), list) else fast(*args),
              plain(*args)[0] if isinstance(plain(*args), list) else plain(*args))


@needs_cxx
def test_three_dimensional_and_duplicate_inputs(monkeypatch):
    x = pt.tensor3("x")
    b = pt.vector("b")
    fast, plain = _pair([x, b], [x * x + pt.tanh(x + b)], monkeypatch)
    xv = np.random.default_rng(2).standard_normal((5, 7, 9))
    bv = np.linspace(-1, 1, 9)
    _same(fast(xv, bv), plain(xv, bv))


@needs_cxx
def test_in_place_output(monkeypatch):
    # the intermediate x + y is a fresh array, so the tanh runs in place on it
    x, y, b = pt.matrix("x"), pt.matrix("y"), pt.vector("b")
    out = pt.tanh(pt.dot(x, y) + b)
    fast, plain = _pair([x, y, b], out, monkeypatch)
    assert any(n.op.destroy_map for n in _row_nodes(fast)), "expected an in-place row loop"
    rng = np.random.default_rng(3)
    args = rng.standard_normal((8, 6)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    _same(fast(*args), plain(*args))


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_column_operands_bit_identical(dtype, monkeypatch):
    # one value per row: an outer product x[:, None] * b[None, :], a column plus a full matrix
    x, c = pt.matrix("x", dtype=dtype), pt.col("c", dtype=dtype)
    b = pt.vector("b", dtype=dtype)
    t, c3 = pt.tensor3("t", dtype=dtype), pt.tensor3("c3", dtype=dtype, shape=(None, None, 1))
    out = [c * b, pt.tanh(x + c) * b, x * c + c * b, t * c3 + b]
    fast, plain = _pair([x, c, b, t, c3], out, monkeypatch)
    assert len(_row_nodes(fast)) >= 2
    rng = np.random.default_rng(5)
    xv = rng.standard_normal((13, 11)).astype(dtype)
    cv = rng.standard_normal((13, 1)).astype(dtype)
    bv = rng.standard_normal(11).astype(dtype)
    tv = rng.standard_normal((3, 4, 11)).astype(dtype)
    c3v = rng.standard_normal((3, 4, 1)).astype(dtype)
    cv[0, 0], xv[1, 2] = np.nan, -0.0
    for got, want in zip(fast(xv, cv, bv, tv, c3v), plain(xv, cv, bv, tv, c3v)):
        _same(got, want)
    # a strided column is not contiguous: PyTensor's loop runs, same results
    wide = rng.standard_normal((13, 3)).astype(dtype)
    args = (xv, wide[:, 1:2], bv, tv, c3v)
    for got, want in zip(fast(*args), plain(*args)):
        _same(got, want)
    np.testing.assert_allclose(fast(*args)[0], wide[:, 1:2] * bv, rtol=0)


@needs_cxx
def test_middle_axis_broadcast_keeps_pytensors_loop(monkeypatch):
    t, m = pt.tensor3("t"), pt.tensor3("m", shape=(None, 1, None))
    f = _compile([t, m], pt.tanh(t + m), True, monkeypatch)
    assert not _row_nodes(f)
    tv, mv = np.ones((2, 3, 4)), np.arange(8.0).reshape(2, 1, 4)
    np.testing.assert_allclose(f(tv, mv), np.tanh(tv + mv))


@needs_cxx
def test_vector_math_within_ulps(monkeypatch):
    x, b = pt.matrix("x", dtype="float32"), pt.vector("b", dtype="float32")
    fast = _compile([x, b], pt.tanh(x + b), True, monkeypatch, vector_math="1")
    assert _row_nodes(fast)
    rng = np.random.default_rng(4)
    xv = (rng.standard_normal((100, 64)) * 3).astype("float32")
    bv = rng.standard_normal(64).astype("float32")
    want = np.tanh(xv.astype(np.float64) + bv.astype(np.float64))
    got = fast(xv, bv)
    err = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
    assert err.max() <= 4 * np.finfo(np.float32).eps


@needs_cxx
def test_only_hf_symbolic_compiles_are_rewritten(monkeypatch):
    monkeypatch.delenv("HF_SYMBOLIC_ROW_LOOPS", raising=False)
    x, b = pt.matrix("x"), pt.vector("b")
    outside = pytensor.function([x, b], pt.tanh(x + b), mode="CVM")
    assert not _row_nodes(outside)
    with backend.compile_flags():
        inside = pytensor.function([x, b], pt.tanh(x + b), mode="CVM")
    assert _row_nodes(inside)


@needs_cxx
def test_scan_inner_functions_get_the_row_loop(monkeypatch):
    monkeypatch.delenv("HF_SYMBOLIC_ROW_LOOPS", raising=False)
    rng = np.random.default_rng(5)
    W = pytensor.shared(rng.standard_normal((4, 4)) * 0.3, name="W")
    bh = pytensor.shared(rng.standard_normal(4) * 0.1, name="bh")
    Wo = pytensor.shared(rng.standard_normal((4, 1)) * 0.3, name="Wo")
    x = pt.tensor3("x")
    y = pt.matrix("y")
    h = pytensor.scan(lambda x_t, h: pt.tanh(x_t + pt.dot(h, W) + bh), sequences=[x],
                      outputs_info=[pt.zeros((x.shape[1], 4))], return_updates=False)
    s = pt.dot(h[-1], Wo)
    opt = hf_optimizer([W, bh, Wo], [x, y], s, [pt.mean((s - y) ** 2)], mode="CVM")
    batch = [rng.standard_normal((6, 3, 4)), rng.standard_normal((3, 1))]
    opt.gradient(batch)
    fn = opt._functions["gradient"]
    scans = [n.op for n in fn.maker.fgraph.apply_nodes if isinstance(n.op, Scan)]
    assert scans
    inner = [n for op in scans for n in op.fn.maker.fgraph.apply_nodes]
    assert any(isinstance(n.op, RowElemwise) for n in inner)
