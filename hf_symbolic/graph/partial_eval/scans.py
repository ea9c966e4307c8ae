"""Scan helpers shared by the partial-evaluation passes: canonical inner graphs, rebuilds, merging.

A ``Scan`` is edited here by cloning its arguments (``ScanArgs``), changing
them, and building a new ``Scan`` from them (:func:`_scan_rebuild`). Before
scans are split, each is rebuilt with a canonicalised inner graph (constant
fills inlined, duplicated nodes merged) so that two loops computing the same
thing compare equal and :func:`_merge_equivalent_scans` can keep one.
"""

from __future__ import annotations

import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.basic import Constant
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.replace import clone_replace
from pytensor.graph.rewriting.db import RewriteDatabaseQuery
from pytensor.graph.rewriting.basic import in2out
from pytensor.graph.traversal import ancestors, io_toposort
from pytensor.scan.op import Scan
from pytensor.scan.utils import ScanArgs
from pytensor.tensor.basic import Alloc, get_scalar_constant_value
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.exceptions import NotScalarConstantError
from pytensor.tensor.rewriting.math import local_add_remove_zeros


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


def _rewrite(fgraph: FunctionGraph) -> None:
    names = set(optdb.__position__)
    # ``scan_merge`` would fuse independent loops into one before they are
    # split; the final compilation merges them again.  ``scan_push_out_add``
    # is replaced by this module's accumulator push-out (no transposed copy).
    exclude = sorted(names.difference(_REWRITE_STAGES)) + ["scan_merge", "scan_push_out_add"]
    query = RewriteDatabaseQuery(include=["fast_run"], exclude=exclude)
    optdb.query(query).rewrite(fgraph)


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
