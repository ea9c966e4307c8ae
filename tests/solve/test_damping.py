"""Tests of hf_symbolic.damping: reduction ratio and the Levenberg-Marquardt rule."""

import dataclasses
import math
import sys

import numpy as np
import pytest

from hf_symbolic.solve.damping import DampingRule, levenberg_marquardt, reduction_ratio
from hf_symbolic.errors import ArgumentError


def test_reduction_ratio_values():
    assert reduction_ratio(9.0, 10.0, -2.0) == 0.5
    assert reduction_ratio(11.0, 10.0, -2.0) == -0.5          # objective went up
    assert reduction_ratio(6.0, 10.0, -2.0) == 2.0            # better than predicted
    assert reduction_ratio(np.float32(9.0), np.float64(10.0), -4.0) == 0.25


def test_reduction_ratio_on_a_real_quadratic_is_one():
    # f is exactly quadratic, so q(p) predicts the change exactly: rho = 1.
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    g_mat = a @ a.T + np.eye(5)
    theta, c = rng.standard_normal(5), rng.standard_normal(5)

    def f(x):
        return 0.5 * x @ g_mat @ x + c @ x

    grad = g_mat @ theta + c
    p = -(grad @ grad) / (grad @ g_mat @ grad) * grad   # exact minimizer along -grad
    q = grad @ p + 0.5 * p @ g_mat @ p
    assert q < 0
    assert reduction_ratio(f(theta + p), f(theta), q) == pytest.approx(1.0, rel=1e-10)


@pytest.mark.parametrize("args", [
    (9.0, 10.0, 0.0),            # no predicted decrease
    (9.0, 10.0, 1.0),            # predicted increase
    (math.nan, 10.0, -1.0),
    (math.inf, 10.0, -1.0),
    (9.0, math.inf, -1.0),
    (9.0, 10.0, -math.inf),
    (9.0, 10.0, math.nan),
])
def test_reduction_ratio_not_computable_is_nan(args):
    assert math.isnan(reduction_ratio(*args))


def test_lm_rule_boundaries():
    lam = 3.0
    assert levenberg_marquardt(lam, 0.25) == lam                  # exactly lower: unchanged
    assert levenberg_marquardt(lam, 0.75) == lam                  # exactly upper: unchanged
    assert levenberg_marquardt(lam, 0.5) == lam
    assert levenberg_marquardt(lam, np.nextafter(0.25, 0.0)) == lam * 1.5
    assert levenberg_marquardt(lam, np.nextafter(0.75, 1.0)) == lam * (2.0 / 3.0)
    assert levenberg_marquardt(lam, math.nan) == lam * 1.5
    assert levenberg_marquardt(lam, -2.0) == lam * 1.5
    assert levenberg_marquardt(lam, -math.inf) == lam * 1.5
    assert levenberg_marquardt(lam, math.inf) == lam * (2.0 / 3.0)
    assert levenberg_marquardt(lam, 1.0) == pytest.approx(2.0, rel=1e-15)


def test_lm_rule_custom_constants_and_clamp():
    assert levenberg_marquardt(1.0, 0.3, lower=0.4, upper=0.9, boost=2.0) == 2.0
    assert levenberg_marquardt(1.0, 0.95, lower=0.4, upper=0.9, drop=0.5) == 0.5
    assert levenberg_marquardt(1.0, 0.1, max_lambda=1.2) == 1.2
    assert levenberg_marquardt(1.0, 0.9, min_lambda=0.9) == 0.9
    assert levenberg_marquardt(0.5, 0.5, min_lambda=1.0) == 1.0   # clamp also applies when unchanged


def test_lm_rule_repeated_failures_grow_geometrically():
    lam = 1.0
    for _ in range(10):
        lam = levenberg_marquardt(lam, 0.0)
    assert lam == pytest.approx(1.5 ** 10, rel=1e-12)


def test_lm_rule_never_underflows_to_zero_nor_overflows_to_inf():
    # A small-batch autoencoder run (CG capped at 10 iterations) had rho > 3/4 on most of its 1200
    # updates and lambda at 1e-198; about 600 more drops would have made it 0.0, which the next call refuses.
    rule = DampingRule()
    lam = 45.0
    for _ in range(2000):
        lam = rule(lam, 0.9)
        assert lam > 0.0
    assert lam == sys.float_info.min
    assert rule(lam, 0.0) == 1.5 * sys.float_info.min      # and failures bring it back up
    lam = 1.0
    for _ in range(2000):
        lam = rule(lam, math.nan)
        assert math.isfinite(lam)
    assert lam == sys.float_info.max
    assert rule(lam, 0.9) == sys.float_info.max * (2.0 / 3.0)
    assert levenberg_marquardt(5e-324, 0.9) == sys.float_info.min   # a subnormal input is lifted too
    assert levenberg_marquardt(1e-300, 0.9, min_lambda=1e-3) == 1e-3


def test_damping_rule_object_matches_function():
    rule = DampingRule(lower=0.2, upper=0.8, boost=2.0, drop=0.25, min_lambda=1e-3, max_lambda=1e3)
    for lam in (1e-3, 0.5, 2.0, 999.0):
        for rho in (-1.0, 0.1, 0.2, 0.5, 0.8, 0.81, math.nan):
            assert rule(lam, rho) == levenberg_marquardt(lam, rho, lower=0.2, upper=0.8, boost=2.0, drop=0.25,
                                                         min_lambda=1e-3, max_lambda=1e3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.boost = 3.0
    assert DampingRule() == DampingRule(0.25, 0.75, 1.5, 2.0 / 3.0)
    assert hash(DampingRule()) == hash(DampingRule())
    assert isinstance(DampingRule().boost, float)


@pytest.mark.parametrize("lam", [0.0, -1.0, math.inf, math.nan])
def test_lm_rule_rejects_bad_lambda(lam):
    with pytest.raises(ArgumentError, match="lam must be a finite number > 0"):
        levenberg_marquardt(lam, 0.5)


@pytest.mark.parametrize("kwargs,name", [
    ({"drop": 1.0}, "drop"),
    ({"drop": 0.0}, "drop"),
    ({"boost": 1.0}, "boost"),
    ({"boost": 0.5}, "boost"),
    ({"lower": 0.75, "upper": 0.75}, "lower must be < upper"),
    ({"lower": 0.8, "upper": 0.5}, "lower must be < upper"),
    ({"min_lambda": -1.0}, "min_lambda"),
    ({"min_lambda": 2.0, "max_lambda": 1.0}, "min_lambda"),
    ({"lower": math.nan}, "lower"),
    ({"boost": "2"}, "boost"),
])
def test_lm_rule_rejects_bad_constants(kwargs, name):
    with pytest.raises(ArgumentError, match=name):
        levenberg_marquardt(1.0, 0.5, **kwargs)
    with pytest.raises(ValueError):
        DampingRule(**kwargs)
