"""Partial evaluation of curvature-product graphs (a cached forward pass).

During one conjugate-gradient run the parameters do not change, so every
subexpression of a Gauss-Newton product graph ``Gv(v)`` that does not depend on
the direction ``v`` (hidden states of every time step, activation derivatives,
the loss curvature at the split) can be computed once per update and reused by
every product.  :func:`partial_eval` splits a graph into

* ``residuals``: graphs of the original roots (data inputs, shared parameters)
  holding the ``v``-independent values, evaluated once per update, and
* ``outputs``: the original outputs rewritten as graphs of ``varying`` and one
  fresh placeholder per residual (plus shared variables and constants).

The split is generic (no model-specific patterns).  ``Scan`` nodes whose inner
graph carries ``v``-independent recurrent states together with ``v``-dependent
ones (what a pushforward / R-op of a scan produces) are split in two: a primal
scan returning the full traces of the independent states, and a tangent scan
reading those traces as sequences.  After the split, products that no longer
sit on a recurrence are moved out of the time loop as single large ``dot``
calls (inputs times a direction-weight, weight-gradient accumulations).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.fg import FunctionGraph, Output
from pytensor.graph.replace import clone_replace
from pytensor.graph.rewriting.db import RewriteDatabaseQuery
from pytensor.graph.rewriting.basic import in2out
from pytensor.graph.traversal import ancestors, graph_inputs, io_toposort
from pytensor.scan.op import Scan
from pytensor.scan.utils import ScanArgs
from pytensor.tensor.basic import (
    Alloc,
    AllocEmpty,
    MakeVector,
    ScalarFromTensor,
    TensorFromScalar,
    get_scalar_constant_value,
    get_underlying_scalar_constant_value,
)
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.exceptions import NotScalarConstantError
from pytensor.tensor.math import Dot, Sum
from pytensor.tensor.rewriting.math import local_add_remove_zeros
from pytensor.tensor.shape import Reshape, Shape, Shape_i, SpecifyShape
from pytensor.tensor.subtensor import Subtensor, get_idx_list

from hf_symbolic.errors import ModelSpecError

__all__ = ["PartialEvaluation", "partial_eval"]

_log = logging.getLogger(__name__)

# Rewrites applied before and after scan splitting: everything of the
# ``fast_run`` pipeline up to (and including) the second scan pass, but no
# BLAS specialisation, no elementwise fusion (it would hide the frontier
# inside Composite ops), no in-place ops and no scan trace shortening (the
# primal traces must stay whole).
_REWRITE_STAGES = (
    "merge1",
    "scan_eqopt1",
    "ShapeOpt",
    "useless",
    "merge1.1",
    "canonicalize",
    "merge1.2",
    "stabilize",
    "scan_eqopt2",
    "UnShapeOpt",
    "merge2",
)

# Scalar ops cheap enough to recompute on every product instead of storing
# their result (a multiply-add per element at most; no transcendental).
# ``sqr`` is not among them: the derivative ``1 - tanh(a)**2`` of a recurrent
# layer is read by both the tangent loop and the backward loop of every
# product. Storing it measured 12% faster RNN products (T=100, 1000
# sequences, 100 units, float32) for 120 MB more residuals.
_CHEAP_SCALAR_OPS = (
    ps.Add,
    ps.Sub,
    ps.Mul,
    ps.Neg,
    ps.Identity,
    ps.Cast,
    ps.Second,
    ps.Switch,
    ps.LT,
    ps.GT,
    ps.LE,
    ps.GE,
    ps.EQ,
    ps.NEQ,
    ps.Maximum,
    ps.Minimum,
    ps.Abs,
    ps.Sign,
)

# Ops that only re-view or re-describe their input (no arithmetic).
_VIEW_OPS = (DimShuffle, Reshape, SpecifyShape, Subtensor)

# Ops that build small or constant-filled values.
_CHEAP_MISC_OPS = (
    Alloc,
    AllocEmpty,
    MakeVector,
    ScalarFromTensor,
    TensorFromScalar,
    Shape,
    Shape_i,
)


@dataclass(frozen=True)
class PartialEvaluation:
    """Result of :func:`partial_eval`.

    Attributes
    ----------
    residuals : tuple of Variable
        ``v``-independent values, as graphs of the original roots only (data
        inputs, shared variables, constants).  Compile them once per update:
        ``pytensor.function(data_inputs, list(residuals))``.
    placeholders : tuple of Variable
        Fresh root variables, one per residual, of the same type.
    outputs : tuple of Variable
        The outputs rewritten as graphs of ``varying`` and ``placeholders``
        (plus shared variables and constants).  Compile them once:
        ``pytensor.function([*varying, *placeholders], list(outputs))``.
    """

    residuals: tuple
    placeholders: tuple
    outputs: tuple


# ---------------------------------------------------------------------------
# graph utilities


def _rewrite(fgraph: FunctionGraph) -> None:
    names = set(optdb.__position__)
    # ``scan_merge`` would fuse independent loops into one before they are
    # split; the final compilation merges them again.  ``scan_push_out_add``
    # is replaced by this module's accumulator push-out (no transposed copy).
    exclude = sorted(names.difference(_REWRITE_STAGES)) + ["scan_merge", "scan_push_out_add"]
    query = RewriteDatabaseQuery(include=["fast_run"], exclude=exclude)
    optdb.query(query).rewrite(fgraph)


def _dependent(fgraph: FunctionGraph, varying: Sequence[Variable]) -> set:
    dep = set(varying)
    for node in fgraph.toposort():
        if any(i in dep for i in node.inputs):
            dep.update(node.outputs)
    return dep


def _is_free_root(var: Variable) -> bool:
    """Constants and shared variables are kept in the product graph as they are."""
    return isinstance(var, Constant | SharedVariable)


def _is_cheap_node(node) -> bool:
    op = node.op
    if isinstance(op, Elemwise):
        return isinstance(op.scalar_op, _CHEAP_SCALAR_OPS)
    return isinstance(op, _VIEW_OPS + _CHEAP_MISC_OPS)


def _scan_rebuild(node, args: ScanArgs) -> list:
    op = node.op
    new_op = Scan(
        args.inner_inputs,
        args.inner_outputs,
        args.info,
        mode=op.mode,
        truncate_gradient=op.truncate_gradient,
        name=op.name,
        profile=op.profile,
        allow_gc=op.allow_gc,
    )
    return new_op(*args.outer_inputs, return_list=True)


def _rewrite_inner(args: ScanArgs) -> None:
    """Canonicalise a (cloned) scan inner graph in place, merging duplicated nodes."""
    inner = FunctionGraph(args.inner_inputs, args.inner_outputs + args.cond, clone=False)
    _rewrite(inner)
    # Zero fills inlined by ``_inline_constant_seqs`` that survive
    # canonicalisation as addends (``add`` drops them only at "specialize").
    in2out(local_add_remove_zeros).rewrite(inner)
    _assign_inner_outputs(args, list(inner.outputs))


def _constant_fill_value(var):
    """(value, full shape) if ``var`` is a constant-filled array built by Alloc/Second, else None."""
    owner = var.owner
    if owner is None:
        return None
    if isinstance(owner.op, Alloc):
        value, shape = owner.inputs[0], list(owner.inputs[1:])
    elif isinstance(owner.op, Elemwise) and isinstance(owner.op.scalar_op, ps.Second):
        value = owner.inputs[1]
        ref = owner.inputs[0]
        shape = [ref.shape[i] for i in range(ref.ndim)]
    else:
        return None
    if isinstance(value, Constant) and getattr(value.data, "size", 0) == 1:
        const = value.data.reshape(()).item()
    else:
        try:
            const = get_scalar_constant_value(value)
        except NotScalarConstantError:
            return None
    if len(shape) != var.ndim:
        return None
    return const, shape


def _inline_constant_seqs(args: ScanArgs) -> bool:
    """Replace sequences and non-sequences that are constant-filled arrays.

    Examples are the zero tangent of a data input (a sequence) or of an
    initial state used as a loop invariant.  The inner variable becomes
    ``alloc(c, *shape)`` (a sequence's step shape, a non-sequence's full
    shape) so that canonicalisation can simplify products and sums with it;
    the lengths enter as non-sequences.
    """
    replace = {}
    groups = (
        (args.inner_in_seqs, args.outer_in_seqs, 1),
        (list(args.inner_in_non_seqs), list(args.outer_in_non_seqs), 0),
    )
    for inners, outers, skip in groups:
        for inner, outer in zip(inners, outers, strict=True):
            found = _constant_fill_value(outer)
            if found is None:
                continue
            const, shape = found
            dims = []
            for d in shape[skip:]:
                dim_in = pt.scalar(dtype="int64", name="step_dim")
                args.inner_in_non_seqs.append(dim_in)
                args.outer_in_non_seqs.append(pt.as_tensor_variable(d).astype("int64"))
                dims.append(dim_in)
            filled = pt.alloc(pt.constant(const, dtype=inner.dtype), *dims)
            filled = pt.specify_shape(filled, inner.type.shape) if inner.ndim else filled
            replace[inner] = filled
    if not replace:
        return False
    new_outs = clone_replace(args.inner_outputs + args.cond, replace=replace)
    _assign_inner_outputs(args, new_outs)
    _drop_unused_inputs(args)
    return True


def _canonicalize_scans(fgraph: FunctionGraph) -> None:
    """Rebuild every scan with a canonical inner graph (so equal loops compare equal)."""
    for node in list(fgraph.toposort()):
        if not isinstance(node.op, Scan) or node not in fgraph.apply_nodes:
            continue
        args = ScanArgs.from_node(node, clone=True)
        _inline_constant_seqs(args)
        _rewrite_inner(args)
        new_outer = _scan_rebuild(node, args)
        pairs = [
            (a, b)
            for a, b in zip(node.outputs, new_outer, strict=True)
            if a in fgraph.clients
        ]
        fgraph.replace_all(pairs, reason="hf_canonicalize_scan")


def _merge_equivalent_scans(fgraph: FunctionGraph) -> bool:
    """Replace scans that repeat another scan's computation (same inner graph and inputs)."""
    seen = {}
    pairs = []
    for node in fgraph.toposort():
        if not isinstance(node.op, Scan):
            continue
        op = node.op
        key = (op.info, op.truncate_gradient, op._frozen_fgraph, tuple(node.inputs))
        if key in seen:
            pairs.extend(zip(node.outputs, seen[key].outputs, strict=True))
        else:
            seen[key] = node
    pairs = [(a, b) for a, b in pairs if a in fgraph.clients]
    if pairs:
        fgraph.replace_all(pairs, reason="hf_merge_equivalent_scans")
    return bool(pairs)


