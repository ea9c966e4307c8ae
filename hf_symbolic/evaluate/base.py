"""The evaluator contract: where the gradient, costs and curvature products of one update are computed.

The training loop loads the batches of an update under a key (``"gradient"``,
``"cg"``), sets the parameters, and asks for averages over those batches. An
evaluator may compute them in this process, split every batch into shards of
cases for forked workers, or send the shards to a Dask cluster; the numbers
are the same up to floating-point rounding.
"""

from __future__ import annotations

import abc

import numpy as np

__all__ = ["Evaluator", "split_cases"]


class Evaluator(abc.ABC):
    """What the HF step needs computed; every implementation follows this contract.

    Attributes
    ----------
    workers : int
        Processes taking part (1 for this process alone).
    """

    workers = 1

    @abc.abstractmethod
    def load(self, key: str, batches) -> None:
        """Remember the batches of this update under ``key``."""

    @abc.abstractmethod
    def set_theta(self, theta) -> None:
        """Set the parameters (flat vector) wherever products are computed."""

    @abc.abstractmethod
    def gradient(self, key: str):
        """``(g, costs)``: the mean gradient (float64) and mean costs over the batches under ``key``."""

    @abc.abstractmethod
    def cost(self, key: str) -> tuple:
        """The mean costs over the batches under ``key``."""

    @abc.abstractmethod
    def begin_cg(self, key: str, structural: float) -> None:
        """Prepare the curvature products on the batches under ``key`` (forward pass cached)."""

    @abc.abstractmethod
    def matvec(self, v) -> np.ndarray:
        """The undamped curvature product (with the structural term) prepared by :meth:`begin_cg`."""

    @abc.abstractmethod
    def plain_product(self, key: str, p) -> np.ndarray:
        """The undamped curvature product without the structural term, averaged over the batches under ``key``."""

    @abc.abstractmethod
    def statistic(self, key: str, name: str) -> np.ndarray:
        """The per-parameter statistic ``name`` (:data:`hf_symbolic.model.STATISTICS`) over the batches."""

    def per_case_squared_gradient(self, key: str) -> np.ndarray:
        """Mean squared per-case gradients (Martens' preconditioner statistic)."""
        return self.statistic(key, "squared_gradients")

    def close(self) -> None:
        """Release workers and memory; the evaluator is not used afterwards."""


def split_cases(batch, case_axes, n):
    """Split a batch into at most ``n`` contiguous shards of cases; returns ``(shards, weights)``."""
    sizes = {a.shape[ax] for a, ax in zip(batch, case_axes) if ax is not None}
    if len(sizes) != 1:
        return [batch], [1.0]
    total = sizes.pop()
    n = max(1, min(n, total))
    bounds = np.linspace(0, total, n + 1).astype(int)
    shards, weights = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        shard = []
        for a, ax in zip(batch, case_axes):
            if ax is None:
                shard.append(a)
            else:
                idx = [slice(None)] * a.ndim
                idx[ax] = slice(lo, hi)
                shard.append(np.ascontiguousarray(a[tuple(idx)]))
        shards.append(shard)
        weights.append((hi - lo) / total)
    return shards, weights
