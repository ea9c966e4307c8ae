"""Backward-loop seeds: one fill, or the seed as a loop's initial state, instead of zero buffers.

The backward loop of a cost that reads only a loop's last state starts from
a buffer that is zero except for that state's gradient: two rewrites here
build it with one fill (:data:`last_step_seed`) or, when the loop only adds
into it, drop it for a plain recurrence started at the seed
(:data:`seed_as_initial_state`; for a 100-unit RNN on 1000 sequences of
100 steps that is a 40 MB fill and an addition of zeros at every step, per
gradient and per curvature product). Both run in hf_symbolic's own compiles
only (the gate of :mod:`hf_symbolic.graph.rewrites`).
"""

from __future__ import annotations

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.graph.traversal import io_toposort
from pytensor.scan.op import Scan
from pytensor.scan.utils import ScanArgs, expand_empty
from pytensor.tensor.basic import Alloc, get_underlying_scalar_constant_value
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.exceptions import NotScalarConstantError
from pytensor.tensor.subtensor import IncSubtensor, Subtensor, get_idx_list

from ..partial_eval.scans import _scan_rebuild

__all__ = ["last_step_seed", "seed_as_initial_state"]


def _zeros(var) -> bool:
    """True when ``var`` is ``alloc(0, ...)``."""
    if var.owner is None or not isinstance(var.owner.op, Alloc):
        return False
    try:
        return float(get_underlying_scalar_constant_value(var.owner.inputs[0])) == 0.0
    except NotScalarConstantError:
        return False


@node_rewriter([IncSubtensor])
def _last_step_seed(fgraph, node):
    """``inc(zeros_a[k:], inc(zeros_b[-1], y))`` -> ``set(zeros_a[-1], 0 + (0 + y))``.

    The gradient of a ``scan`` whose cost reads only its last state starts its
    backward loop from such a nest: a zero tensor for all steps, its last step
    set, added into a second zero tensor one step longer. Both are as large as
    the hidden states (40 MB for T=100, 1000 sequences, 100 float32 units),
    so the nest cost two fills and a full add per gradient and per product.
    The replacement is one fill and a write of the last step, whose value
    :func:`_last_only` reads off the nest with the nest's own additions of
    zero (so signed zeros come out as before).
    """
    idx = get_idx_list(node.inputs[1:], node.op.idx_list)  # (skips the value: indices follow it)
    if len(idx) != 1 or not isinstance(idx[0], slice):  # the nest writes a tail a[k:]
        return None
    last = _last_only(node.outputs[0])
    if last is None:
        return None
    new = pt.set_subtensor(node.inputs[0][-1], last)
    if new.type.dtype != node.outputs[0].type.dtype or not node.outputs[0].type.is_super(new.type):
        return None
    return [new]


def _constant_int(var):
    """The value of a constant integer (index) variable, else None."""
    try:
        return int(get_underlying_scalar_constant_value(var))
    except Exception:
        return None


def _last_only(a):
    """``y`` when ``a`` is zero except its last entry along the first axis, which is ``y`` (else None).

    Recognised: ``inc(zeros, y)`` or ``set(zeros, y)`` at index -1, and
    ``inc(zeros[k:], b)`` (or ``set``) with ``b`` itself of that kind, the
    nest PyTensor's gradient of a loop's last state builds.
    """
    if a.owner is None or not isinstance(a.owner.op, IncSubtensor):
        return None
    z, y = a.owner.inputs[:2]
    idx = get_idx_list(a.owner.inputs[1:], a.owner.op.idx_list)
    if not _zeros(z) or len(idx) != 1:
        return None
    if isinstance(idx[0], slice):  # a tail a[k:] = b: the last entry is b's last entry
        if idx[0].stop is not None or idx[0].step is not None or y.type.broadcastable != a.type.broadcastable:
            return None
        inner = _last_only(y)
        if inner is None or a.owner.op.set_instead_of_inc:
            return inner
        return inner + np.zeros((), dtype=inner.dtype)  # 0 + b[-1], as the add gave
    if _constant_int(idx[0]) != -1 or y.type.broadcastable != a.type.broadcastable[1:]:
        return None
    if a.owner.op.set_instead_of_inc:
        return y
    return y + np.zeros((), dtype=y.dtype)  # 0 + y, as the fill-and-add gave (-0.0 becomes +0.0)


