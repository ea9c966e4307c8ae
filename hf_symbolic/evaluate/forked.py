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

:class:`~hf_symbolic.evaluate.serial.SerialEvaluator` is the single-process version.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal

import numpy as np

from hf_symbolic.evaluate.base import split_cases
from hf_symbolic.evaluate.serial import SerialEvaluator

__all__ = ["ShardedEvaluator", "forked_evaluator"]

log = logging.getLogger(__name__)


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

    def statistic(self, key, name):
        mine, others = self._call("statistic", *[(key, name)] * len(self._conns),
                                  local=lambda: super(ShardedEvaluator, self).statistic(key, name))
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


def forked_evaluator(opt, workers):
    """A :class:`ShardedEvaluator` for ``workers > 1`` when the batches can be split, else None."""
    if all(ax is None for ax in opt.case_axes):
        log.warning("workers=%d ignored: no input has a case axis to split", workers)
        return None
    if "fork" not in multiprocessing.get_all_start_methods():
        log.warning("workers=%d ignored: this platform cannot fork", workers)
        return None
    opt.compile_needed()  # in this process first: the workers inherit the compiled functions
    log.info("evaluating on %d shards (%d worker processes, pid %d)", workers, workers - 1, os.getpid())
    return ShardedEvaluator(opt, workers)