def _inner_toposort(args: ScanArgs):
    return io_toposort(args.inner_inputs, args.inner_outputs + args.cond)


# ---------------------------------------------------------------------------
# scan splitting


def _inner_dependence(args: ScanArgs, outer_dep: set) -> set:
    """Inner variables of a scan that depend on the varying inputs (fixed point over states)."""
    seeds = set()
    for inner, outer in zip(args.inner_in_seqs, args.outer_in_seqs, strict=True):
        if outer in outer_dep:
            seeds.add(inner)
    for inner, outer in zip(
        args.inner_in_non_seqs, args.outer_in_non_seqs, strict=True
    ):
        if outer in outer_dep:
            seeds.add(inner)
    # mit-mot and untraced states are never split off (no usable trace).
    for taps in args.inner_in_mit_mot:
        seeds.update(taps)
    seeds.update(args.inner_in_shared)
    states = [
        (list(taps), out, outer)
        for taps, out, outer in zip(
            args.inner_in_mit_sot,
            args.inner_out_mit_sot,
            args.outer_in_mit_sot,
            strict=True,
        )
    ] + [
        ([inp], out, outer)
        for inp, out, outer in zip(
            args.inner_in_sit_sot,
            args.inner_out_sit_sot,
            args.outer_in_sit_sot,
            strict=True,
        )
    ]
    for taps, _, outer in states:
        if outer in outer_dep:
            seeds.update(taps)
    topo = _inner_toposort(args)
    while True:
        dep = set(seeds)
        for nd in topo:
            if any(i in dep for i in nd.inputs):
                dep.update(nd.outputs)
        changed = False
        for taps, out, _ in states:
            if out in dep and not seeds.issuperset(taps):
                seeds.update(taps)
                changed = True
        if not changed:
            return dep


def _cheap_from(var, available: set, memo: dict) -> bool:
    """True if ``var`` is a cheap-op function of ``available`` variables and constants."""
    if var in memo:
        return memo[var]
    if var in available or isinstance(var, Constant):
        memo[var] = True
    elif var.owner is None or not _is_cheap_node(var.owner):
        memo[var] = False
    else:
        memo[var] = all(_cheap_from(i, available, memo) for i in var.owner.inputs)
    return memo[var]


