"""The user's model: argument checks, the flat parameter layout, curvature kinds and the compiled model.

Imports only :mod:`hf_symbolic.graph` and :mod:`hf_symbolic.errors`.
"""
