"""hf_symbolic compiles its C code with glibc's vector math (``hf_symbolic.graph.backend.compile_flags``).

The flag must change only hf_symbolic's own functions, keep elementwise
results within a few ulp of numpy's, and keep IEEE special values.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from hf_symbolic import hf_optimizer
from hf_symbolic.graph import backend

needs_cxx = pytest.mark.skipif(not pytensor.config.cxx, reason="no C compiler configured")

# Largest error allowed in units of the dtype's epsilon, relative to the reference value.
ULPS = {"float32": 4, "float64": 4}


@needs_cxx
def test_flag_only_inside_the_context(monkeypatch):
    monkeypatch.delenv("HF_SYMBOLIC_VECTOR_MATH", raising=False)
    before = pytensor.config.gcc__cxxflags
    with backend.compile_flags():
        assert backend.VECTOR_MATH_FLAG in pytensor.config.gcc__cxxflags.split()
        assert pytensor.config.gcc__cxxflags.startswith(before)
    assert pytensor.config.gcc__cxxflags == before


@needs_cxx
def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("HF_SYMBOLIC_VECTOR_MATH", "0")
    before = pytensor.config.gcc__cxxflags
    with backend.compile_flags():
        assert pytensor.config.gcc__cxxflags == before


@needs_cxx
def test_not_added_twice(monkeypatch):
    monkeypatch.delenv("HF_SYMBOLIC_VECTOR_MATH", raising=False)
    with backend.compile_flags():
        with backend.compile_flags():
            assert pytensor.config.gcc__cxxflags.split().count(backend.VECTOR_MATH_FLAG) == 1


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["tanh", "exp", "log1p", "sigmoid"])
def test_elementwise_accuracy_and_special_values(dtype, name, monkeypatch):
    monkeypatch.delenv("HF_SYMBOLIC_VECTOR_MATH", raising=False)
    x = pt.vector("x", dtype=dtype)
    with backend.compile_flags():
        f = pytensor.function([x], getattr(pt, name)(x), mode="CVM")
    rng = np.random.default_rng(0)
    a = rng.standard_normal(10_000) * 5
    if name == "log1p":
        a = np.abs(a)
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 20.0, -20.0]
    a = np.concatenate([a, special]).astype(dtype)
    with np.errstate(all="ignore"):
        ref = {"tanh": np.tanh, "exp": np.exp, "log1p": np.log1p,
               "sigmoid": lambda z: 1 / (1 + np.exp(-z.astype(np.float64)))}[name](a).astype(dtype)
        out = f(a)
        finite = np.isfinite(ref) & (ref != 0)
        rel = np.abs(out[finite].astype(np.float64) - ref[finite]) / np.abs(ref[finite].astype(np.float64))
    assert rel.max() <= ULPS[dtype] * np.finfo(dtype).eps, rel.max()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(out[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)])
    if name == "tanh":  # odd function: the sign of zero survives
        assert np.signbit(out[-4]) and not np.signbit(out[-5])


@needs_cxx
def test_optimizer_functions_compiled_with_the_flag(monkeypatch):
    """The flags PyTensor saw while compiling hf_symbolic's gradient include the vector-math define."""
    monkeypatch.delenv("HF_SYMBOLIC_VECTOR_MATH", raising=False)
    seen = []
    real = pytensor.function

    def spy(*args, **kwargs):
        seen.append(pytensor.config.gcc__cxxflags)
        return real(*args, **kwargs)

    monkeypatch.setattr(pytensor, "function", spy)
    W = pytensor.shared(np.ones((2, 1)), name="W")
    x = pt.matrix("x")
    s = pt.tanh(pt.dot(x, W))
    opt = hf_optimizer([W], [x], s, [pt.mean(s ** 2)], mode="CVM")
    g, _ = opt.gradient([np.ones((3, 2))])
    t = np.tanh(2.0)
    np.testing.assert_allclose(g, [2 * t * (1 - t ** 2) * 2 / 2] * 2, rtol=1e-12)
    assert seen and all(backend.VECTOR_MATH_FLAG in flags.split() for flags in seen)
    assert backend.VECTOR_MATH_FLAG not in (pytensor.config.gcc__cxxflags or "").split()