def _split_scan(fgraph: FunctionGraph, node, outer_dep: set) -> bool:
    """Split a mixed scan into a primal scan and a tangent scan.  Returns True if done."""
    if node.op.info.as_while:
        return False
    args = ScanArgs.from_node(node, clone=True)
    _rewrite_inner(args)
    dep = _inner_dependence(args, outer_dep)

    n_mitsot = len(args.inner_out_mit_sot)
    n_sitsot = len(args.inner_out_sit_sot)
    primal_mitsot = [i for i in range(n_mitsot) if args.inner_out_mit_sot[i] not in dep]
    primal_sitsot = [i for i in range(n_sitsot) if args.inner_out_sit_sot[i] not in dep]
    primal_nitsot = [
        i for i, o in enumerate(args.inner_out_nit_sot) if o not in dep
    ]
    n_primal = len(primal_mitsot) + len(primal_sitsot) + len(primal_nitsot)
    tangent_outs = [o for o in args.inner_outputs if o in dep]
    if n_primal == 0:
        return False
    # Outputs of the whole scan that are independent of the varying inputs
    # even though some input is not: the split removes the false dependence.

    n_steps = args.n_steps
    primal_inner_outs = (
        [args.inner_out_mit_sot[i] for i in primal_mitsot]
        + [args.inner_out_sit_sot[i] for i in primal_sitsot]
        + [args.inner_out_nit_sot[i] for i in primal_nitsot]
    )

    # Variables of the primal part that the tangent part reads directly.
    tangent_topo = [
        nd
        for nd in io_toposort(args.inner_inputs, tangent_outs)
        if any(o in dep for o in nd.outputs)
    ]
    needed = []
    seen = set()
    for nd in tangent_topo:
        for i in nd.inputs:
            if i not in dep and not isinstance(i, Constant) and i not in seen:
                seen.add(i)
                needed.append(i)
    for o in tangent_outs:
        if o not in dep and o not in seen:  # pragma: no cover - tangent outs are dep
            seen.add(o)
            needed.append(o)

    # Values available to the tangent scan at step t without recomputation.
    passthrough = set(args.inner_in_seqs) | set(args.inner_in_non_seqs)
    trace_of = {}  # inner variable -> (outer primal output index, offset)
    k = 0
    for i in primal_mitsot:
        slices = args.mit_sot_in_slices[i]
        init_len = -min(slices)
        for tap_var, tap in zip(args.inner_in_mit_sot[i], slices, strict=True):
            trace_of[tap_var] = (k, init_len + tap)
        trace_of[args.inner_out_mit_sot[i]] = (k, init_len)
        k += 1
    for i in primal_sitsot:
        trace_of[args.inner_in_sit_sot[i]] = (k, 0)
        trace_of[args.inner_out_sit_sot[i]] = (k, 1)
        k += 1
    for i in primal_nitsot:
        trace_of[args.inner_out_nit_sot[i]] = (k, 0)
        k += 1

    available = passthrough | set(trace_of)
    memo: dict = {}
    extra_nitsot = []  # expensive primal intermediates stored as new nit-sot traces
    for var in needed:
        if var in available:
            continue
        if not _cheap_from(var, available, memo):
            extra_nitsot.append(var)
    for var in extra_nitsot:
        trace_of[var] = (k, 0)
        k += 1

    # ---- primal scan
    p_args = ScanArgs.from_node(node, clone=False)
    primal_out_list = primal_inner_outs + extra_nitsot
    used = set(ancestors(primal_out_list))
    p_args.inner_in_seqs, p_args.outer_in_seqs = _keep_used(
        args.inner_in_seqs, args.outer_in_seqs, used
    )
    p_args.inner_in_non_seqs, p_args.outer_in_non_seqs = _keep_used(
        args.inner_in_non_seqs, args.outer_in_non_seqs, used
    )
    p_args.inner_in_mit_mot, p_args.outer_in_mit_mot = [], []
    p_args.inner_out_mit_mot, p_args.mit_mot_in_slices = (), ()
    p_args.mit_mot_out_slices = ()
    p_args.outer_out_mit_mot = []
    p_args.inner_in_mit_sot = [args.inner_in_mit_sot[i] for i in primal_mitsot]
    p_args.outer_in_mit_sot = [args.outer_in_mit_sot[i] for i in primal_mitsot]
    p_args.inner_out_mit_sot = [args.inner_out_mit_sot[i] for i in primal_mitsot]
    p_args.mit_sot_in_slices = tuple(args.mit_sot_in_slices[i] for i in primal_mitsot)
    p_args.outer_out_mit_sot = [None] * len(primal_mitsot)
    p_args.inner_in_sit_sot = [args.inner_in_sit_sot[i] for i in primal_sitsot]
    p_args.outer_in_sit_sot = [args.outer_in_sit_sot[i] for i in primal_sitsot]
    p_args.inner_out_sit_sot = [args.inner_out_sit_sot[i] for i in primal_sitsot]
    p_args.outer_out_sit_sot = [None] * len(primal_sitsot)
    p_args.inner_in_shared, p_args.outer_in_shared = [], []
    p_args.inner_out_shared, p_args.outer_out_shared = [], []
    p_args.inner_out_nit_sot = [args.inner_out_nit_sot[i] for i in primal_nitsot] + list(
        extra_nitsot
    )
    p_args.outer_in_nit_sot = [args.outer_in_nit_sot[i] for i in primal_nitsot] + [
        n_steps
    ] * len(extra_nitsot)
    p_args.outer_out_nit_sot = [None] * len(p_args.inner_out_nit_sot)
    p_args.cond = []
    # The primal inner graph shares nodes with ``args`` (a private clone);
    # the Scan constructor copies it into its own FunctionGraph.
    primal_outer = _scan_rebuild(node, p_args)

    # ---- tangent scan
    t_args = ScanArgs.from_node(node, clone=False)
    replace = {}
    new_seq_inner, new_seq_outer = [], []
    for var, (idx, offset) in trace_of.items():
        new_in = var.type()
        new_in.name = (var.name or "primal") + "[t]"
        replace[var] = new_in
        buf = primal_outer[idx]
        new_seq_inner.append(new_in)
        new_seq_outer.append(buf[offset : offset + n_steps])
    if tangent_outs:
        new_tangent_outs = clone_replace(tangent_outs, replace=replace)
    else:
        new_tangent_outs = []
    t_map = dict(zip(tangent_outs, new_tangent_outs, strict=True))
    used_t = set(ancestors(new_tangent_outs))

    seqs_in, seqs_out = _keep_used(
        new_seq_inner + args.inner_in_seqs,
        new_seq_outer + args.outer_in_seqs,
        used_t,
    )
    t_args.inner_in_seqs, t_args.outer_in_seqs = seqs_in, seqs_out
    t_args.inner_in_non_seqs, t_args.outer_in_non_seqs = _keep_used(
        args.inner_in_non_seqs, args.outer_in_non_seqs, used_t
    )
    t_args.inner_in_mit_mot = args.inner_in_mit_mot
    t_args.outer_in_mit_mot = args.outer_in_mit_mot
    t_args.inner_out_mit_mot = tuple(
        [t_map[o] for o in outs] for outs in args.inner_out_mit_mot
    )
    t_args.mit_mot_in_slices = args.mit_mot_in_slices
    t_args.mit_mot_out_slices = args.mit_mot_out_slices
    t_args.outer_out_mit_mot = [None] * len(args.outer_in_mit_mot)
    tm = [i for i in range(n_mitsot) if i not in primal_mitsot]
    t_args.inner_in_mit_sot = [args.inner_in_mit_sot[i] for i in tm]
    t_args.outer_in_mit_sot = [args.outer_in_mit_sot[i] for i in tm]
    t_args.inner_out_mit_sot = [t_map[args.inner_out_mit_sot[i]] for i in tm]
    t_args.mit_sot_in_slices = tuple(args.mit_sot_in_slices[i] for i in tm)
    t_args.outer_out_mit_sot = [None] * len(tm)
    ts = [i for i in range(n_sitsot) if i not in primal_sitsot]
    t_args.inner_in_sit_sot = [args.inner_in_sit_sot[i] for i in ts]
    t_args.outer_in_sit_sot = [args.outer_in_sit_sot[i] for i in ts]
    t_args.inner_out_sit_sot = [t_map[args.inner_out_sit_sot[i]] for i in ts]
    t_args.outer_out_sit_sot = [None] * len(ts)
    t_args.inner_in_shared = args.inner_in_shared
    t_args.outer_in_shared = args.outer_in_shared
    t_args.inner_out_shared = [t_map[o] for o in args.inner_out_shared]
    t_args.outer_out_shared = [None] * len(args.inner_out_shared)
    tn = [i for i in range(len(args.inner_out_nit_sot)) if i not in primal_nitsot]
    t_args.inner_out_nit_sot = [t_map[args.inner_out_nit_sot[i]] for i in tn]
    t_args.outer_in_nit_sot = [args.outer_in_nit_sot[i] for i in tn]
    t_args.outer_out_nit_sot = [None] * len(tn)
    t_args.cond = []

    missing = set(graph_inputs(new_tangent_outs)) - set(t_args.inner_inputs)
    missing = {m for m in missing if not isinstance(m, Constant)}
    if missing:  # pragma: no cover - defensive: would be a bug in the split
        raise RuntimeError(f"scan split left unbound inner inputs: {missing}")

    tangent_outer = _scan_rebuild(node, t_args) if new_tangent_outs else []

    # ---- redirect the clients of the old scan outputs
    old = ScanArgs.from_node(node, clone=False)
    replacements = []
    pk = 0
    for i in range(n_mitsot):
        if i in primal_mitsot:
            replacements.append((old.outer_out_mit_sot[i], primal_outer[pk]))
            pk += 1
    for i in range(n_sitsot):
        if i in primal_sitsot:
            replacements.append((old.outer_out_sit_sot[i], primal_outer[pk]))
            pk += 1
    for i in range(len(old.outer_out_nit_sot)):
        if i in primal_nitsot:
            replacements.append((old.outer_out_nit_sot[i], primal_outer[pk]))
            pk += 1
    new_t = ScanArgs(
        tangent_outer[0].owner.inputs if tangent_outer else [n_steps],
        tangent_outer,
        t_args.inner_inputs,
        t_args.inner_outputs,
        t_args.info,
        clone=False,
    ) if tangent_outer else None
    if new_t is not None:
        pairs = (
            list(zip(old.outer_out_mit_mot, new_t.outer_out_mit_mot, strict=True))
            + list(
                zip(
                    [old.outer_out_mit_sot[i] for i in tm],
                    new_t.outer_out_mit_sot,
                    strict=True,
                )
            )
            + list(
                zip(
                    [old.outer_out_sit_sot[i] for i in ts],
                    new_t.outer_out_sit_sot,
                    strict=True,
                )
            )
            + list(
                zip(
                    [old.outer_out_nit_sot[i] for i in tn],
                    new_t.outer_out_nit_sot,
                    strict=True,
                )
            )
            + list(zip(old.outer_out_shared, new_t.outer_out_shared, strict=True))
        )
        replacements.extend(pairs)
    replacements = [(a, b) for a, b in replacements if a in fgraph.clients]
    fgraph.replace_all(replacements, reason="hf_scan_split")
    _log.debug(
        "split scan %s: %d primal outputs (%d extra traces), %d tangent outputs",
        node.op.name,
        n_primal,
        len(extra_nitsot),
        len(tangent_outs),
    )
    return True


