"""Matrix products over an axis of length one, as elementwise products.

``dot(a, b)`` with ``a`` of shape ``(m, 1)`` and ``b`` of shape ``(1, n)`` is
the outer product ``a * b``: one multiplication per output element and no
sum. A BLAS GEMM computes the same values but is slow at it (it is built for
long sums): on the 2-core development machine the ``(100000, 1) x (1, 100)``
float32 product of an RNN's one-dimensional input took 14.5 ms. Inside a
``scan`` step the elementwise form joins the step's other work: for a tanh
RNN, ``x_t * w_in`` becomes the buffer the recurrent GEMM adds
``h_{t-1} @ W`` into, instead of a separate small GEMM per step.

The rewrite here (:data:`outer_product_as_mul`) replaces ``dot`` of two
matrices whose contracted length is statically 1 (the first operand's last
length or the second's first length, from the static shapes) by
``specify_shape(a, (None, 1)) * specify_shape(b, (1, None))``. The values
are the same products; only a zero's sign may differ from a BLAS that adds
the product to a zero. It runs after the ``scan`` push-out rewrites, so a
product inside a loop body stays there and fuses, and in hf_symbolic's own
compiles only (the gate of :mod:`hf_symbolic.graph.rewrites`).
"""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.tensor.math import Dot

__all__ = ["outer_product_as_mul"]


@node_rewriter([Dot])
def _outer_product_as_mul(fgraph, node):
    a, b = node.inputs
    if a.ndim != 2 or b.ndim != 2:
        return None
    if a.type.shape[1] != 1 and b.type.shape[0] != 1:
        return None
    out = node.outputs[0]
    product = pt.specify_shape(a, (None, 1)) * pt.specify_shape(b, (1, None))
    return [pt.specify_shape(product.astype(out.dtype), out.type.shape)]


outer_product_as_mul = in2out(_outer_product_as_mul, ignore_newtrees=True)
