"""Vectorization of PyTensor's ``Scan`` over leading batch dimensions.

PyTensor's :func:`~pytensor.graph.replace.vectorize_graph` adds leading batch
dimensions to a graph, op by op, through the ``_vectorize_node`` dispatcher.
PyTensor 3.0.7 has no rule for :class:`~pytensor.scan.op.Scan`, so its generic
fallback wraps the loop in a ``Blockwise``, which runs the whole scan once per
batch entry in Python. Importing this module registers a rule that builds one
loop over batched states instead:

- the batch dimensions of a **sequence** go after its time axis (the loop still
  walks the leading axis), and its inner slice gets them in front;
- a **state** (mit-mot, mit-sot, sit-sot: an outer buffer with a leading
  time/tap axis) is batched when its initial buffer is, or when its inner
  update comes to depend on a batched value; the latter is found by a fixed
  point over the inner graph (a gradient accumulator that starts at zeros but
  adds batched terms is batched). A batched state whose initial buffer lacks
  some batch dimensions is broadcast (a fresh buffer, ``alloc``) to the full
  batch shape, and an inner update that does not depend on the batch is
  broadcast the same way, so that every step writes a whole batched slice;
- an **untraced** state (no time axis) is handled like a state, with its batch
  dimensions in front;
- a **nit-sot** output is batched when its inner expression is;
- a **non-sequence** is batched when its outer value is; the others (typically
  the weights) stay as they are;
- the **inner function** is vectorized with ``vectorize_graph`` over its batched
  inner inputs, so nested scans and every op with its own rule are handled.

The outputs have the batch dimensions first, as ``vectorize_graph`` expects.
Every batch entry runs the same number of steps: a batched ``n_steps`` is
replaced by its common value (checked when the loop runs), and a ``while``
condition must not depend on the batch. When it does, or when a batched input
or a batch-dependent state is not a tensor, the rule defers to the generic
``Blockwise`` fallback, so vectorizing never fails where it did not before.

:func:`vectorize_equal_shapes` is ``vectorize_graph`` for a stack of equally
shaped entries: shapes stay unbatched (a scan's length, slice bounds), and the
result has no ``Blockwise`` where plain ops do, so that it keeps op-level
pushforwards (``Scan``'s own R-operator).

Gradients and pushforwards (R-operators) of the batched loop are those of an
ordinary ``Scan`` node; they equal the per-entry ones stacked.

Examples
--------
>>> import numpy as np, pytensor, pytensor.tensor as pt
>>> import hf_symbolic.graph.vectorize_scan  # registers the rule
>>> from pytensor.graph.replace import vectorize_graph
>>> x = pt.vector("x")
>>> ys = pytensor.scan(lambda x_t, a: a + x_t, sequences=[x], outputs_info=[pt.zeros(())],
...                    return_updates=False)
>>> xb = pt.matrix("xb")
>>> yb = vectorize_graph(ys, {x: xb})
>>> pytensor.function([xb], yb)(np.array([[1.0, 2.0], [3.0, 4.0]])).tolist()
[[1.0, 3.0], [3.0, 7.0]]
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass, field

import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.replace import _vectorize_node, vectorize_graph
from pytensor.graph.traversal import toposort, truncated_graph_inputs
from pytensor.scan.op import Scan
from pytensor.tensor.blockwise import Blockwise
from pytensor.tensor.math import Dot
from pytensor.tensor.shape import Shape, Shape_i
from pytensor.tensor.subtensor import IncSubtensor, indices_from_subtensor
from pytensor.tensor.blockwise import vectorize_node_fallback
from pytensor.tensor.type import TensorType

__all__ = ["vectorize_scan", "vectorize_equal_shapes", "blockwise_nodes", "UnsupportedScanVectorization"]

log = logging.getLogger(__name__)

_TIME_KINDS = ("seq", "mit_mot", "mit_sot", "sit_sot")  # outer value has a leading time/tap axis
_STATE_KINDS = ("mit_mot", "mit_sot", "sit_sot", "untraced")  # loop-carried


_EQUAL_SHAPES = contextvars.ContextVar("hf_symbolic_vectorize_equal_shapes", default=False)


class UnsupportedScanVectorization(NotImplementedError):
    """This scan cannot be vectorized by one batched loop (the Blockwise fallback is used)."""


@dataclass
class _Slot:
    """One sequence, state, nit-sot or non-sequence of a scan, with its positions."""

    kind: str
    outer_in: int | None  # index in node.inputs (None for nit-sot: its input is a length)
    inner_ins: list = field(default_factory=list)  # indices in op.inner_inputs
    inner_outs: list = field(default_factory=list)  # indices in op.inner_outputs
    outer_out: int | None = None  # index in node.outputs
    batched: bool = False


def _slots(info):
    """The slots of a scan, from its :class:`~pytensor.scan.op.ScanInfo`."""
    n_mm_outs = sum(len(s) for s in info.mit_mot_out_slices)
    seq0 = 1
    mm0 = seq0 + info.n_seqs
    ms0 = mm0 + info.n_mit_mot
    ss0 = ms0 + info.n_mit_sot
    ut0 = ss0 + info.n_sit_sot
    nit0 = ut0 + info.n_untraced_sit_sot
    ns0 = nit0 + info.n_nit_sot
    slots = []
    i_in = 0
    for j in range(info.n_seqs):
        slots.append(_Slot("seq", seq0 + j, [i_in]))
        i_in += 1
    i_out = 0
    for j, (itaps, otaps) in enumerate(zip(info.mit_mot_in_slices, info.mit_mot_out_slices)):
        slots.append(_Slot("mit_mot", mm0 + j, list(range(i_in, i_in + len(itaps))),
                           list(range(i_out, i_out + len(otaps))), j))
        i_in += len(itaps)
        i_out += len(otaps)
    o_out = info.n_mit_mot
    for j, itaps in enumerate(info.mit_sot_in_slices):
        slots.append(_Slot("mit_sot", ms0 + j, list(range(i_in, i_in + len(itaps))), [n_mm_outs + j], o_out))
        i_in += len(itaps)
        o_out += 1
    for j in range(info.n_sit_sot):
        slots.append(_Slot("sit_sot", ss0 + j, [i_in], [n_mm_outs + info.n_mit_sot + j], o_out))
        i_in += 1
        o_out += 1
    nit_out0 = n_mm_outs + info.n_mit_sot + info.n_sit_sot
    for j in range(info.n_nit_sot):
        slots.append(_Slot("nit_sot", None, [], [nit_out0 + j], o_out))
        o_out += 1
    for j in range(info.n_untraced_sit_sot):
        slots.append(_Slot("untraced", ut0 + j, [i_in], [nit_out0 + info.n_nit_sot + j], o_out))
        i_in += 1
        o_out += 1
    for j in range(info.n_non_seqs):
        slots.append(_Slot("non_seq", ns0 + j, [i_in]))
        i_in += 1
    return slots


def _is_tensor(var):
    return isinstance(var.type, TensorType)


def _batch_dims(node, batched_inputs):
    """Number of batch dimensions ``k`` and, per outer input, how many it has."""
    extra = [new.type.ndim - old.type.ndim if _is_tensor(old) else 0
             for old, new in zip(node.inputs, batched_inputs)]
    return max(extra, default=0), extra


def _batch_shape(batched_outer, k):
    """Static and symbolic batch shape from the (left-padded) batched outer inputs.

    A dimension takes its size from the first input where it is not statically
    broadcastable; inputs must agree there, as for any PyTensor broadcasting.
    """
    static, symbolic = [], []
    for d in range(k):
        src = next((x for x in batched_outer if x.type.shape[d] != 1), None)
        if src is None:
            static.append(1)
            symbolic.append(1)
        else:
            known = next((x.type.shape[d] for x in batched_outer if x.type.shape[d] not in (None, 1)), None)
            static.append(known)
            symbolic.append(src.shape[d])
    return tuple(static), symbolic


def _with_batch(var, static):
    """A fresh inner variable like ``var`` with batch dimensions ``static`` in front."""
    return TensorType(var.type.dtype, shape=(*static, *var.type.shape))(name=var.name)


def _broadcast_batch(x, n_extra, k, static, symbolic):
    """``x`` with ``n_extra`` batch dims in front, as a fresh array of the full batch shape ``symbolic``."""
    x = pt.shape_padleft(x, k - n_extra)
    if tuple(x.type.shape[:k]) == tuple(static):
        return x
    core = [x.shape[d] for d in range(k, x.type.ndim)]
    out = pt.alloc(x, *symbolic, *core)
    return pt.specify_shape(out, (*static, *([None] * len(core)))) if any(s is not None for s in static) else out


def _common_value(x, what):
    """The value shared by every batch entry of an integer ``x`` (checked when the graph runs).

    ``n_steps`` computed from a sequence's shape becomes batched under
    ``vectorize_graph`` (each entry reports its own length); one loop needs
    them all equal. An empty batch has no value to take and fails here too.
    """
    if not x.type.dtype.startswith(("int", "uint")):
        raise UnsupportedScanVectorization(f"{what} is batched and not an integer")
    flat = x.flatten()
    # Unequal entries give -1 steps, which Scan refuses when it runs ("negative
    # number of steps"). Not an Assert: PyTensor's op-level pushforward visits
    # every node of a graph, and neither Assert nor All has a pushforward.
    return pt.switch(pt.eq(pt.max(flat), pt.min(flat)), flat[0], -1)


def _time_to_front(x, k):
    """``(*batch, T, ...)`` -> ``(T, *batch, ...)``."""
    return x.dimshuffle(k, *range(k), *range(k + 1, x.type.ndim))


def _batch_to_front(x, k):
    """``(T, *batch, ...)`` -> ``(*batch, T, ...)``."""
    return x.dimshuffle(*range(1, k + 1), 0, *range(k + 1, x.type.ndim))


def _vectorize_inner(op, slots, inner_static):
    """Vectorize the inner function given which slots are batched; returns (inner_ins, inner_outs)."""
    inner_ins = list(op.inner_inputs)
    for slot in slots:
        if not slot.batched:
            continue
        for i in slot.inner_ins:
            inner_ins[i] = _with_batch(op.inner_inputs[i], inner_static[slot.outer_in])
    replace = {old: new for old, new in zip(op.inner_inputs, inner_ins) if old is not new}
    if not replace:
        return inner_ins, list(op.inner_outputs)
    vectorize = vectorize_equal_shapes if _EQUAL_SHAPES.get() else vectorize_graph
    outs = vectorize(list(op.inner_outputs), replace)
    return inner_ins, outs


def _is_batched_out(new, old):
    return _is_tensor(old) and new.type.ndim > old.type.ndim


def vectorize_scan(op: Scan, node, *batched_inputs):
    """Vectorize a ``Scan`` node over the leading batch dimensions of ``batched_inputs``.

    Returns the outputs of one new ``Scan`` node (with the batch dimensions
    moved first). A batched ``n_steps`` (or nit-sot length), as
    ``vectorize_graph`` makes of a length read from a batched shape, is
    replaced by its common value; unequal values make the loop fail when it
    runs. Raises :class:`UnsupportedScanVectorization` when one batched loop
    cannot compute the node (a ``while`` condition or a non-tensor state that
    depends on the batch, a batched non-tensor input); the registered rule then
    uses the generic ``Blockwise`` fallback.
    """
    info = op.info
    k, extra = _batch_dims(node, batched_inputs)
    if k == 0:
        return op.make_node(*batched_inputs).outputs
    batched_inputs = list(batched_inputs)
    if extra[0] > 0:
        batched_inputs[0] = _common_value(batched_inputs[0], "n_steps")
        extra[0] = 0
    slots = _slots(info)
    for slot in slots:
        if slot.kind == "nit_sot":
            continue
        e = extra[slot.outer_in]
        if e < 0:
            raise UnsupportedScanVectorization("an input lost dimensions")
        if e > 0:
            if not _is_tensor(node.inputs[slot.outer_in]):
                raise UnsupportedScanVectorization("a batched input is not a tensor")
            slot.batched = True
    nit0 = 1 + info.n_seqs + info.n_mit_mot + info.n_mit_sot + info.n_sit_sot + info.n_untraced_sit_sot
    nit_lengths = range(nit0, nit0 + info.n_nit_sot)
    for i in nit_lengths:
        if extra[i] > 0:
            batched_inputs[i] = _common_value(batched_inputs[i], "a nit-sot length")
            extra[i] = 0

    padded = {s.outer_in: pt.shape_padleft(batched_inputs[s.outer_in], k - extra[s.outer_in])
              for s in slots if s.batched}
    static, symbolic = _batch_shape(list(padded.values()), k)
    # inner batch pattern: a sequence's or non-sequence's own (it may broadcast); a state's: the full batch
    inner_static = {}
    for s in slots:
        if s.kind in ("seq", "non_seq") and s.batched:
            inner_static[s.outer_in] = tuple(padded[s.outer_in].type.shape[:k])
        elif s.kind in _STATE_KINDS:
            inner_static[s.outer_in] = static

    # fixed point: a state becomes batched when its update depends on a batched value
    while True:
        inner_ins, inner_outs = _vectorize_inner(op, slots, inner_static)
        changed = False
        for s in slots:
            if s.kind in _STATE_KINDS and not s.batched:
                if any(_is_batched_out(inner_outs[i], op.inner_outputs[i]) for i in s.inner_outs):
                    if not _is_tensor(node.inputs[s.outer_in]):
                        raise UnsupportedScanVectorization("a non-tensor state depends on the batch")
                    s.batched = changed = True
        if not changed:
            break
    if info.as_while and _is_batched_out(inner_outs[-1], op.inner_outputs[-1]):
        raise UnsupportedScanVectorization("the while condition depends on the batch")

    # inner updates of batched states: broadcast to the full batch where they lack it
    inner_outs = list(inner_outs)
    for s in slots:
        if s.kind in _STATE_KINDS and s.batched:
            ref = inner_ins[s.inner_ins[0]] if s.inner_ins else None
            for i in s.inner_outs:
                out, old = inner_outs[i], op.inner_outputs[i]
                n_extra = out.type.ndim - old.type.ndim
                if n_extra == k and tuple(out.type.shape[:k]) == tuple(static):
                    continue
                if ref is None:
                    raise UnsupportedScanVectorization("cannot find the batch shape inside the loop")
                out = pt.shape_padleft(out, k - n_extra)
                core = [out.shape[d] for d in range(k, out.type.ndim)]
                out = pt.alloc(out, *[ref.shape[d] for d in range(k)], *core)
                inner_outs[i] = pt.specify_shape(out, (*static, *([None] * len(core))))
        elif s.kind == "nit_sot":
            i = s.inner_outs[0]
            n_extra = inner_outs[i].type.ndim - op.inner_outputs[i].type.ndim
            if 0 < n_extra < k:
                inner_outs[i] = pt.shape_padleft(inner_outs[i], k - n_extra)

    # outer inputs
    new_outer = list(batched_inputs)
    for s in slots:
        if not s.batched or s.kind == "nit_sot":
            continue
        x = batched_inputs[s.outer_in]
        if s.kind in _STATE_KINDS:
            x = _broadcast_batch(x, extra[s.outer_in], k, static, symbolic)
        else:
            x = padded[s.outer_in]
        if s.kind in _TIME_KINDS:
            x = _time_to_front(x, k)
        new_outer[s.outer_in] = x

    new_op = Scan(inner_ins, inner_outs, info, mode=op.mode, truncate_gradient=op.truncate_gradient,
                  name=op.name, profile=op.profile, allow_gc=op.allow_gc, strict=op.strict)
    outputs = list(new_op(*new_outer, return_list=True))
    for s in slots:
        if s.outer_out is None:
            continue
        if s.kind == "nit_sot":
            s.batched = _is_batched_out(inner_outs[s.inner_outs[0]], op.inner_outputs[s.inner_outs[0]])
            if s.batched:
                outputs[s.outer_out] = _batch_to_front(outputs[s.outer_out], k)
        elif s.batched and s.kind in _TIME_KINDS:
            outputs[s.outer_out] = _batch_to_front(outputs[s.outer_out], k)
    return outputs


@_vectorize_node.register(Scan)
def _vectorize_scan_node(op, node, *batched_inputs):
    try:
        return vectorize_scan(op, node, *batched_inputs)
    except UnsupportedScanVectorization as exc:
        log.debug("scan %s not vectorized as one loop (%s); using Blockwise", op.name, exc)
        return vectorize_node_fallback(op, node, *batched_inputs)


def _core_shape(node, batched_x):
    """The shape (``Shape``) or one length (``Shape_i``) of the core part of ``batched_x``."""
    k = batched_x.type.ndim - node.inputs[0].type.ndim
    if isinstance(node.op, Shape):
        return [batched_x.shape[k:]]
    return [pt.cast(batched_x.shape[k + node.op.i], node.outputs[0].type.dtype)]


def _plain_dot(node, x, y):
    """A batched ``Dot`` with one unbatched factor as a plain ``dot``/``tensordot``, or None.

    PyTensor vectorizes every ``Dot`` into ``matmul``, a ``Blockwise`` without
    a pushforward; with one factor unbatched the product is an ordinary one.
    """
    x0, y0 = node.inputs
    kx, ky = x.type.ndim - x0.type.ndim, y.type.ndim - y0.type.ndim
    if ky == 0 and x.type.ndim == 2:  # (batch, k) . (k[, n]): an ordinary product
        return pt.dot(x, y)
    if kx == 0 and y.type.ndim == 2 and y0.type.ndim == 1:  # ([m,] k) . (batch, k)
        return pt.dot(y, x.T)
    if ky == 0 and kx > 0:  # (*batch, [m,] k) . (k[, n]): contract x's last axis
        return pt.tensordot(x, y, axes=[[x.type.ndim - 1], [0]])
    if kx == 0 and ky > 0:  # ([m,] k) . (*batch, k[, n])
        ax = ky  # y's contracted axis (the first core one)
        out = pt.tensordot(x, y, axes=[[x.type.ndim - 1], [ax]])  # (m?, *batch, n?)
        if x.type.ndim == 2:
            out = out.dimshuffle(*range(1, ky + 1), 0, *range(ky + 1, out.type.ndim))
        return out
    return None


def _inc_subtensor(node, x, y, *index):
    """A batched ``IncSubtensor``/``SetSubtensor`` with unbatched indices, as one with leading full slices, or None.

    PyTensor 3.0.7 has no rule for it (its fallback is a Blockwise); the
    gradient of ``x[i]`` is such a node.
    """
    x0, y0 = node.inputs[:2]
    if any(new.type.ndim != old.type.ndim for old, new in zip(node.inputs[2:], index)):
        return None
    kx, ky = x.type.ndim - x0.type.ndim, y.type.ndim - y0.type.ndim
    k = max(kx, ky)
    if kx < k:
        x = pt.shape_padleft(x, k - kx)
        x = pt.alloc(x, *[y.shape[d] if x.type.shape[d] == 1 else x.shape[d] for d in range(k)],
                     *[x.shape[d] for d in range(k, x.type.ndim)])
    sub = x[(slice(None),) * k + tuple(indices_from_subtensor(index, node.op.idx_list))]
    if ky:  # y's batch dims in front, then broadcastable dims for the target's core dims it lacks
        y = pt.shape_padleft(y, k - ky)
        gap = (sub.type.ndim - k) - y0.type.ndim
        y = y.dimshuffle(*range(k), *(["x"] * gap), *range(k, y.type.ndim))
    return pt.inc_subtensor(sub, y, set_instead_of_inc=node.op.set_instead_of_inc)


@contextlib.contextmanager
def _equal_shapes():
    token = _EQUAL_SHAPES.set(True)
    try:
        yield
    finally:
        _EQUAL_SHAPES.reset(token)


def vectorize_equal_shapes(outputs, replace):
    """:func:`~pytensor.graph.replace.vectorize_graph` for batches whose entries share their shapes.

    ``vectorize_graph`` gives every batch entry its own shape: ``x.shape``
    becomes a batched array, and whatever is computed from it (a scan's number
    of steps, the bounds of a slice, the shape of an ``alloc``) becomes batched
    too, which often ends in a ``Blockwise`` looping in Python. When the batch
    is a stack of equally shaped arrays (the entries of one bucket), the shape
    of an entry is the core part of the stacked shape, and this function uses
    exactly that: ``Shape`` and ``Shape_i`` of a batched variable give its core
    shape, unbatched. Nodes without a batched input are kept (rebuilt on their
    new inputs) rather than wrapped in a ``Blockwise`` without batch dimensions,
    which would have no pushforward, and a product ``Dot`` with one unbatched
    factor stays a plain product rather than a ``matmul`` (a ``Blockwise``, also
    without pushforward), and an ``IncSubtensor`` with unbatched indices (the
    gradient of ``x[i]``) gets leading full slices instead of a ``Blockwise``. Everything else, scans included (their
    inner functions are vectorized the same way), goes through PyTensor's
    ``_vectorize_node``.

    Parameters
    ----------
    outputs : Variable or sequence of Variables
    replace : mapping
        Original variable -> batched variable (batch dimensions first).

    Returns
    -------
    Variable or list of Variables, as ``vectorize_graph``.
    """
    seq = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    inputs = truncated_graph_inputs(seq, ancestors_to_include=replace.keys())
    vect = {inp: replace.get(inp, inp) for inp in inputs}
    with _equal_shapes():
        for node in toposort(seq, blockers=inputs):
            ins = [vect.get(inp, inp) for inp in node.inputs]
            batched = any(new.type.ndim != old.type.ndim for old, new in zip(node.inputs, ins)
                          if hasattr(old.type, "ndim"))
            if not batched:  # PyTensor's fallback would wrap it in a Blockwise without batch dimensions
                same = all(a is b for a, b in zip(ins, node.inputs))
                outs = node.outputs if same else node.op.make_node(*ins).outputs
            elif isinstance(node.op, (Shape, Shape_i)):
                outs = _core_shape(node, ins[0])
            elif isinstance(node.op, Dot) and (dot := _plain_dot(node, *ins)) is not None:
                outs = [dot]
            elif isinstance(node.op, IncSubtensor) and (inc := _inc_subtensor(node, *ins)) is not None:
                outs = [inc]
            else:
                res = _vectorize_node(node.op, node, *ins)
                outs = res.outputs if isinstance(res, Apply) else res
            for old, new in zip(node.outputs, outs, strict=True):
                vect.setdefault(old, new)
    result = [vect[o] for o in seq]
    return result if isinstance(outputs, (list, tuple)) else result[0]


def blockwise_nodes(outputs):
    """The ``Blockwise`` nodes of a graph, inside scans' inner graphs too (to detect Python fallbacks)."""
    from pytensor.graph.traversal import applys_between, graph_inputs

    seq = list(outputs)
    found, todo = [], [(list(graph_inputs(seq)), seq)]
    while todo:
        ins, outs = todo.pop()
        for node in applys_between(ins, outs):
            if isinstance(node.op, Blockwise):
                found.append(node)
            elif isinstance(node.op, Scan):
                todo.append((list(node.op.inner_inputs), list(node.op.inner_outputs)))
    return found