def _keep_used(inner: list, outer: list, used: set):
    keep = [(i, o) for i, o in zip(inner, outer, strict=True) if i in used]
    return [i for i, _ in keep], [o for _, o in keep]


def _drop_unused_inputs(args: ScanArgs) -> None:
    """Remove the sequences and non-sequences the inner graph no longer reads."""
    used = set(ancestors(args.inner_outputs + args.cond))
    args.inner_in_seqs, args.outer_in_seqs = _keep_used(args.inner_in_seqs, args.outer_in_seqs, used)
    args.inner_in_non_seqs, args.outer_in_non_seqs = _keep_used(
        args.inner_in_non_seqs, args.outer_in_non_seqs, used
    )


def _inner_clients(args: ScanArgs) -> dict:
    """Inner variable -> the inner nodes that read it."""
    clients = {}
    for nd in _inner_toposort(args):
        for i in nd.inputs:
            clients.setdefault(i, []).append(nd)
    return clients


# ---------------------------------------------------------------------------
# moving products out of the time loop


def _outer_for(var, args: ScanArgs):
    """Outer counterpart of an inner seq / non-seq / constant (None otherwise)."""
    if var in args.inner_in_seqs:
        return args.outer_in_seqs[args.inner_in_seqs.index(var)], True
    if var in args.inner_in_non_seqs:
        return args.outer_in_non_seqs[args.inner_in_non_seqs.index(var)], False
    if isinstance(var, Constant):
        return var, False
    return None, False


