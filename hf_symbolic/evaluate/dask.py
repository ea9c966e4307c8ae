"""Evaluating one update's products on a Dask cluster: one shard of cases per worker.

``hf_optimizer.train(..., client=client)`` with a ``dask.distributed.Client``
splits every gradient and CG batch into one shard of cases per worker (along
:attr:`hf_optimizer.case_axes`, as :mod:`hf_symbolic.evaluate.forked` does with forked
processes) and computes the gradient, the costs and the curvature products on
the workers. Each worker holds a :class:`ShardServer` (a Dask actor): it
rebuilds the model once from the pickled symbolic graph, compiles its
functions once, keeps its shards and the forward pass of the CG batch, and
returns its shard's share of each average already weighted, so the training
process only adds the partial results. Per update the shards travel once;
per evaluation point the parameters travel once; per CG iteration the
direction ``v`` travels once and each worker's product comes back.

Large vectors (parameters, directions, products, gradients) go through
shared memory to workers on the training process's machine (checked when
the workers attach, not guessed from addresses) and through Dask messages to
the others. ``HF_SYMBOLIC_DASK_SHM=0`` turns shared memory off.

A worker that dies while training raises :class:`WorkerLostError`; the
checkpoint written after the last complete update is untouched, and calling
``train`` again with the same ``save_progress`` resumes from it on the
workers the cluster then has. Shards are not recomputed elsewhere.

This module imports Dask only when an evaluator is created or a client is
checked; ``pip install 'hf_symbolic[dask]'`` installs it.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
import uuid
import weakref

import numpy as np

from hf_symbolic._env import env_flag
from hf_symbolic.errors import ArgumentError, HFError
from hf_symbolic.evaluate.base import Evaluator, split_cases
from hf_symbolic.evaluate.dask_worker import ShardServer, _close, _ShmRef

__all__ = ["DaskEvaluator", "ShardServer", "WorkerLostError", "check_client"]  # ShardServer re-exported

log = logging.getLogger(__name__)

_TIMEOUTS = (TimeoutError, asyncio.TimeoutError)  # the same class from Python 3.11 on

#: Seconds between checks that the workers are alive while waiting for their results.
POLL_SECONDS = 0.5

_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # driver side: hf_optimizer -> token


class WorkerLostError(HFError, RuntimeError):
    """A Dask worker holding a shard died or became unreachable during training.

    Training stops; the checkpoint of the last complete update is intact and a
    new ``train`` call with the same arguments resumes from it.
    """


def check_client(client):
    """Return ``client`` if it is a ``dask.distributed.Client``, else raise :class:`ArgumentError`."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ArgumentError(
            f"client={type(client).__name__} needs dask.distributed, which is not installed: "
            "pip install 'hf_symbolic[dask]' (or dask[distributed])"
        ) from exc
    if not isinstance(client, Client):
        raise ArgumentError(f"client must be a dask.distributed.Client, got {type(client).__name__} {client!r:.80}")
    if client.status not in ("running", "connecting", "newly-created"):
        raise ArgumentError(f"client {client!r:.80} is {client.status}; expected a running dask.distributed.Client")
    return client


# -- the model, shipped to the workers ------------------------------------------------

def _model_token(opt):
    """A name for ``opt``'s compiled model on the workers.

    Unique per optimizer object and settings, and per value of the shared
    variables other than the parameters (a worker reusing its compiled model
    sets only the parameters).
    """
    import hashlib

    from pytensor.compile.sharedvalue import SharedVariable

    try:
        from pytensor.graph.traversal import graph_inputs
    except ImportError:  # PyTensor < 3
        from pytensor.graph.basic import graph_inputs

    base = _TOKENS.get(opt)
    if base is None:
        base = _TOKENS[opt] = uuid.uuid4().hex
    cfg = opt.config()
    params = {id(x) for x in cfg["p"]}
    digest = hashlib.sha1()
    outputs = [cfg["s"], *cfg["costs"], *([cfg["h"], cfg["ha"]] if cfg["h"] is not None else [])]
    for x in graph_inputs(outputs):
        if isinstance(x, SharedVariable) and id(x) not in params:
            digest.update(np.ascontiguousarray(x.get_value(borrow=True)).tobytes())
    return f"{base}-{opt.curvature}-{int(opt.cache_forward)}-{digest.hexdigest()[:16]}"


