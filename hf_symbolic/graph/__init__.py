"""PyTensor transformations: backend set-up, partial evaluation of curvature products, rewrites.

Nothing here knows about training; imports only PyTensor, numpy and :mod:`hf_symbolic.errors`.
"""