def _depends_on(var, varying) -> bool:
    return bool(set(varying) & set(graph_inputs([var])))


def _push_out_seq_dots(fgraph: FunctionGraph, varying=()) -> bool:
    """Move ``dot(seq_t, W)`` / ``dot(W, seq_t)`` out of scans as one product over all steps.

    Several ``dot(S_t, W)`` added together in the loop body, whose sequences
    ``S`` do not depend on ``varying``, become one product
    ``concatenate([S1, S2, ...], -1) @ concatenate([W1, W2, ...], 0)``: one
    sequence read per step instead of one per term, and the side-by-side
    sequences are a residual (e.g. the previous states and the inputs of an
    RNN's tangent pass).
    """
    changed = False
    for node in list(fgraph.toposort()):
        if not isinstance(node.op, Scan) or node not in fgraph.apply_nodes:
            continue
        if node.op.info.as_while:
            continue
        args = ScanArgs.from_node(node, clone=True)
        n_steps = args.n_steps
        inner_clients = _inner_clients(args)
        targets = []
        seq_first = {}  # inner dot output -> (outer sequence, outer matrix)
        for nd in _inner_toposort(args):
            if not isinstance(nd.op, Dot):
                continue
            a, b = nd.inputs
            (oa, sa), (ob, sb) = _outer_for(a, args), _outer_for(b, args)
            if oa is None or ob is None or not (sa or sb) or (sa and sb):
                continue
            if sa:
                oa = oa[:n_steps]
                outer = pt.tensordot(oa, ob, axes=[[oa.ndim - 1], [0]])
                if a.ndim == 2 and b.ndim == 2:
                    seq_first[nd.outputs[0]] = (oa, ob)
            else:
                ob = ob[:n_steps]
                # dot(a, b_t) = (b_t^T a^T)^T, computed for all steps at once
                if a.ndim == 2 and b.ndim == 2:
                    outer = pt.tensordot(
                        ob.dimshuffle(0, 2, 1), oa.T, axes=[[2], [0]]
                    ).dimshuffle(0, 2, 1)
                else:
                    res = pt.tensordot(oa, ob, axes=[[oa.ndim - 1], [1]])
                    # move the step axis (position a.ndim - 1) to the front
                    order = [a.ndim - 1] + [
                        i for i in range(res.ndim) if i != a.ndim - 1
                    ]
                    outer = res.dimshuffle(*order)
            outer = pt.specify_shape(outer, (None, *nd.outputs[0].type.shape))
            targets.append((nd.outputs[0], outer.astype(nd.outputs[0].dtype)))
        if not targets:
            continue
        replace = {}
        # sums of dot(S_t, W) terms: one product with the sequences side by side
        for add_node in _inner_toposort(args):
            if not (
                isinstance(add_node.op, Elemwise) and isinstance(add_node.op.scalar_op, ps.Add)
            ):
                continue
            terms = [
                t
                for t in dict.fromkeys(add_node.inputs)
                if t in seq_first
                and t not in replace
                and t.type == add_node.outputs[0].type
                and [c is add_node for c in inner_clients.get(t, [])] == [True]
                and list(add_node.inputs).count(t) == 1
                and not _depends_on(seq_first[t][0], varying)
            ]
            if len(terms) < 2 or len({seq_first[t][0].dtype for t in terms}) != 1:
                continue
            seqs = pt.concatenate([seq_first[t][0] for t in terms], axis=2)
            mats = pt.concatenate([seq_first[t][1] for t in terms], axis=0)
            outer = pt.tensordot(seqs, mats, axes=[[2], [0]])
            new_in = terms[0].type()
            new_in.name = "seqdot[t]"
            rest = [i for i in add_node.inputs if i not in terms]
            out = add_node.outputs[0]
            summed = pt.add(new_in, *rest) if rest else new_in
            replace[out] = pt.specify_shape(summed.astype(out.dtype), out.type.shape)
            for t in terms:
                replace[t] = None
            args.inner_in_seqs.insert(0, new_in)
            args.outer_in_seqs.insert(
                0, pt.specify_shape(outer, (None, *out.type.shape)).astype(out.dtype)
            )
        for inner_var, outer in targets:
            if inner_var in replace:
                continue
            new_in = inner_var.type()
            new_in.name = "seqdot[t]"
            replace[inner_var] = new_in
            args.inner_in_seqs.insert(0, new_in)
            args.outer_in_seqs.insert(0, outer)
        replace = {k: v for k, v in replace.items() if v is not None}
        old_outs = args.inner_outputs
        new_outs = clone_replace(old_outs, replace=replace)
        _assign_inner_outputs(args, new_outs)
        _drop_unused_inputs(args)
        new_outer = _scan_rebuild(node, args)
        fgraph.replace_all(
            list(zip(node.outputs, new_outer, strict=True)), reason="hf_push_out_dot"
        )
        changed = True
    return changed


def _assign_inner_outputs(args: ScanArgs, outs: list) -> None:
    q = 0
    mm = []
    for sl in args.mit_mot_out_slices:
        mm.append(list(outs[q : q + len(sl)]))
        q += len(sl)
    args.inner_out_mit_mot = tuple(mm)
    for name in ("inner_out_mit_sot", "inner_out_sit_sot", "inner_out_nit_sot", "inner_out_shared"):
        n = len(getattr(args, name))
        setattr(args, name, list(outs[q : q + n]))
        q += n
    if args.cond:
        args.cond = [outs[q]]


def _last_step_clients(fgraph: FunctionGraph, outer_out, n_steps):
    """Clients of a sit-sot buffer if every one reads only its final entry, else None."""
    clients = fgraph.clients.get(outer_out, [])
    if not clients:
        return None
    result = []
    for client, _ in clients:
        if isinstance(client, Output) or not isinstance(getattr(client, "op", None), Subtensor):
            return None
        idx = get_idx_list(client.inputs, client.op.idx_list)
        if len(idx) != 1 or isinstance(idx[0], slice):
            return None
        try:
            value = get_scalar_constant_value(idx[0])
        except NotScalarConstantError:
            return None
        if value != -1:
            return None
        result.append(client.outputs[0])
    return result


