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

The passes live in this package's modules: :mod:`.scans` (canonical scans,
rebuild helpers, merging equal loops), :mod:`.split` (the primal/tangent
split), :mod:`.pushout` (products out of loops) and :mod:`.residuals` (which
values are stored); :func:`partial_eval` runs them in order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import graph_inputs
from pytensor.scan.op import Scan

from hf_symbolic.errors import ModelSpecError

from .pushout import _push_out_accumulators, _push_out_seq_dots
from .residuals import _choose_residuals, _fills_to_allocs, _is_free_root
from .scans import _canonicalize_scans, _merge_equivalent_scans, _rewrite
from .split import _split_scan

__all__ = ["PartialEvaluation", "partial_eval"]

_log = logging.getLogger(__name__)


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


def _dependent(fgraph: FunctionGraph, varying: Sequence[Variable]) -> set:
    dep = set(varying)
    for node in fgraph.toposort():
        if any(i in dep for i in node.inputs):
            dep.update(node.outputs)
    return dep


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
