"""Sums and products of three or more operands as chains of two-operand ones, for Python thunks.

PyTensor's Python implementation of an elementwise op (``Elemwise.perform``,
what FAST_COMPILE and other Python-thunk modes run) calls the numpy ufunc of
its scalar op only when the node has as many inputs as that ufunc takes: two
for ``add`` and ``mul``. An ``add`` or ``mul`` of three or more operands,
which gradients and canonicalization make often (the derivative of a sigmoid
is ``g * s * (1 - s)``), falls back to ``numpy.frompyfunc`` over the scalar
op's Python ``impl``: one Python call per element. In PyTensor 3.0.7 that
made an HF update of a 20-unit RNN on 300 sequences take 12-14 s in
FAST_COMPILE against 0.1 s in the C VM, 1.5 million scalar calls per update.

The rewrite here (:data:`binary_associative_elemwise`) replaces such a node
by the left-to-right chain of two-operand nodes of the same scalar op,
``((a * b) * c) * d``: the order in which PyTensor's C code combines the
operands, rounding to the output dtype after each operation as it does, so
the values equal the C VM's to the last bit. (The ``frompyfunc`` fallback
computes with Python floats and rounds once: in float32 it can differ from
the C code in the last bit; in float64 all three agree.) It acts
only on associative scalar ops whose ufunc takes two inputs, when every
operand already has the output's dtype (a chain of narrower dtypes could
overflow where the n-ary op upcasts first), and, through the gate of
:mod:`hf_symbolic.graph.rewrites`, only in hf_symbolic's own compiles for
modes that run Python thunks; C, Numba and JAX code evaluate n-ary nodes in
one loop and keep them.

Examples
--------
>>> import pytensor, pytensor.tensor as pt
>>> from pytensor.graph.fg import FunctionGraph
>>> a, b, c = pt.vectors("a", "b", "c")
>>> fg = FunctionGraph([a, b, c], [pt.mul(a, b, c)], clone=False)
>>> _ = binary_associative_elemwise.rewrite(fg)
>>> [len(node.inputs) for node in fg.toposort()]
[2, 2]
"""

from __future__ import annotations

from pytensor.graph.rewriting.basic import copy_stack_trace, in2out, node_rewriter
from pytensor.tensor.elemwise import Elemwise

__all__ = ["binary_associative_elemwise"]


@node_rewriter([Elemwise])
def _binary_associative_elemwise(fgraph, node):
    op = node.op
    spec = getattr(op, "nfunc_spec", None)
    if (len(node.inputs) <= 2 or op.inplace_pattern or not spec or spec[1] != 2
            or not getattr(op.scalar_op, "associative", False)):
        return None
    (out,) = node.outputs
    if any(x.type.dtype != out.type.dtype for x in node.inputs):
        return None
    binary = Elemwise(op.scalar_op)
    chain = node.inputs[0]
    for x in node.inputs[1:]:
        chain = binary(chain, x)
    if not out.type.is_super(chain.type):
        return None
    copy_stack_trace(out, chain)
    return [chain]


binary_associative_elemwise = in2out(_binary_associative_elemwise, ignore_newtrees=True)
