"""The primal/tangent split of a ``Scan`` that carries ``v``-independent and ``v``-dependent states.

What a pushforward (R-op) of a scan produces is one loop computing the
primal states and their tangents together. :func:`_split_scan` turns it into
a primal scan that returns the full traces of the independent states (and of
expensive intermediates the tangent reads) and a tangent scan that reads
those traces as sequences; the primal scan then becomes a residual.
"""

from __future__ import annotations

import logging

from pytensor.graph.basic import Constant
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import ancestors, graph_inputs, io_toposort
from pytensor.scan.utils import ScanArgs

from .residuals import _is_cheap_node
from .scans import _inner_toposort, _keep_used, _rewrite_inner, _scan_rebuild

_log = logging.getLogger(__name__)


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