def _model_payload(opt):
    """The uncompiled model as bytes: its :meth:`~hf_symbolic.model.Model.config` and the BLAS it links."""
    import cloudpickle
    import pytensor

    state = dict(config=opt.config(), blas_ldflags=pytensor.config.blas__ldflags)
    try:
        return cloudpickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise ArgumentError(f"the model cannot be sent to Dask workers: pickling its graph failed "
                            f"({type(exc).__name__}: {exc})") from exc


# -- shared memory ----------------------------------------------------------------------

# -- training-process side ----------------------------------------------------------------

def _worker_addresses(client):
    """Addresses of the cluster's workers, sorted, asked of the scheduler itself.

    ``client.scheduler_info()`` is not used: it returns the client's cached identity, which the
    client's own periodic refresh overwrites with a copy that lists no workers (``n_workers=0``),
    so a poll could see an empty cluster while every worker is alive.
    """
    try:
        info = client.sync(client.scheduler.identity, n_workers=-1)
    except TypeError:  # Dask releases whose identity() takes no arguments list every worker
        info = client.sync(client.scheduler.identity)
    return sorted(info["workers"])


def _shm_enabled():
    return env_flag("HF_SYMBOLIC_DASK_SHM")


class _Staged:
    """A flat vector for the workers: in the shared block ``slot`` for those attached, as ``array`` for the others."""

    __slots__ = ("slot", "array")

    def __init__(self, slot, array):
        self.slot, self.array = slot, array


