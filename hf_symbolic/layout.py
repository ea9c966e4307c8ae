"""Flattening a moved axis without a copy.

PyTensor's ``scan`` push-out turns the weight gradient of a recurrent layer,
``sum_t h_t^T g_t``, into one product of a ``(H, T*B)`` matrix with a
``(T*B, H)`` one, the first built as ``reshape(transpose(h, (2, 0, 1)), (H, -1))``.
That reshape cannot be a view: it copies all of ``h`` (T x B x H values)
through a strided transpose on every call. For a tanh RNN with T=100,
B=1000, H=100 in float32 the copy took 50 ms of a 245 ms gradient on the
2-core development machine.

The same matrix is ``reshape(h, (-1, H)).T``: a view of ``h`` when ``h`` is
C-contiguous, which BLAS reads as a transposed operand. The rewrite here
(:data:`flatten_moved_axis`) replaces the first form by the second when the
target's first length is the moved axis's length (the constant ``H`` of the
static shape, ``h.shape[-1]``, or a length shape inference equates with it). Values are unchanged: it
only re-describes which element goes where. It runs in hf_symbolic's own
compiles only, like :mod:`hf_symbolic.loops`.
"""

from __future__ import annotations

import numpy as np
from pytensor.compile import optdb
from pytensor.graph.basic import Constant, equal_computations
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.tensor.elemwise import DimShuffle
from pytensor.tensor.shape import Reshape, Shape_i
from pytensor.tensor.subtensor import IncSubtensor

from .loops import _WhenActive

__all__ = ["flatten_moved_axis", "last_step_seed"]


def _first_length_is(fgraph, shape, x):
    """True when ``shape[0]`` is surely ``x.shape[-1]``."""
    last = x.type.shape[-1]
    if isinstance(shape, Constant):
        value = np.asarray(shape.data)
        return value.ndim == 1 and value.size == 2 and last is not None and int(value[0]) == last
    owner = shape.owner
    if owner is None or type(owner.op).__name__ != "MakeVector" or len(owner.inputs) != 2:
        return False
    first = owner.inputs[0]
    if isinstance(first, Constant):
        return last is not None and int(np.asarray(first.data)) == last
    o = first.owner
    if o is not None and isinstance(o.op, Shape_i) and o.op.i == x.ndim - 1 and o.inputs[0] is x:
        return True
    feature = getattr(fgraph, "shape_feature", None)  # lengths known to be equal by shape inference
    if feature is not None and x in feature.shape_of:
        known = feature.shape_of[x][-1]
        return known is first or equal_computations([known], [first])
    return False


@node_rewriter([Reshape])
def _flatten_moved_axis(fgraph, node):
    out = node.outputs[0]
    inp, shape = node.inputs
    if out.ndim != 2 or inp.owner is None or not isinstance(inp.owner.op, DimShuffle):
        return None
    x = inp.owner.inputs[0]
    nd = x.ndim
    if nd < 3 or tuple(inp.owner.op.new_order) != (nd - 1, *range(nd - 1)):
        return None
    if not _first_length_is(fgraph, shape, x):
        return None
    import pytensor.tensor as pt

    if all(d is not None for d in x.type.shape):  # constant lengths (JAX traces only those)
        target = (int(np.prod(x.type.shape[:-1])), int(x.type.shape[-1]))
    else:
        target = (-1, x.shape[-1])
    new = pt.reshape(x, target, ndim=2).T
    if new.type.dtype != out.type.dtype or not out.type.is_super(new.type):
        return None
    return [new]


def _zeros(var) -> bool:
    """True when ``var`` is ``alloc(0, ...)``."""
    from pytensor.tensor.basic import Alloc, get_underlying_scalar_constant_value
    from pytensor.tensor.exceptions import NotScalarConstantError

    if var.owner is None or not isinstance(var.owner.op, Alloc):
        return False
    try:
        return float(get_underlying_scalar_constant_value(var.owner.inputs[0])) == 0.0
    except NotScalarConstantError:
        return False


@node_rewriter([IncSubtensor])
def _last_step_seed(fgraph, node):
    """``inc(zeros_a[k:], inc(zeros_b[-1], y))`` -> ``inc(zeros_a[-1], y)``.

    The gradient of a ``scan`` whose cost reads only its last state starts its
    backward loop from such a nest: a zero tensor for all steps, its last step
    set, added into a second zero tensor one step longer. Both are as large as
    the hidden states (40 MB for T=100, 1000 sequences, 100 float32 units),
    so the nest cost two fills and a full add per gradient and per product.
    The replacement is one fill and a write of the last step; values are equal
    (``0 + (0 + y) == 0 + y`` in IEEE arithmetic, signed zeros included).
    """
    from pytensor.tensor.subtensor import get_idx_list

    a, x = node.inputs[:2]
    if not _zeros(a) or x.owner is None or not isinstance(x.owner.op, IncSubtensor):
        return None
    b, y = x.owner.inputs[:2]
    if not _zeros(b) or x.type.broadcastable != a.type.broadcastable:
        return None
    outer = get_idx_list(node.inputs[1:], node.op.idx_list)  # (skips the value: indices follow it)
    inner = get_idx_list(x.owner.inputs[1:], x.owner.op.idx_list)
    if len(outer) != 1 or not isinstance(outer[0], slice) or outer[0].stop is not None or outer[0].step is not None:
        return None
    if len(inner) != 1 or isinstance(inner[0], slice):
        return None
    try:
        from pytensor.tensor.basic import get_underlying_scalar_constant_value

        if int(get_underlying_scalar_constant_value(inner[0])) != -1:
            return None
    except Exception:
        return None
    import pytensor.tensor as pt

    if node.op.set_instead_of_inc and x.owner.op.set_instead_of_inc:
        new = pt.set_subtensor(a[-1], y)
    else:
        new = pt.inc_subtensor(a[-1], y)
    if new.type.dtype != node.outputs[0].type.dtype or not node.outputs[0].type.is_super(new.type):
        return None
    return [new]


flatten_moved_axis = _WhenActive(in2out(_flatten_moved_axis, ignore_newtrees=True))
last_step_seed = _WhenActive(in2out(_last_step_seed, ignore_newtrees=True))

if "hf_symbolic_flatten_moved_axis" not in optdb:
    # before fusion and the in-place rewrites: the new views then take part in them
    optdb.register("hf_symbolic_flatten_moved_axis", flatten_moved_axis, "fast_run", position=48.9)
if "hf_symbolic_last_step_seed" not in optdb:
    optdb.register("hf_symbolic_last_step_seed", last_step_seed, "fast_run", position=48.91)