def _untranspose_steps(var):
    """X if ``var`` is ``X.transpose(0, 2, 1)`` (through SpecifyShape), else None."""
    while var.owner is not None and isinstance(var.owner.op, SpecifyShape):
        var = var.owner.inputs[0]
    if var.owner is not None and isinstance(var.owner.op, Subtensor):
        idx = get_idx_list(var.owner.inputs, var.owner.op.idx_list)
        if len(idx) == 1 and isinstance(idx[0], slice):
            base = _untranspose_steps(var.owner.inputs[0])
            return None if base is None else base[idx[0]]
        return None
    if (
        var.owner is not None
        and isinstance(var.owner.op, DimShuffle)
        and tuple(var.owner.op.new_order) == (0, 2, 1)
    ):
        return var.owner.inputs[0]
    return None


def _left_factor(part, get):
    """X (steps, rows, M) with the part's value = sum over steps of X_t^T Q_t, or None."""
    if part[0] == "dotT":
        return get(part[1])
    if part[0] == "dot":
        return _untranspose_steps(get(part[1]))
    return None


def _group_shared_factor(plans, get, varying) -> dict:
    """Values of accumulator parts computed together: {(plan k, part j): value}.

    Parts ``sum_t X_t^T Q_t`` (``X`` independent of ``varying``) and
    ``sum_t sum_rows Q_t`` that share the trace ``Q`` become one product
    ``concatenate([X1, X2, ..., ones], axis=1)^T Q`` whose row blocks are
    the parts' values.
    """
    groups = {}
    for k, parts, _ in plans:
        for j, part in enumerate(parts):
            if part[0] in ("dotT", "dot"):
                X = _left_factor(part, get)
                if X is None or X.ndim != 3 or _depends_on(X, varying):
                    continue
                groups.setdefault(part[2], []).append((k, j, X))
            elif part[0] == "sum" and part[2] == (0,):
                groups.setdefault(part[1], []).append((k, j, None))
    values = {}
    for key, members in groups.items():
        lefts = [X for _, _, X in members if X is not None]
        if not lefts or len(members) < 2:
            continue
        Q = get(key)
        if Q.ndim != 3 or any(X.dtype != Q.dtype for X in lefts):
            continue
        rows = Q.shape[0] * Q.shape[1]
        blocks = [X.reshape((rows, X.shape[2])) for X in lefts]
        if any(X is None for _, _, X in members):
            blocks.append(pt.ones((rows, 1), dtype=Q.dtype))
        together = pt.concatenate(blocks, axis=1)
        product = pt.dot(together.T, Q.reshape((rows, Q.shape[2])))
        start = 0
        for k, j, X in members:
            if X is None:
                values[(k, j)] = product[-1]
            else:
                stop = start + X.shape[2]
                values[(k, j)] = product[start:stop]
                start = stop
    return values


def _push_out_accumulators(fgraph: FunctionGraph, varying=()) -> bool:
    """Turn ``acc_t = acc_{t-1} + dot(P_t, Q_t)`` (only ``acc_T`` used) into one product outside.

    Accumulated products that share the factor ``Q`` and whose other
    factors do not depend on ``varying`` become one product
    ``[P1 P2 ... 1]^T Q`` (sums of ``Q`` over its rows are the column of
    ones): ``Q``, typically a backward pass's error trace, is read once, and
    the side-by-side factors are a residual (stored once per update, in the
    order the product reads them).
    """
    changed = False
    for node in list(fgraph.toposort()):
        if not isinstance(node.op, Scan) or node not in fgraph.apply_nodes:
            continue
        if node.op.info.as_while:
            continue
        args = ScanArgs.from_node(node, clone=True)
        n_steps = args.n_steps
        inner_clients = _inner_clients(args)
        state_inputs = set(args.inner_in_sit_sot) | set(args.inner_in_shared)
        for taps in args.inner_in_mit_sot + list(args.inner_in_mit_mot):
            state_inputs.update(taps)
        chosen = []
        for k, (inp, out) in enumerate(
            zip(args.inner_in_sit_sot, args.inner_out_sit_sot, strict=True)
        ):
            if out.owner is None or not isinstance(out.owner.op, Elemwise):
                continue
            if not isinstance(out.owner.op.scalar_op, ps.Add):
                continue
            if list(out.owner.inputs).count(inp) != 1:
                continue
            if len(inner_clients.get(inp, [])) != 1:
                continue
            if out in args.inner_out_nit_sot or inner_clients.get(out):
                continue
            terms = [t for t in out.owner.inputs if t is not inp]
            if any(t.type.broadcastable != out.type.broadcastable for t in terms):
                continue
            # The step value must not depend on the accumulator itself.
            if any(inp in set(ancestors([t])) for t in terms):
                continue
            finals = _last_step_clients(fgraph, args.outer_out_sit_sot[k], n_steps)
            if finals is None:
                continue
            chosen.append((k, terms, finals))
        if not chosen:
            continue
        emit = []  # inner variables to emit as new nit-sot traces
        emit_index = {}
        outer_traces = {}

        def trace(var):
            """Outer (n_steps, ...) trace of an inner variable."""
            outer, is_seq = _outer_for(var, args)
            if outer is not None and is_seq:
                if var not in outer_traces:
                    outer_traces[var] = ("outer", outer[:n_steps])
                return outer_traces[var]
            if var not in emit_index:
                emit_index[var] = len(emit)
                emit.append(var)
            return ("emit", emit_index[var])

        plans = []
        for k, terms, finals in chosen:
            parts = []
            for t in terms:
                if t.owner is not None and isinstance(t.owner.op, Dot) and t.ndim == 2:
                    p, q = t.owner.inputs
                    if p.ndim == 2 and q.ndim == 2:
                        if (
                            p.owner is not None
                            and isinstance(p.owner.op, DimShuffle)
                            and p.owner.op.new_order == (1, 0)
                        ):
                            parts.append(("dotT", trace(p.owner.inputs[0]), trace(q)))
                        else:
                            parts.append(("dot", trace(p), trace(q)))
                        continue
                if (
                    t.owner is not None
                    and isinstance(t.owner.op, Sum)
                    and t.owner.op.axis is not None
                ):
                    parts.append(("sum", trace(t.owner.inputs[0]), tuple(t.owner.op.axis)))
                    continue
                parts.append(("sum", trace(t), ()))
            plans.append((k, parts, finals))

        # rebuild the scan without the chosen accumulators, with the new traces
        drop = {k for k, _, _ in plans}
        keep = [k for k in range(len(args.inner_in_sit_sot)) if k not in drop]
        old_sitsot_outer_out = list(args.outer_out_sit_sot)
        old_sitsot_outer_in = list(args.outer_in_sit_sot)
        n_old_nitsot = len(args.inner_out_nit_sot)
        args.inner_in_sit_sot = [args.inner_in_sit_sot[k] for k in keep]
        args.inner_out_sit_sot = [args.inner_out_sit_sot[k] for k in keep]
        args.outer_in_sit_sot = [args.outer_in_sit_sot[k] for k in keep]
        args.outer_out_sit_sot = [args.outer_out_sit_sot[k] for k in keep]
        args.inner_out_nit_sot = list(args.inner_out_nit_sot) + emit
        args.outer_in_nit_sot = list(args.outer_in_nit_sot) + [n_steps] * len(emit)
        args.outer_out_nit_sot = list(args.outer_out_nit_sot) + [None] * len(emit)
        _drop_unused_inputs(args)
        new_outer = _scan_rebuild(node, args)
        new_args = ScanArgs.from_node(new_outer[0].owner, clone=False)
        emitted = new_args.outer_out_nit_sot[n_old_nitsot:]

        def get(tr):
            kind, val = tr
            return val if kind == "outer" else emitted[val]

        replacements = []
        old_args = ScanArgs.from_node(node, clone=False)
        # surviving outputs
        for a, b in zip(old_args.outer_out_mit_mot, new_args.outer_out_mit_mot, strict=True):
            replacements.append((a, b))
        for a, b in zip(old_args.outer_out_mit_sot, new_args.outer_out_mit_sot, strict=True):
            replacements.append((a, b))
        for a, b in zip(
            [old_sitsot_outer_out[k] for k in keep], new_args.outer_out_sit_sot, strict=True
        ):
            replacements.append((a, b))
        for a, b in zip(
            old_args.outer_out_nit_sot,
            new_args.outer_out_nit_sot[:n_old_nitsot],
            strict=True,
        ):
            replacements.append((a, b))
        for a, b in zip(old_args.outer_out_shared, new_args.outer_out_shared, strict=True):
            replacements.append((a, b))
        grouped = _group_shared_factor(plans, get, varying)
        for k, parts, finals in plans:
            init = old_sitsot_outer_in[k][0]
            total = init
            for j, part in enumerate(parts):
                if (k, j) in grouped:
                    val = grouped[(k, j)]
                elif part[0] == "dotT":
                    P, Q = get(part[1]), get(part[2])  # P: (T, K, M), Q: (T, K, N)
                    val = pt.dot(
                        P.reshape((-1, P.shape[2])).T, Q.reshape((-1, Q.shape[2]))
                    )
                elif part[0] == "dot":
                    P, Q = get(part[1]), get(part[2])  # (T, M, K), (T, K, N)
                    X = _untranspose_steps(P)
                    if X is not None:  # P = X.transpose(0, 2, 1): use X's memory as is
                        val = pt.dot(
                            X.reshape((-1, X.shape[2])).T, Q.reshape((-1, Q.shape[2]))
                        )
                    else:
                        val = pt.tensordot(P, Q, axes=[[0, 2], [0, 1]])
                else:
                    E = get(part[1])
                    axes = (0,) + tuple(a + 1 for a in part[2])
                    val = E.sum(axis=axes)
                total = total + val
            total = total.astype(finals[0].dtype)
            for f in finals:
                replacements.append((f, pt.specify_shape(total, f.type.shape)))
        replacements = [(a, b) for a, b in replacements if a in fgraph.clients]
        fgraph.replace_all(replacements, reason="hf_push_out_accumulator")
        changed = True
    return changed


