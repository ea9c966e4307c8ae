"""The registration table of hf_symbolic's rewrites and its gate (``hf_symbolic.graph.rewrites``)."""

import threading

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile import optdb
from pytensor.tensor.blas import Dot22, Gemm
from pytensor.tensor.math import Dot

from hf_symbolic.graph import backend, rewrites
from hf_symbolic.graph.rewrites.row_loops import RowElemwise
from models import production_mode

needs_cxx = pytest.mark.skipif(not pytensor.config.cxx, reason="no C compiler configured")

# optdb names and positions as they were before the table existed (each module registered itself)
EXPECTED = {
    "hf_symbolic_seed_as_initial_state": 1.55,
    "hf_symbolic_outer_product_as_mul": 1.65,
    "hf_symbolic_flatten_moved_axis": 48.9,
    "hf_symbolic_last_step_seed": 48.91,
    "hf_symbolic_binary_associative_elemwise": 48.95,
    "hf_symbolic_row_elemwise": 99.5,
}


def _registered(name):
    """The rewriters optdb holds under ``name``."""
    return list(optdb.__db__[name]) if name in optdb else []


def test_each_entry_is_registered_once_where_it_was():
    assert {e.name: e.position for e in rewrites.REWRITES} == EXPECTED
    assert len({e.name for e in rewrites.REWRITES}) == len(rewrites.REWRITES)
    for entry in rewrites.REWRITES:
        (held,) = _registered(entry.name)
        assert held.entry is entry
        assert held.name == entry.name
        assert optdb.__position__[entry.name] == entry.position
        assert entry.tags == (("fast_compile",) if entry.modes == ("python",) else ("fast_run",))
        for tag in entry.tags:
            assert held in optdb.__db__[tag]
    # nothing else of hf_symbolic's is in optdb
    ours = sorted(n for n in optdb.__position__ if n.startswith("hf_symbolic"))
    assert ours == sorted(EXPECTED)


def test_registering_again_adds_nothing():
    before = {e.name: _registered(e.name) for e in rewrites.REWRITES}
    rewrites.register()
    assert {e.name: _registered(e.name) for e in rewrites.REWRITES} == before


def test_the_gate_nests_and_is_per_thread():
    assert not rewrites.is_active("c")
    seen = []
    with rewrites.active("c"):
        with rewrites.active("c"):
            assert rewrites.is_active("c")
        assert rewrites.is_active("c") and not rewrites.is_active("other")
        worker = threading.Thread(target=lambda: seen.append(rewrites.is_active("c")))
        worker.start()
        worker.join()
    assert seen == [False]
    assert not rewrites.is_active("c")
    with pytest.raises(ValueError, match="mode kind"):
        with rewrites.active("cuda"):
            pass


def _graph():
    """A graph two table rewrites change: a bias add (row loop) and a product over a length-1 axis."""
    x, b = pt.matrix("x"), pt.vector("b")
    a, c = pt.matrix("a", shape=(None, 1)), pt.matrix("c")
    return [x, b, a, c], [pt.tanh(x + b), pt.dot(a, c)]


def _rewritten(f):
    """(row loops present, products left) in a compiled function."""
    nodes = f.maker.fgraph.apply_nodes
    return (any(isinstance(n.op, RowElemwise) for n in nodes),
            sum(isinstance(n.op, (Dot, Dot22, Gemm)) for n in nodes))


def _values(f):
    rng = np.random.default_rng(0)
    return f(rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((5, 1)),
             rng.standard_normal((1, 2)))


@needs_cxx
def test_rewrites_act_only_inside_the_gate(monkeypatch):
    monkeypatch.delenv("HF_SYMBOLIC_ROW_LOOPS", raising=False)
    mode = production_mode()
    ins, outs = _graph()
    outside = pytensor.function(ins, outs, mode=mode)
    with backend.compile_flags(mode):
        inside = pytensor.function(ins, outs, mode=mode)
    with rewrites.active("other"):  # a kind of mode no entry applies to
        other = pytensor.function(ins, outs, mode=mode)
    monkeypatch.setenv("HF_SYMBOLIC_ROW_LOOPS", "0")
    with backend.compile_flags(mode):
        switched_off = pytensor.function(ins, outs, mode=mode)
    after = pytensor.function(ins, outs, mode=mode)
    assert _rewritten(outside) == _rewritten(other) == _rewritten(switched_off) == _rewritten(after) == (False, 1)
    assert _rewritten(inside) == (True, 0)
    for got, want in zip(_values(inside), _values(outside), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@needs_cxx
def test_compile_flags_opens_the_gate_of_its_mode_kind_only():
    def state():
        return tuple(rewrites.is_active(kind) for kind in rewrites.MODE_KINDS)  # c, python, other

    with backend.compile_flags("CVM"):
        assert state() == (True, False, False)
    with backend.compile_flags("FAST_COMPILE"):
        assert state() == (False, True, False)
    with backend.compile_flags("NUMBA"):
        assert state() == (False, False, True)
    assert state() == (False, False, False)
