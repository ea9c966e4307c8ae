"""PyTensor transformations: backend set-up, partial evaluation of curvature products, rewrites.

Nothing here knows about training; imports only PyTensor, numpy, :mod:`hf_symbolic.errors` and :mod:`hf_symbolic._env`.
"""
