"""Evaluators: where gradients and curvature products of a batch are computed (this process, forked workers, Dask)."""