def _first_step_only(buf):
    """``y`` when ``buf`` is zero except its first step, which is ``y`` (else None).

    Recognised: :func:`_last_only` read backwards (``[::-1]``), as the
    gradient of a loop whose cost reads its last state seeds the backward loop.
    """
    if buf.owner is None or not isinstance(buf.owner.op, Subtensor):
        return None
    idxs = get_idx_list(buf.owner.inputs, buf.owner.op.idx_list)
    idx = idxs[0] if len(idxs) == 1 else None
    if not isinstance(idx, slice) or idx.start is not None or idx.stop is not None or _constant_int(idx.step) != -1:
        return None
    return _last_only(buf.owner.inputs[0])


@node_rewriter([Scan])
def _seed_as_initial_state(fgraph, node):
    """A backward loop's seed as its initial state, instead of a zero buffer added into at every step.

    PyTensor differentiates a ``scan`` into a loop over a buffer (a
    "mit-mot" with taps 0 and 1) that starts as the outer gradient of every
    state and into which each step adds its contribution:
    ``buf[t+1] = buf[t+1] + f(buf[t])``. When the cost reads only the last
    state, that buffer is zero but for its first step, so the fill and the
    per-step additions of zeros are work without effect. The loop becomes a
    plain recurrence ``s_t = f(s_{t-1})`` started at that first step (a
    "sit-sot"), whose trace has the same layout as the buffer.
    """
    op = node.op
    if op.info.as_while or not op.info.mit_mot_in_slices:
        return None
    args = ScanArgs.from_node(node, clone=True)
    for k, (ins, outs) in enumerate(zip(args.mit_mot_in_slices, args.mit_mot_out_slices, strict=True)):
        if tuple(ins) != (0, 1) or tuple(outs) != (1,):
            continue
        prev, seed = args.inner_in_mit_mot[k]
        (out,) = args.inner_out_mit_mot[k]
        if out.owner is None or not isinstance(out.owner.op, Elemwise) or not isinstance(out.owner.op.scalar_op, ps.Add):
            continue
        if list(out.owner.inputs).count(seed) != 1:
            continue
        readers = [nd for nd in io_toposort(args.inner_inputs, args.inner_outputs) if seed in nd.inputs]
        if readers != [out.owner] or seed in args.inner_outputs:
            continue
        first = _first_step_only(args.outer_in_mit_mot[k])
        if first is None:
            continue
        rest = [i for i in out.owner.inputs if i is not seed]
        new_out = rest[0] if len(rest) == 1 else out.owner.op(*rest)
        if new_out.type.broadcastable != out.type.broadcastable or new_out.dtype != out.dtype:
            continue
        new_out = out.type.filter_variable(new_out, allow_convert=True)
        break
    else:
        return None
    old_outer_out = args.outer_out_mit_mot[k]
    for name in ("inner_in_mit_mot", "outer_in_mit_mot", "inner_out_mit_mot", "outer_out_mit_mot",
                 "mit_mot_in_slices", "mit_mot_out_slices"):
        items = list(getattr(args, name))
        del items[k]
        setattr(args, name, items if name.startswith(("inner", "outer")) else tuple(items))
    args.inner_in_sit_sot.append(prev)
    args.inner_out_sit_sot.append(new_out)
    args.outer_in_sit_sot.append(expand_empty(pt.shape_padleft(first), args.n_steps))
    args.outer_out_sit_sot.append(None)
    new_outs = _scan_rebuild(node, args)
    new_args = ScanArgs.from_node(new_outs[0].owner)
    old_args = ScanArgs.from_node(node)
    pairs = {}
    for name in ("outer_out_mit_mot", "outer_out_mit_sot", "outer_out_nit_sot", "outer_out_shared"):
        old = [o for o in getattr(old_args, name) if o is not old_outer_out]
        pairs.update(zip(old, getattr(new_args, name), strict=True))
    pairs.update(zip(old_args.outer_out_sit_sot, new_args.outer_out_sit_sot[:-1], strict=True))
    pairs[old_outer_out] = new_args.outer_out_sit_sot[-1]
    return [pairs[o] for o in node.outputs]


last_step_seed = in2out(_last_step_seed, ignore_newtrees=True)
seed_as_initial_state = in2out(_seed_as_initial_state, ignore_newtrees=True)
