"""The cached-forward product falls back to the plain one only before its first successful run."""

import logging

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from hf_symbolic import hf_optimizer


def _model():
    rng = np.random.default_rng(0)
    W = pytensor.shared(rng.normal(size=(3, 2)), name="W")
    x, y = pt.matrix("x"), pt.matrix("y")
    s = pt.dot(x, W)
    cost = pt.mean(pt.sum((pt.sigmoid(s) - y) ** 2, axis=1))
    opt = hf_optimizer([W], [x, y], s, [cost], mode="FAST_COMPILE")
    batch = [rng.normal(size=(5, 3)), rng.random((5, 2))]
    return opt, batch


def _plain(opt, v, batch):
    return np.asarray(opt._function("gauss_newton")(v, *batch))


def test_failure_at_first_product_falls_back(caplog):
    opt, batch = _model()
    f_res, _ = opt._cached_gv_functions()
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("needs static shapes")

    opt._functions["gauss_newton_cached"] = (f_res, broken)
    v = np.arange(6.0)
    with caplog.at_level(logging.WARNING, logger="hf_symbolic.optimizer"):
        op = opt.curvature_operator(batch)
        out = op.matvec(v)
        np.testing.assert_allclose(op.matvec(2 * v), 2 * out, rtol=1e-12)  # same operator, second product
    np.testing.assert_allclose(out, _plain(opt, v, batch), rtol=1e-12)
    assert opt._functions["gauss_newton_cached"] is None
    assert "needs static shapes" in caplog.text
    assert len(calls) == 1 and caplog.text.count("needs static shapes") == 1
    # later operators use the plain product without trying the cached one again
    np.testing.assert_allclose(opt.curvature_operator(batch).matvec(v), out, rtol=1e-12)


def test_failure_of_residuals_falls_back():
    opt, batch = _model()
    _, f_gv = opt._cached_gv_functions()

    def broken(*args):
        raise RuntimeError("residuals failed")

    opt._functions["gauss_newton_cached"] = (broken, f_gv)
    v = np.ones(6)
    np.testing.assert_allclose(opt.curvature_operator(batch).matvec(v), _plain(opt, v, batch), rtol=1e-12)
    assert opt._functions["gauss_newton_cached"] is None


def test_errors_after_a_successful_product_propagate():
    opt, batch = _model()
    v = np.ones(6)
    cached = opt.curvature_operator(batch).matvec(v)  # the cached product ran once
    np.testing.assert_allclose(cached, _plain(opt, v, batch), rtol=1e-10)
    f_res, f_gv = opt._functions["gauss_newton_cached"]

    def broken(*args):
        raise RuntimeError("later failure")

    opt._functions["gauss_newton_cached"] = (f_res, broken)
    with pytest.raises(RuntimeError, match="later failure"):
        opt.curvature_operator(batch).matvec(v)
    assert opt._functions["gauss_newton_cached"] is not None
