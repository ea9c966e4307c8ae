"""Sums and products of many operands as two-operand chains in Python-thunk modes (``rewrites.binary_elemwise``)."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.elemwise import Elemwise

from hf_symbolic.graph import backend

needs_cxx = pytest.mark.skipif(not pytensor.config.cxx, reason="no C compiler configured")


def _graph(dtype):
    """Three- and four-operand sums and products, with operands broadcast along either axis."""
    a, d = pt.matrix("a", dtype=dtype), pt.matrix("d", dtype=dtype)
    b = pt.vector("b", dtype=dtype)
    c = pt.matrix("c", dtype=dtype, shape=(1, None))
    e = pt.matrix("e", dtype=dtype, shape=(None, 1))
    ins = [a, b, c, d, e]
    outs = [pt.mul(a, b, c, d), pt.add(a, b, c, d), pt.mul(e, c, b), pt.add(b, e, a) * pt.sigmoid(d)]
    rng = np.random.default_rng(7)
    values = [rng.standard_normal((30, 20)), rng.standard_normal(20), rng.standard_normal((1, 20)),
              rng.standard_normal((30, 20)), rng.standard_normal((30, 1))]
    return ins, outs, [v.astype(dtype) for v in values]


def _widest(f):
    """The largest number of inputs of an elementwise node of the compiled function."""
    return max(len(n.inputs) for n in f.maker.fgraph.apply_nodes if isinstance(n.op, Elemwise))


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chains_give_the_c_code_values_to_the_last_bit(dtype):
    ins, outs, values = _graph(dtype)
    with backend.compile_flags("FAST_COMPILE"):
        chained = pytensor.function(ins, outs, mode="FAST_COMPILE")
    as_is = pytensor.function(ins, outs, mode="FAST_COMPILE")  # outside the gate: PyTensor's own graph
    c_code = pytensor.function(ins, outs, mode="CVM")
    assert _widest(as_is) == 4  # the graph has the nodes the rewrite is for
    assert _widest(chained) == 2
    for got, want, before in zip(chained(*values), c_code(*values), as_is(*values), strict=True):
        assert got.dtype == want.dtype == dtype
        np.testing.assert_array_equal(got, want)
        if dtype == "float64":  # the per-element Python fallback rounds once from Python floats
            np.testing.assert_array_equal(got, before)
        else:
            np.testing.assert_allclose(got, before, rtol=1e-6, atol=1e-5)


def test_only_python_thunk_modes_and_same_dtype_operands_are_rewritten():
    ins, outs, values = _graph("float64")
    with backend.compile_flags("NUMBA"):  # another kind of mode: the gate stays shut for this rewrite
        assert _widest(pytensor.function(ins, outs, mode="FAST_COMPILE")) == 4
    k = pt.vector("k", dtype="int8")
    x = pt.vector("x")
    mixed = pt.mul(k, k, x)  # int8 * int8 would wrap where the three-operand product upcasts first
    with backend.compile_flags("FAST_COMPILE"):
        f = pytensor.function([k, x], mixed, mode="FAST_COMPILE")
    assert _widest(f) == 3
    kv = np.array([100, -100], dtype="int8")
    np.testing.assert_array_equal(f(kv, np.ones(2)), [10000.0, 10000.0])


def test_mode_kinds():
    from pytensor.compile.mode import Mode
    from pytensor.link.vm import VMLinker

    assert backend.mode_kind(None) == "c"
    assert backend.mode_kind("FAST_COMPILE") == "python"
    assert backend.mode_kind(Mode(linker=VMLinker(use_cloop=False, c_thunks=False), optimizer="fast_run")) == "python"
    assert backend.mode_kind(Mode(linker="py", optimizer="fast_compile")) == "python"
    assert backend.mode_kind("NUMBA") == backend.mode_kind("JAX") == backend.mode_kind("no such mode") == "other"
    if pytensor.config.cxx:
        assert backend.mode_kind("CVM") == backend.mode_kind(Mode(linker="c", optimizer="fast_run")) == "c"
