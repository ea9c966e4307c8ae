"""The evaluator that computes everything in this process (the default)."""

from __future__ import annotations

import numpy as np

from hf_symbolic.evaluate.base import Evaluator

__all__ = ["SerialEvaluator"]


class SerialEvaluator(Evaluator):
    """Evaluates on whole batches in this process, averaging over the batches of a key."""

    workers = 1

    def __init__(self, opt):
        self.opt = opt
        self._batches = {}
        self._ops = None

    def load(self, key, batches):
        """Remember the batches of this update under ``key`` ("gradient", "cg", "validation")."""
        self._batches[key] = [list(b) for b in batches]

    def set_theta(self, theta):
        self.opt.set_flat(theta)

    def gradient(self, key):
        """Mean gradient and costs over the batches under ``key``."""
        gs, cs = zip(*(self.opt.gradient(b) for b in self._batches[key]))
        return np.mean([g.astype(np.float64) for g in gs], axis=0), tuple(np.mean(cs, axis=0).tolist())

    def cost(self, key):
        cs = [self.opt.cost(b) for b in self._batches[key]]
        return tuple(np.mean(cs, axis=0).tolist())

    def begin_cg(self, key, structural):
        """Build the curvature operators (forward pass cached) for the batches under ``key``."""
        self._ops = [self.opt.curvature_operator(b, structural_coefficient=structural) for b in self._batches[key]]

    def matvec(self, v):
        out = None
        for op in self._ops:
            r = op.matvec(v)
            out = r if out is None else out + r
        return out / len(self._ops) if len(self._ops) > 1 else out

    def plain_product(self, key, p):
        """Undamped curvature product (no structural term) averaged over the batches under ``key``."""
        out = 0.0
        for b in self._batches[key]:
            out = out + self.opt.plain_product(p, b).astype(np.float64)
        return out / len(self._batches[key])

    def statistic(self, key, name):
        bs = self._batches[key]
        return sum(self.opt.statistic(name, b).astype(np.float64) for b in bs) / len(bs)

    def close(self):
        self._ops = None
