"""The evaluator of item datasets: many small items per update, one compiled call per bucket of equal shapes.

A 2012-style client gives ``SequenceDataset`` many small items (one sequence,
or one small minibatch, each) and the objective is the mean over items of the
per-item cost. :class:`SerialEvaluator` calls the compiled functions once per
item; this evaluator stacks the items of a bucket of equal shapes along a new
leading axis and evaluates the item-vectorized model
(:class:`~hf_symbolic.model.items.ItemBatcher`, scans included through
:mod:`hf_symbolic.graph.vectorize_scan`) in one call. The numbers are those of
the per-item path up to rounding, with one difference: the preconditioner's
``squared_gradients`` statistic is the mean of the squared per-item gradients
(each item is a case), where the per-item path splits each item along
:attr:`~hf_symbolic.model.Model.case_axes`.

A key holding fewer than :data:`MIN_ITEMS` items (a client that already
batches) is evaluated exactly as :class:`SerialEvaluator` does.
"""

from __future__ import annotations

import numpy as np

from hf_symbolic.evaluate.serial import SerialEvaluator
from hf_symbolic.model.items import ItemBatcher

__all__ = ["ItemEvaluator", "MIN_ITEMS", "has_scan"]

#: Keys with at least this many items go through the item-vectorized model.
MIN_ITEMS = 8


def has_scan(model) -> bool:
    """Whether the model's graph holds a ``scan`` (where vectorizing items was measured to pay)."""
    from pytensor.graph.traversal import ancestors
    from pytensor.scan.op import Scan

    cfg = model.config()
    outs = [cfg["s"], *cfg["costs"]]
    return any(v.owner is not None and isinstance(v.owner.op, Scan) for v in ancestors(outs))


class ItemEvaluator(SerialEvaluator):
    """:class:`SerialEvaluator` whose keys of many items run on the item-vectorized model."""

    def __init__(self, opt, min_items=MIN_ITEMS):
        super().__init__(opt)
        self.min_items = int(min_items)
        self._batcher = None

    @property
    def batcher(self) -> ItemBatcher:
        """The item-vectorized model, built on first use (a client that batches never builds it)."""
        if self._batcher is None:
            cfg = self.opt.config()
            self._batcher = ItemBatcher(cfg["p"], cfg["inputs"], cfg["s"], cfg["costs"], cfg["h"], cfg["ha"],
                                        curvature=cfg["curvature"], mode=cfg["mode"],
                                        cache_forward=cfg["cache_forward"], per_item=self.opt)
        return self._batcher

    def _items(self, key):
        items = self._batches[key]
        return items if len(items) >= self.min_items else None

    def gradient(self, key):
        items = self._items(key)
        if items is None:
            return super().gradient(key)
        g, costs = self.batcher.gradient(items)
        return np.asarray(g, dtype=np.float64), tuple(costs)

    def cost(self, key):
        items = self._items(key)
        return super().cost(key) if items is None else tuple(self.batcher.cost(items))

    def begin_cg(self, key, structural):
        items = self._items(key)
        if items is None:
            return super().begin_cg(key, structural)
        self._ops = [self.batcher.curvature_operator(items, 0.0, structural)]

    def plain_product(self, key, p):
        items = self._items(key)
        return super().plain_product(key, p) if items is None else self.batcher.plain_product(items, p)

    def statistic(self, key, name):
        items = self._items(key)
        if items is None or name != "squared_gradients":
            return super().statistic(key, name)
        return np.asarray(self.batcher.per_case_squared_gradient(items), dtype=np.float64)
