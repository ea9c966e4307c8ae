"""Partial evaluation of curvature products: what a product can reuse from the forward pass."""