# ---------------------------------------------------------------------------
# frontier / residual selection


def _fills_to_allocs(fgraph: FunctionGraph) -> bool:
    """Replace ``second(x, c)`` (``c`` broadcast to ``x``'s shape) by ``alloc(c, *x.shape)``.

    Only the shape of ``x`` matters, but the residual choice would otherwise
    store the whole filled array whenever ``x`` itself is expensive (a scan
    output, say): the zeros that start a back-propagated error were stored as
    residuals and copied on every product. With ``alloc``, the residuals are
    ``x``'s lengths (scalars) and the fill is rebuilt from them.
    """
    changed = False
    for node in list(fgraph.toposort()):
        if node not in fgraph.apply_nodes:
            continue
        op = node.op
        if not (isinstance(op, Elemwise) and isinstance(op.scalar_op, ps.Second)):
            continue
        x, c = node.inputs
        out = node.outputs[0]
        if not all(c.type.broadcastable) or x.ndim != out.ndim or x.owner is None:
            continue
        try:  # a constant stays one (not a stored scalar) in the product graph
            value = pt.constant(np.asarray(get_underlying_scalar_constant_value(c), dtype=out.dtype))
        except NotScalarConstantError:
            value = pt.cast(c if c.ndim == 0 else c.reshape(()), out.dtype)
        lengths = [pt.constant(1, dtype="int64") if x.type.shape[i] == 1 else Shape_i(i)(x) for i in range(x.ndim)]
        new = pt.alloc(value, *lengths)
        if not out.type.is_super(new.type):
            continue
        fgraph.replace(out, new, reason="hf_symbolic_fill_to_alloc")
        changed = True
    return changed




def _choose_residuals(fgraph: FunctionGraph, dep: set, varying, recompute_cheap: bool):
    topo = fgraph.toposort()
    order = {}
    for i, v in enumerate(fgraph.inputs):
        order[v] = -1 - i
    for j, nd in enumerate(topo):
        for o in nd.outputs:
            order[o] = j
    frontier = []
    seen = set()

    def add(var):
        if var in seen or var in dep or _is_free_root(var):
            return
        seen.add(var)
        frontier.append(var)

    for nd in topo:
        if any(o in dep for o in nd.outputs):
            for i in nd.inputs:
                add(i)
    for o in fgraph.outputs:
        add(o)

    stored = set(frontier)
    if not recompute_cheap:
        return [v for v in frontier]

    def walk(var, tentative, memo):
        """Can ``var`` be rebuilt cheaply from stored values? Adds needed bases to ``tentative``."""
        if var in memo:
            return memo[var]
        if var in stored or var in tentative or isinstance(var, Constant):
            ok = True
        elif isinstance(var, SharedVariable):
            ok = True
        elif var.owner is None:
            tentative.add(var)  # a data input: stored as itself
            ok = True
        elif var.type.ndim == 0:
            tentative.add(var)  # a scalar: negligible to store
            ok = True
        elif _is_cheap_node(var.owner):
            ok = True
            for i in var.owner.inputs:
                if walk(i, tentative, memo):
                    continue
                # a view of an expensive base of the same rank: store the base
                if (
                    isinstance(var.owner.op, _VIEW_OPS)
                    and i is var.owner.inputs[0]
                    and i.type.ndim == var.type.ndim
                ):
                    tentative.add(i)
                    memo[i] = True
                    continue
                ok = False
                break
        else:
            ok = False
        memo[var] = ok
        return ok

    for var in sorted(frontier, key=lambda v: order.get(v, 0), reverse=True):
        if var.owner is None or not _is_cheap_node(var.owner):
            continue
        stored.discard(var)
        tentative: set = set()
        if walk(var, tentative, {}):
            stored.update(tentative)
        else:
            stored.add(var)
    return sorted(stored, key=lambda v: order.get(v, 0))


