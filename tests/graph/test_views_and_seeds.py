"""``hf_symbolic.graph.rewrites.views`` and ``.scan_seeds``: ``reshape(transpose(h, (2, 0, 1)), (H, -1))`` becomes a view, values unchanged."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.elemwise import DimShuffle
from pytensor.tensor.shape import Reshape

from hf_symbolic import hf_optimizer
from hf_symbolic.graph import backend
from models import production_mode, python_scans, rnn_on_seed

needs_cxx = pytest.mark.skipif(not pytensor.config.cxx, reason="no C compiler configured")


def _moved_axis_copies(f):
    """Reshape nodes that flatten an input whose last axis was moved to the front."""
    found = []
    for n in f.maker.fgraph.apply_nodes:
        if isinstance(n.op, Reshape) and n.inputs[0].owner is not None:
            op = n.inputs[0].owner.op
            if isinstance(op, DimShuffle) and tuple(op.new_order) == (2, 0, 1):
                found.append(n)
    return found


def _compile(ins, out, inside):
    mode = production_mode()
    if inside:
        with backend.compile_flags():
            return pytensor.function(ins, out, mode=mode)
    return pytensor.function(ins, out, mode=mode)


def _data(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@needs_cxx
def test_static_length_is_rewritten_and_values_agree():
    h = pt.tensor("h", shape=(None, None, 6))
    g = pt.tensor("g", shape=(None, None, 6))
    out = pt.dot(pt.reshape(h.transpose(2, 0, 1), (6, -1)), pt.reshape(g, (-1, 6)))
    plain, fast = _compile([h, g], out, False), _compile([h, g], out, True)
    assert _moved_axis_copies(plain), "the reference should keep the copy"
    assert not _moved_axis_copies(fast)
    hv, gv = _data((5, 4, 6), 0), _data((5, 4, 6), 1)
    want = np.einsum("tbi,tbj->ij", hv, gv)
    np.testing.assert_allclose(fast(hv, gv), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(plain(hv, gv), want, rtol=1e-12, atol=1e-12)
    # a non-contiguous input (every other step) still gives the right values
    hv2, gv2 = _data((10, 4, 6), 2)[::2], _data((10, 4, 6), 3)[::2]
    np.testing.assert_allclose(fast(hv2, gv2), np.einsum("tbi,tbj->ij", hv2, gv2), rtol=1e-12, atol=1e-12)


@needs_cxx
def test_other_targets_are_left_alone():
    h = pt.tensor("h", shape=(None, None, 6))
    # first length 12 (not the moved axis's 6): a different matrix, must not be rewritten
    out = pt.reshape(h.transpose(2, 0, 1), (12, -1))
    fast = _compile([h], out, True)
    assert _moved_axis_copies(fast)
    hv = _data((4, 3, 6), 4)
    np.testing.assert_array_equal(fast(hv), hv.transpose(2, 0, 1).reshape(12, -1))
    # another permutation
    out2 = pt.reshape(h.transpose(1, 0, 2), (3, -1))
    np.testing.assert_array_equal(_compile([h], out2, True)(hv), hv.transpose(1, 0, 2).reshape(3, -1))


@needs_cxx
def test_rnn_gradient_has_no_transposed_copy_and_matches_the_plain_compile():
    rng = np.random.default_rng(5)
    H = 7
    W = pytensor.shared(rng.standard_normal((H, H)) * 0.3, name="W")
    U = pytensor.shared(rng.standard_normal((2, H)) * 0.3, name="U")
    Wo = pytensor.shared(rng.standard_normal((H, 1)) * 0.3, name="Wo")
    x, y = pt.tensor3("x"), pt.matrix("y")
    h = pytensor.scan(lambda x_t, h: pt.tanh(pt.dot(x_t, U) + pt.dot(h, W)), sequences=[x],
                      outputs_info=[pt.zeros((x.shape[1], H))], return_updates=False)
    s = pt.dot(h[-1], Wo)
    cost = pt.mean((s - y) ** 2)
    opt = hf_optimizer([W, U, Wo], [x, y], s, [cost])
    batch = [rng.standard_normal((9, 5, 2)), rng.standard_normal((5, 1))]
    g, _ = opt.gradient(batch)
    assert not _moved_axis_copies(opt._functions["gradient"])
    (cost_py,) = python_scans([cost])  # the reference compiles no C code, its scans included
    reference = pytensor.function([x, y], pytensor.grad(cost_py, [W, U, Wo]), mode="FAST_COMPILE")(*batch)
    np.testing.assert_allclose(g, np.concatenate([r.ravel() for r in reference]), rtol=1e-12, atol=1e-14)


def _seed_graph(value=0.0, index=-1):
    T, y = pt.lscalar("T"), pt.matrix("y")
    a = pt.alloc(np.float64(0.0), T + 1, 3, 2)
    b = pt.alloc(np.float64(value), T, 3, 2)
    return [T, y], pt.inc_subtensor(a[1:], pt.inc_subtensor(b[index], y)) * 2


def _seed_nests(f):
    from pytensor.tensor.subtensor import IncSubtensor

    return [n for n in f.maker.fgraph.apply_nodes
            if isinstance(n.op, IncSubtensor) and n.inputs[1].owner is not None
            and isinstance(n.inputs[1].owner.op, IncSubtensor)]


@needs_cxx
def test_last_step_seed_is_one_fill_and_bit_identical():
    ins, out = _seed_graph()
    fast, plain = _compile(ins, out, True), _compile(ins, out, False)
    assert _seed_nests(plain) and not _seed_nests(fast)
    yv = _data((3, 2), 6)
    yv[0, 0] = -0.0
    for t in (1, 2, 7):
        got, want = fast(t, yv), plain(t, yv)
        assert got.shape == want.shape == (t + 1, 3, 2)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@needs_cxx
@pytest.mark.parametrize("value,index", [(1.0, -1), (0.0, 0)])
def test_last_step_seed_needs_zeros_and_the_last_index(value, index):
    ins, out = _seed_graph(value, index)
    fast = _compile(ins, out, True)
    assert _seed_nests(fast)
    yv = _data((3, 2), 7)
    b = np.full((4, 3, 2), value)
    b[index] += yv
    want = np.zeros((5, 3, 2))
    want[1:] += b
    np.testing.assert_array_equal(fast(4, yv), want * 2)


def _mit_mot_scans(f):
    from pytensor.scan.op import Scan

    return [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, Scan) and n.op.info.mit_mot_in_slices]


@needs_cxx
@pytest.mark.parametrize("every_step", [False, True])
def test_backward_loop_starts_from_its_seed(every_step):
    (W, U), ins, cost, data = rnn_on_seed(every_step)
    grads = pytensor.grad(cost, [W, U, ins[1]])
    fast = _compile(ins, grads, True)
    assert _mit_mot_scans(_compile(ins, grads, False))
    # a cost on the last state only: the buffer is zero but for its first step
    assert bool(_mit_mot_scans(fast)) == every_step
    # reference: the same graph compiled without hf_symbolic's rewrites (not PyTensor 3.0.7's
    # plain FAST_COMPILE: its rewrite local_second_sink differentiates the every-step cost
    # wrongly, see hf_symbolic.model.checks.WRONG_REWRITES; FAST_RUN and NUMBA agree with
    # central differences)
    reference = _compile(ins, grads, False)(*data)
    got = fast(*data)
    for g, want in zip(got, reference, strict=True):  # the h0 gradient reads the whole trace's end
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-13)
    cost = _compile(ins, cost, False)
    eps = 1e-6
    for j in range(3):
        d = np.zeros_like(data[1])
        d[0, j] = eps
        numeric = (cost(data[0], data[1] + d, data[2]) - cost(data[0], data[1] - d, data[2])) / (2 * eps)
        assert abs(got[2][0, j] - numeric) <= 1e-6 * max(1.0, abs(numeric))


@needs_cxx
def test_outer_products_are_elementwise_and_exact():
    from pytensor.tensor.blas import Dot22, Gemm
    from pytensor.tensor.math import Dot

    a, b = pt.matrix("a", shape=(None, 1)), pt.matrix("b")
    c = pt.matrix("c")
    out = [pt.dot(a, b), pt.dot(c, b)]  # only the first contracts a length-1 axis

    def products(f):
        return [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, (Dot, Dot22, Gemm))]

    fast, plain = _compile([a, b, c], out, True), _compile([a, b, c], out, False)
    assert len(products(plain)) == 2 and len(products(fast)) == 1
    av, bv, cv = _data((7, 1), 8), _data((1, 5), 9), _data((4, 1), 10)
    got = fast(av, bv, cv)
    np.testing.assert_array_equal(got[0], np.multiply.outer(av[:, 0], bv[0]))
    np.testing.assert_array_equal(got[1], plain(av, bv, cv)[1])
    with pytest.raises((AssertionError, ValueError), match="shape"):
        fast(av, _data((2, 5), 11), cv)  # the length-1 axis is still checked
