"""Evaluating one update's products on several cores: each batch split into shards of cases.

The gradient, the costs and every curvature product of HF are averages over
the cases of a batch, so a batch can be split along its case axes
(:attr:`hf_optimizer.case_axes`), each shard evaluated by its own process, and
the results combined weighted by shard size. With ``workers=n`` the training
process computes one shard itself and ``n - 1`` forked worker processes the
others; they inherit the compiled functions, so nothing is compiled again.
Per CG iteration only the direction ``v`` travels to the workers and their
products back (a few dozen kilobytes for the RNN example); the parameters
travel once per evaluation point.

This assumes every cost is a mean over cases (as the 2012 interface already
assumes when it averages over the batches of a dataset). Processes rather than
threads: PyTensor's compiled ``scan`` keeps its inner function's storage in the
op, so one compiled function cannot run in two threads at once.

:class:`SerialEvaluator` is the single-process version with the same interface.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal

import numpy as np

__all__ = ["SerialEvaluator", "ShardedEvaluator", "make_evaluator", "split_cases"]

log = logging.getLogger(__name__)


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


class SerialEvaluator:
    """Evaluates on whole batches in this process (the default)."""

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
            r = self.opt.hessian_product(p, b) if self.opt.curvature == "hessian" else self.opt.gauss_newton_product(p, b)
            out = out + r.astype(np.float64)
        return out / len(self._batches[key])

    def per_case_squared_gradient(self, key):
        bs = self._batches[key]
        return sum(self.opt.per_case_squared_gradient(b).astype(np.float64) for b in bs) / len(bs)

    def close(self):
        self._ops = None


def _worker(opt, conn):
    """Serve requests from the training process on this worker's shards."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the training process handles Ctrl-C
    ev = SerialEvaluator(opt)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        cmd, args = msg[0], msg[1:]
        try:
            if cmd == "close":
                conn.send(("ok", None))
                return
            if cmd == "load":
                ev.load(*args)
                out = None
            elif cmd == "set_theta":
                ev.set_theta(*args)
                out = None
            elif cmd == "begin_cg":
                ev.begin_cg(*args)
                out = None
            else:
                out = getattr(ev, cmd)(*args)
            conn.send(("ok", out))
        except BaseException as exc:  # report, keep serving
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class ShardedEvaluator(SerialEvaluator):
    """Splits every batch into ``workers`` shards of cases; shard 0 here, the others in forked workers."""

    def __init__(self, opt, workers):
        super().__init__(opt)
        self.workers = workers
        ctx = multiprocessing.get_context("fork")
        self._conns, self._procs = [], []
        for _ in range(workers - 1):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(opt, child), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._weights = {}

    def _call(self, cmd, *per_worker_args, local=None):
        """Send ``cmd`` to every worker (args per worker), run ``local()`` here meanwhile, gather results."""
        for conn, args in zip(self._conns, per_worker_args):
            conn.send((cmd, *args))
        mine = local() if local is not None else None
        results = []
        for k, conn in enumerate(self._conns):
            status, out = conn.recv()
            if status != "ok":
                raise RuntimeError(f"worker {k + 1} failed in {cmd}: {out}")
            results.append(out)
        return mine, results

    def load(self, key, batches):
        per_shard = [[] for _ in range(self.workers)]
        weights = None
        for b in batches:
            shards, w = split_cases(list(b), self.opt.case_axes, self.workers)
            if len(shards) != self.workers:
                raise ValueError(f"cannot split a batch into {self.workers} shards of cases")
            for k, s in enumerate(shards):
                per_shard[k].append(s)
            weights = w
        self._weights[key] = np.asarray(weights)
        self._call("load", *[(key, per_shard[k + 1]) for k in range(self.workers - 1)],
                   local=lambda: super(ShardedEvaluator, self).load(key, per_shard[0]))

    def _combine(self, key, mine, others):
        w = self._weights[key]
        return sum(wk * np.asarray(x, dtype=np.float64) for wk, x in zip(w, [mine, *others]))

    def set_theta(self, theta):
        theta = np.asarray(theta)
        self._call("set_theta", *[(theta,)] * len(self._conns), local=lambda: self.opt.set_flat(theta))

    def gradient(self, key):
        mine, others = self._call("gradient", *[(key,)] * len(self._conns), local=lambda: super(ShardedEvaluator, self).gradient(key))
        g = self._combine(key, mine[0], [o[0] for o in others])
        costs = self._combine(key, mine[1], [o[1] for o in others])
        return g, tuple(costs.tolist())

    def cost(self, key):
        mine, others = self._call("cost", *[(key,)] * len(self._conns), local=lambda: super(ShardedEvaluator, self).cost(key))
        return tuple(self._combine(key, mine, others).tolist())

    def begin_cg(self, key, structural):
        self._cg_key = key
        self._call("begin_cg", *[(key, structural)] * len(self._conns),
                   local=lambda: super(ShardedEvaluator, self).begin_cg(key, structural))

    def matvec(self, v):
        mine, others = self._call("matvec", *[(v,)] * len(self._conns), local=lambda: super(ShardedEvaluator, self).matvec(v))
        return self._combine(self._cg_key, mine, others).astype(mine.dtype)

    def plain_product(self, key, p):
        mine, others = self._call("plain_product", *[(key, p)] * len(self._conns),
                                  local=lambda: super(ShardedEvaluator, self).plain_product(key, p))
        return self._combine(key, mine, others)

    def per_case_squared_gradient(self, key):
        mine, others = self._call("per_case_squared_gradient", *[(key,)] * len(self._conns),
                                  local=lambda: super(ShardedEvaluator, self).per_case_squared_gradient(key))
        return self._combine(key, mine, others)

    def close(self):
        super().close()
        for conn in self._conns:
            try:
                conn.send(("close",))
                conn.recv()
            except (OSError, EOFError):
                pass
            conn.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []


def make_evaluator(opt, workers):
    """A :class:`ShardedEvaluator` for ``workers > 1`` when the batches can be split, else a :class:`SerialEvaluator`."""
    if workers is None or workers <= 1:
        return SerialEvaluator(opt)
    if all(ax is None for ax in opt.case_axes):
        log.warning("workers=%d ignored: no input has a case axis to split", workers)
        return SerialEvaluator(opt)
    if "fork" not in multiprocessing.get_all_start_methods():
        log.warning("workers=%d ignored: this platform cannot fork", workers)
        return SerialEvaluator(opt)
    # compile in this process first: the workers inherit the compiled functions
    opt.compile(("gradient", "cost"))
    if opt.curvature == "hessian":
        opt.compile(("hessian",))
    elif opt.cache_forward:
        opt._cached_gv_functions()
    else:
        opt.compile(("gauss_newton",))
    log.info("evaluating on %d shards (%d worker processes, pid %d)", workers, workers - 1, os.getpid())
    return ShardedEvaluator(opt, workers)