class DaskEvaluator(Evaluator):
    """The :class:`~hf_symbolic.evaluate.base.Evaluator` contract on the workers of a Dask cluster.

    Parameters
    ----------
    opt : hf_optimizer
    client : dask.distributed.Client
        Every worker the cluster has now gets one shard of each batch.
    blas_threads : int or None
        BLAS threads on each worker while training (None: unchanged).
    shared_memory : bool or None
        Pass vectors to workers on this machine through shared memory; None
        (default) means yes unless ``HF_SYMBOLIC_DASK_SHM=0``.

    Attributes
    ----------
    workers : int
        Number of shards (one per worker).
    addresses : list of str
    worker_info : list of dict
        Per worker: pid, host, compile seconds, whether its compiled model was
        rebuilt or reused from an earlier run, whether it reads shared memory.
    """

    def __init__(self, opt, client, blas_threads=1, shared_memory=None):
        self.opt = opt
        self.client = check_client(client)
        self.addresses = _worker_addresses(client)
        if not self.addresses:
            raise ArgumentError(f"the Dask cluster of {client!r:.80} has no workers; start some, or wait for them "
                                "with client.wait_for_workers(n)")
        self.workers = len(self.addresses)
        if all(ax is None for ax in opt.case_axes):
            log.warning("no input has a case axis: each batch is evaluated whole on one Dask worker")
        self._pending = [[] for _ in self.addresses]
        self._segments = {}
        self._handles, self._actors = [], []
        self._shm = [False] * self.workers
        self.worker_info = []
        self._closed = False
        if shared_memory is None:
            shared_memory = _shm_enabled()
        try:
            self._start(blas_threads, bool(shared_memory))
        except BaseException:
            self.close()
            raise

    # -- setup ----------------------------------------------------------------------------
    def _start(self, blas_threads, shared_memory):
        opt, client = self.opt, self.client
        t0 = time.perf_counter()
        payload = client.scatter(_model_payload(opt), broadcast=True, hash=False)
        token, key = _model_token(opt), uuid.uuid4().hex[:8]
        self._handles = [
            client.submit(ShardServer, token, payload, blas_threads, actor=True, workers=[addr],
                          allow_other_workers=False, pure=False, key=f"hf-shard-{k}-{key}")
            for k, addr in enumerate(self.addresses)
        ]
        self._actors = [self._wait(h, k, "start") for k, h in enumerate(self._handles)]
        del payload  # released on the workers once nothing refers to it
        nonce = uuid.uuid4().bytes
        if shared_memory:
            self._create_segments(nonce)
        futures = []
        for k, actor in enumerate(self._actors):
            names = None
            if self._segments:
                names = {"theta": self._segments["theta"].name, "vector": self._segments["vector"].name,
                         "result": self._segments[f"result{k}"].name}
            futures.append(actor.prepare(names, nonce))
        self.worker_info = self._gather(futures, "prepare")
        self._shm = [bool(i["shared_memory"]) for i in self.worker_info]
        if not any(self._shm):
            self._release_segments()
        log.info("Dask evaluator: %d workers (%s), %d through shared memory, ready in %.1f s (compile %.1f s max)",
                 self.workers, ", ".join(self.addresses), sum(self._shm), time.perf_counter() - t0,
                 max(i["compile_seconds"] for i in self.worker_info))

    def _create_segments(self, nonce):
        from multiprocessing import shared_memory

        n, item = self.opt.layout.size, self.opt.layout.dtype.itemsize
        sizes = {"theta": n * item, "vector": max(n * item, len(nonce))}
        sizes.update({f"result{k}": n * 8 for k in range(self.workers)})  # float64 partial results
        for slot, size in sizes.items():
            self._segments[slot] = shared_memory.SharedMemory(create=True, size=size)
        self._segments["vector"].buf[:len(nonce)] = nonce

    def _release_segments(self):
        for seg in self._segments.values():
            _close(seg)
            try:
                seg.unlink()
            except FileNotFoundError:
                pass
        self._segments = {}

    # -- calls ------------------------------------------------------------------------------
    def _lost(self, k, what, exc=None):
        return WorkerLostError(
            f"Dask worker {self.addresses[k]} (shard {k + 1} of {self.workers}) was lost during {what}"
            + (f" ({type(exc).__name__}: {exc})" if exc is not None else "")
            + "; its shards are not recomputed elsewhere. A save_progress checkpoint holds the last complete "
            "update: call train again with it to resume on the workers the cluster has then"
        )

    def _wait(self, fut, k, what):
        """The result of worker ``k``'s future, raising :class:`WorkerLostError` as soon as the worker is gone."""
        while True:
            try:
                return fut.result(timeout=POLL_SECONDS)
            except _TIMEOUTS:  # still running: is its worker still there?
                if self._handles[k].status in ("error", "lost", "cancelled") or not self._alive(k):
                    raise self._lost(k, what) from None
            except OSError as exc:  # the connection to the worker failed
                raise self._lost(k, what, exc) from exc
            except RuntimeError as exc:
                if "was lost" in str(exc):
                    raise self._lost(k, what, exc) from exc
                raise
            except Exception as exc:  # raised by the model on the worker: the original type, located
                if hasattr(exc, "add_note"):  # Python >= 3.11
                    exc.add_note(f"(raised on Dask worker {self.addresses[k]} during {what})")
                raise

    def _alive(self, k):
        return self.addresses[k] in _worker_addresses(self.client)

    def _gather(self, futures, what):
        return [self._wait(f, k, what) for k, f in enumerate(futures)]

    def _for(self, k, args):
        """``args`` as worker ``k`` receives them: staged vectors by reference or by value."""
        return tuple((_ShmRef(a.slot) if self._shm[k] else a.array) if isinstance(a, _Staged) else a for a in args)

    def _call(self, method, *args):
        """Send the pending commands plus ``(method, args)`` to every worker; returns their results."""
        futures = []
        for k, actor in enumerate(self._actors):
            cmds = self._pending[k] + [(method, self._for(k, args))]
            self._pending[k] = []
            try:
                futures.append(actor.run(cmds))
            except RuntimeError as exc:  # the actor's worker is already known to be gone
                raise self._lost(k, method, exc) from exc
        return self._gather(futures, method)

    def _stage(self, slot, x):
        x = np.asarray(x, dtype=self.opt.layout.dtype)
        if self._segments:
            np.ndarray(x.shape, x.dtype, buffer=self._segments[slot].buf)[...] = x
        # workers without shared memory get a copy (set_theta is sent later, the caller may reuse x)
        return _Staged(slot, None if all(self._shm) else np.array(x, copy=True))

    def _sum(self, results, dtype=np.float64):
        """The sum of the workers' arrays, read in place from the shared blocks of those that wrote there."""
        parts = []
        for k, (array, _) in enumerate(results):
            if isinstance(array, str):
                array = np.ndarray((self.opt.layout.size,), np.dtype(array), buffer=self._segments[f"result{k}"].buf)
            if array is not None:  # None: no shard of this batch on worker k
                parts.append(array)
        if len(parts) == 1:
            return np.array(parts[0], dtype=dtype, copy=True)
        total = np.add(parts[0], parts[1], dtype=dtype)
        for a in parts[2:]:
            total += a
        return total  # no view of a shared block outlives the call: the blocks are closed at the end

    @staticmethod
    def _sum_costs(results):
        parts = [np.asarray(c, dtype=np.float64) for _, c in results if c is not None]
        return tuple(float(x) for x in sum(parts[1:], parts[0]))

    # -- the evaluator interface --------------------------------------------------------------
    def load(self, key, batches):
        """Split each batch into one shard of cases per worker; the shards travel with the next call."""
        batches = [list(b) for b in batches]
        items = [[] for _ in self.addresses]
        for b in batches:
            shards, weights = split_cases(b, self.opt.case_axes, self.workers)
            for k, (shard, w) in enumerate(zip(shards, weights)):
                items[k].append((w / len(batches), shard))
        for k in range(self.workers):
            self._pending[k].append(("load", (key, items[k])))

    def set_theta(self, theta):
        """Parameters for the following calls (sent with the next one; only the last one counts)."""
        staged = self._stage("theta", self.opt.layout.check(theta, "theta"))
        for k in range(self.workers):
            self._pending[k] = [c for c in self._pending[k] if c[0] != "set_theta"]
            self._pending[k].append(("set_theta", self._for(k, (staged,))))

    def gradient(self, key):
        results = self._call("gradient", key)
        return self._sum(results), self._sum_costs(results)

    def cost(self, key):
        return self._sum_costs(self._call("cost", key))

    def begin_cg(self, key, structural):
        self._call("begin_cg", key, float(structural))

    def matvec(self, v):
        return self._sum(self._call("matvec", self._stage("vector", v)), self.opt.layout.dtype)

    def plain_product(self, key, p):
        return self._sum(self._call("plain_product", key, self._stage("vector", p)))

    def statistic(self, key, name):
        return self._sum(self._call("statistic", key, name))

    def info(self):
        """Each worker's process id, compiled functions and compile seconds (for tests and logs)."""
        return self._gather([a.info() for a in self._actors], "info")

    def close(self):
        """Release the actors and shared blocks; never raises for workers that are already gone."""
        if self._closed:
            return
        self._closed = True
        futures = []
        for a in self._actors:
            try:
                futures.append(a.close())
            except Exception:  # its worker is gone
                pass
        for f in futures:
            try:
                f.result(timeout=10)
            except Exception:
                pass
        if self._handles:
            try:
                self.client.cancel(self._handles)
            except Exception:
                pass
        self._actors, self._handles = [], []
        self._release_segments()