# ---------------------------------------------------------------------------
# public entry point


def partial_eval(
    outputs,
    varying,
    *,
    rewrite: bool = True,
    recompute_cheap: bool = True,
    split_scans: bool = True,
    push_out: bool = True,
) -> PartialEvaluation:
    """Split a graph into values independent of ``varying`` and a graph of the rest.

    Parameters
    ----------
    outputs : Variable or sequence of Variable
        The graph to split, e.g. the Gauss-Newton product ``Gv``.
    varying : Variable or sequence of Variable
        Root variables (``owner is None``) that change between evaluations,
        e.g. the direction ``v``.  Everything not depending on them is a
        candidate residual.
    rewrite : bool, default True
        Canonicalise the graph first (merging duplicated subexpressions,
        simplifying the zeros that pushforward-through-pullback leaves
        behind) and move loop-invariant work out of ``Scan`` loops, before
        and after splitting scans.  With ``False`` the graph is split as
        given (scans are still split when ``split_scans``).
    recompute_cheap : bool, default True
        Do not store values that are cheap elementwise or view functions of
        other stored values (e.g. ``1 - h**2`` when ``h`` is stored, or
        ``h[1:]`` and ``h[:-1]`` when ``h`` is stored); recompute them in the
        product graph instead.  Transcendental functions are always stored.
    split_scans : bool, default True
        Split scans that carry independent and dependent recurrent states
        together into a primal scan (a residual) and a tangent scan.
    push_out : bool, default True
        After splitting, move ``dot`` products of sequences with loop
        invariants out of scans (one large product over all steps) and turn
        ``acc += dot(P_t, Q_t)`` accumulators whose final value alone is used
        into one product over all steps.  Needs ``rewrite``.

    Returns
    -------
    PartialEvaluation
        ``residuals`` (graphs of the original roots), ``placeholders`` (one
        fresh root per residual) and ``outputs`` (graphs of ``varying`` and
        the placeholders, plus shared variables and constants).

    Raises
    ------
    ModelSpecError
        If an element of ``varying`` is not a root variable, or is absent
        from ``outputs``' graph.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt
    >>> x = pt.matrix("x"); w = pt.vector("w"); v = pt.vector("v")
    >>> h = pt.tanh(x @ w)
    >>> jv = (1 - h**2) * (x @ v)           # pushforward of h along v
    >>> pe = partial_eval([jv], [v])
    >>> f_res = pytensor.function([x, w], list(pe.residuals))
    >>> f_jv = pytensor.function([v, *pe.placeholders], list(pe.outputs))
    >>> xv = np.ones((3, 2)); wv = np.array([0.1, 0.2]); vv = np.array([1.0, -1.0])
    >>> res = f_res(xv, wv)
    >>> np.allclose(f_jv(vv, *res)[0], (1 - np.tanh(xv @ wv) ** 2) * (xv @ vv))
    True
    """
    single = isinstance(outputs, Variable)
    outs = [outputs] if single else list(outputs)
    vary = [varying] if isinstance(varying, Variable) else list(varying)
    outs = [pt.as_tensor_variable(o) if not isinstance(o, Variable) else o for o in outs]
    for v in vary:
        if not isinstance(v, Variable) or v.owner is not None:
            raise ModelSpecError(
                f"varying must hold root variables (owner None); got {v!r} "
                f"computed by {getattr(v, 'owner', None)}"
            )
    roots = list(graph_inputs(outs))
    root_set = set(roots)
    for v in vary:
        if v not in root_set:
            _log.info("varying input %s does not appear in the outputs' graph", v)

    fgraph = FunctionGraph(outputs=outs, clone=True, copy_inputs=False)
    if rewrite:
        _rewrite(fgraph)
        _canonicalize_scans(fgraph)
        _rewrite(fgraph)
    if split_scans:
        for _ in range(50):
            dep = _dependent(fgraph, vary)
            did = False
            for node in fgraph.toposort():
                if isinstance(node.op, Scan) and any(i in dep for i in node.inputs):
                    if _split_scan(fgraph, node, dep):
                        did = True
                        break
            if not did:
                break
        if rewrite:
            _rewrite(fgraph)
            _canonicalize_scans(fgraph)
            _rewrite(fgraph)
        if _merge_equivalent_scans(fgraph) and rewrite:
            _rewrite(fgraph)
    if rewrite and push_out:
        for _ in range(10):
            a = _push_out_seq_dots(fgraph, vary)
            b = _push_out_accumulators(fgraph, vary)
            if not (a or b):
                break
            _rewrite(fgraph)
        # Pushing products out can leave constant fills as loop invariants.
        _canonicalize_scans(fgraph)
        _rewrite(fgraph)

    if recompute_cheap:
        _fills_to_allocs(fgraph)
    dep = _dependent(fgraph, vary)
    stored = _choose_residuals(fgraph, dep, vary, recompute_cheap)
    placeholders = []
    replace = {}
    for i, r in enumerate(stored):
        ph = r.type()
        ph.name = f"residual{i}" + (f"_{r.name}" if r.name else "")
        placeholders.append(ph)
        replace[r] = ph
    new_outs = clone_replace(list(fgraph.outputs), replace=replace)
    allowed = set(vary) | set(placeholders)
    for root in graph_inputs(new_outs):
        if root not in allowed and not _is_free_root(root):
            raise RuntimeError(  # pragma: no cover - would be a bug in the split
                f"partial_eval left the root {root!r} in the product graph"
            )
    _log.info(
        "partial_eval: %d residuals (%s)",
        len(stored),
        ", ".join(f"{r.type}" for r in stored),
    )
    return PartialEvaluation(
        residuals=tuple(stored),
        placeholders=tuple(placeholders),
        outputs=tuple(new_outs),
    )
