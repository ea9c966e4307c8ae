"""Moving products out of the time loop once scans are split.

:func:`_push_out_seq_dots` turns ``dot(seq_t, W)`` inside a loop into one
product over all steps outside it (several such terms added together become
one product of side-by-side sequences). :func:`_push_out_accumulators`
turns an accumulator ``acc_t = acc_{t-1} + dot(P_t, Q_t)`` of which only the
final value is used into one product over all steps, and
:func:`_group_shared_factor` joins the accumulated products that share a
factor into one.
"""

from __future__ import annotations

import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.basic import Constant
from pytensor.graph.fg import FunctionGraph, Output
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import ancestors, graph_inputs
from pytensor.scan.op import Scan
from pytensor.scan.utils import ScanArgs
from pytensor.tensor.basic import get_scalar_constant_value
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.exceptions import NotScalarConstantError
from pytensor.tensor.math import Dot, Sum
from pytensor.tensor.shape import SpecifyShape
from pytensor.tensor.subtensor import Subtensor, get_idx_list

from .scans import _assign_inner_outputs, _drop_unused_inputs, _inner_clients, _inner_toposort, _scan_rebuild


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
