"""Tests of hf_symbolic.linesearch: Armijo backtracking."""

import math

import pytest

from hf_symbolic.errors import ArgumentError
from hf_symbolic.solve.linesearch import LineSearchResult, armijo


def quadratic_1d(curv, slope, f0):
    return lambda alpha: f0 + slope * alpha + 0.5 * curv * alpha ** 2


def never_called(alpha):
    raise AssertionError(f"objective evaluated at {alpha}")


@pytest.mark.parametrize("curv,slope,c", [(10.0, -1.0, 1e-2), (3.0, -2.0, 1e-2), (50.0, -0.1, 0.3), (0.5, -1.0, 1e-2)])
def test_armijo_on_1d_quadratic_matches_hand_computation(curv, slope, c):
    # f(a) = f0 + s a + curv a^2 / 2 passes f(a) <= f0 + c a s  iff  a <= 2 (1 - c) (-s) / curv,
    # so the accepted step is the first 0.8**t below that bound.
    f0 = 4.0
    bound = 2.0 * (1.0 - c) * (-slope) / curv
    t_expected = 0 if bound >= 1.0 else math.ceil(math.log(bound) / math.log(0.8))
    calls = []
    f = quadratic_1d(curv, slope, f0)

    def objective(alpha):
        calls.append(alpha)
        return f(alpha)

    res = armijo(objective, f0, slope, c=c)
    assert res.accepted
    assert res.tries == t_expected + 1 == len(calls) == res.evaluations
    assert res.step == pytest.approx(0.8 ** t_expected, rel=1e-12)
    assert res.value == pytest.approx(f(0.8 ** t_expected), rel=1e-12)
    assert res.step <= bound
    if t_expected > 0:
        assert 0.8 ** (t_expected - 1) > bound  # the previous try really failed


def test_hand_computed_example():
    # f(a) = 4 - a + 5 a^2, c = 0.01: the bound is 0.198; 0.8**7 = 0.2097 fails, 0.8**8 = 0.16777216 passes.
    res = armijo(quadratic_1d(10.0, -1.0, 4.0), 4.0, -1.0)
    assert res.tries == 9 and res.accepted
    assert res.step == pytest.approx(0.16777216, rel=1e-12)


@pytest.mark.parametrize("slope", [0.0, 1.0, math.nan, math.inf, -math.inf])
def test_non_descent_slope_is_rejected_without_evaluating(slope):
    res = armijo(never_called, 2.0, slope)
    assert res == LineSearchResult(step=0.0, value=2.0, tries=0, accepted=False, evaluations=0)


def test_exhausted_tries_reject_the_step():
    calls = []

    def objective(alpha):
        calls.append(alpha)
        return 3.0 + alpha  # always above f0

    res = armijo(objective, 3.0, -1.0)
    assert not res.accepted and res.step == 0.0 and res.value == 3.0
    assert res.tries == 60 == len(calls) == res.evaluations
    assert calls[-1] == pytest.approx(0.8 ** 59, rel=1e-12)
    # a pass that would come at t = 8 is out of reach with 5 tries
    res = armijo(quadratic_1d(10.0, -1.0, 4.0), 4.0, -1.0, max_tries=5)
    assert not res.accepted and res.step == 0.0 and res.tries == 5


def test_nonfinite_values_count_as_failures():
    def objective(alpha):
        if alpha > 0.9:
            return -math.inf  # an overflowing objective is no success either
        if alpha > 0.7:
            return math.nan
        if alpha > 0.6:
            return math.inf
        return 1.0 - 0.5 * alpha

    res = armijo(objective, 1.0, -0.5)
    # 1.0 -> -inf, 0.8 -> nan, 0.64 -> inf, 0.512 passes (1 - 0.256 <= 1 - 0.00256)
    assert res.accepted and res.tries == 4
    assert res.step == pytest.approx(0.512, rel=1e-12)


def test_known_value_is_not_recomputed():
    f = quadratic_1d(10.0, -1.0, 4.0)
    calls = []

    def objective(alpha):
        calls.append(alpha)
        return f(alpha)

    res = armijo(objective, 4.0, -1.0, known_values={1.0: f(1.0)})
    assert res.tries == 9 and res.evaluations == 8
    assert 1.0 not in calls and len(calls) == 8
    # a known value that passes ends the search with no call at all
    res = armijo(never_called, 4.0, -1.0, known_values={1.0: 0.0})
    assert res.accepted and res.step == 1.0 and res.value == 0.0 and res.evaluations == 0
    # a known non-finite value is a failure like any other
    res = armijo(objective, 4.0, -1.0, known_values={1.0: math.inf})
    assert res.tries == 9


def test_initial_step_and_shrink():
    res = armijo(quadratic_1d(10.0, -1.0, 4.0), 4.0, -1.0, initial_step=0.5, shrink=0.5)
    # bound 0.198: 0.5 and 0.25 fail, 0.125 passes
    assert res.tries == 3 and res.step == 0.125


@pytest.mark.parametrize("kwargs,name", [
    ({"c": 0.0}, "c must be"),
    ({"c": 1.0}, "c must be"),
    ({"shrink": 1.0}, "shrink"),
    ({"shrink": 0.0}, "shrink"),
    ({"max_tries": 0}, "max_tries"),
    ({"max_tries": 2.0}, "max_tries"),
    ({"initial_step": 0.0}, "initial_step"),
    ({"initial_step": math.inf}, "initial_step"),
])
def test_argument_validation(kwargs, name):
    with pytest.raises(ArgumentError, match=name):
        armijo(never_called, 1.0, -1.0, **kwargs)


@pytest.mark.parametrize("f0", [math.nan, math.inf])
def test_nonfinite_f0_is_an_error(f0):
    with pytest.raises(ArgumentError, match="f0"):
        armijo(never_called, f0, -1.0)
