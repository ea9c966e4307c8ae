"""The worker side of Dask evaluation: a worker's copy of the model and its shards (:class:`ShardServer`).

See :mod:`hf_symbolic.evaluate.dask` for the whole scheme; this module is what
runs inside a Dask worker process. The model is rebuilt from its
:meth:`~hf_symbolic.model.Model.config`, compiled once per worker and kept
(by token) for later runs.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import threading
import time

import numpy as np

from hf_symbolic.errors import ArgumentError
from hf_symbolic.graph.backend import openblas_available
from hf_symbolic.model.model import Model

__all__ = ["ShardServer"]

log = logging.getLogger("hf_symbolic.evaluate.dask")

#: Compiled models kept per worker process, by token (least recently used dropped first).
MODELS_KEPT = 2

_MODELS: collections.OrderedDict = collections.OrderedDict()  # token -> _WorkerModel
_MODELS_LOCK = threading.Lock()


def _configure_blas(driver_ldflags):
    """Link the same BLAS as the training process when this worker's PyTensor has none configured."""
    import pytensor


    if pytensor.config.blas__ldflags or not driver_ldflags:
        return
    if driver_ldflags.strip() == "-lopenblas" and not openblas_available():
        log.warning("the training process links OpenBLAS but this worker has no libopenblas.so")
        return
    pytensor.config.blas__ldflags = driver_ldflags


class _WorkerModel:
    """A worker's copy of the model, plus copies narrowed to the shards' static case sizes.

    JAX compiles for static shapes, so models meant for it give their inputs
    the batch's static shape; a shard has fewer cases. For each shard size
    met, the graph is cloned with inputs of that static size (sharing the
    parameters) and compiled once, on first use.
    """

    def __init__(self, opt):
        self.base = opt
        self.variants = {}
        self._static = tuple(ax is not None and x.type.shape[ax] is not None
                             for x, ax in zip(opt.inputs, opt.case_axes))

    @property
    def static_cases(self) -> bool:
        return any(self._static)

    def all(self):
        return [self.base, *self.variants.values()]

    def for_batch(self, batch):
        """The model whose inputs accept ``batch``."""
        if not self.static_cases:
            return self.base
        base = self.base
        axes = list(zip(base.case_axes, self._static))
        sizes = tuple(a.shape[ax] if st else None for a, (ax, st) in zip(batch, axes))
        if sizes == tuple(x.type.shape[ax] if st else None for x, (ax, st) in zip(base.inputs, axes)):
            return base
        opt = self.variants.get(sizes)
        if opt is None:
            opt = self.variants[sizes] = self._narrowed(sizes)
        return opt

    def _narrowed(self, sizes):
        base = self.base
        inputs = []
        for x, ax, n in zip(base.inputs, base.case_axes, sizes):
            if n is not None:
                shape = list(x.type.shape)
                shape[ax] = n
                x = x.type.clone(shape=tuple(shape))(name=x.name)
            inputs.append(x)
        return base.with_inputs(inputs)


def _load_model(token, payload):
    """The worker's :class:`_WorkerModel` for ``token``: from this process's cache, else rebuilt from ``payload``."""
    with _MODELS_LOCK:
        model = _MODELS.get(token)
        if model is not None:
            _MODELS.move_to_end(token)
            return model, False
    state = pickle.loads(payload)
    _configure_blas(state["blas_ldflags"])
    model = _WorkerModel(Model.from_config(state["config"]))
    with _MODELS_LOCK:
        _MODELS[token] = model
        while len(_MODELS) > MODELS_KEPT:
            _MODELS.popitem(last=False)
    return model, True


class _Attached:
    """A shared-memory block of the training process, mapped here without registering it anywhere.

    ``multiprocessing.shared_memory`` before Python 3.13 registers every block
    it attaches with a resource tracker, which may unlink it when this process
    exits, or (when the tracker is the training process's, as in spawned
    local workers) forget the training process's own registration. The block
    belongs to the training process, which unlinks it; here it is only mapped.
    """

    def __init__(self, name):
        import mmap

        try:
            from multiprocessing import shared_memory

            self._shm = shared_memory.SharedMemory(name=name, track=False)  # Python >= 3.13
            self._mmap = None
            self.buf = self._shm.buf
            return
        except TypeError:
            self._shm = None
        path = os.path.join("/dev/shm", name.lstrip("/"))  # where Linux keeps POSIX shared memory
        fd = os.open(path, os.O_RDWR)
        try:
            self._mmap = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self.buf = memoryview(self._mmap)
        self.name = name

    def close(self):
        if self._shm is not None:
            self._shm.close()
            return
        self.buf.release()
        self._mmap.close()


def _close(seg):
    try:
        seg.close()
    except BufferError:  # a view is still referenced (a compiled function's last input, an exception's frame)
        log.debug("a shared-memory block is still referenced; unmapped when its last view goes")


def _aligned(a):
    """``a`` as an aligned array: Dask may deserialize arrays at unaligned offsets, which PyTensor's C code refuses."""
    return np.require(a, requirements="A") if isinstance(a, np.ndarray) else a


class _ShmRef:
    """Stands, in a command, for the vector in the training process's shared block ``slot``."""

    __slots__ = ("slot",)

    def __init__(self, slot):
        self.slot = slot


# -- worker side -----------------------------------------------------------------------------

class ShardServer:
    """One worker's shard of every batch, and the compiled model; lives on a Dask worker as an actor.

    Every method computes this shard's share of an average over cases: the
    sum over batches of ``weight * value`` with the weights the training
    process assigned (shard size over batch size, divided by the number of
    batches), so that the shares of all workers add up to the average.

    Parameters
    ----------
    token : str
        Names the model in this worker's cache of compiled models.
    payload : bytes
        The pickled model (see :func:`_model_payload`), used when the cache misses.
    blas_threads : int or None
        BLAS threads on this worker while the server lives (None: unchanged).
    """

    COMMANDS = frozenset({"set_theta", "load", "gradient", "cost", "begin_cg", "matvec", "plain_product",
                          "statistic"})

    def __init__(self, token, payload, blas_threads=1):
        self.model, self.rebuilt = _load_model(token, payload)
        self.blas_threads = blas_threads
        self._batches = {}
        self._ops = []
        self._segments = {}
        self._limits = None
        self.busy_seconds = 0.0

    # -- setup --------------------------------------------------------------------------
    def prepare(self, shm_names, nonce):
        """Compile, attach the shared blocks when they are reachable; returns facts about this worker.

        Models with static case sizes are compiled per shard size on first use instead.
        """
        import socket

        t0 = time.perf_counter()
        if not self.model.static_cases:
            self.model.base.compile_needed()
        seconds = time.perf_counter() - t0
        if self.blas_threads is not None and self._limits is None:
            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(limits=int(self.blas_threads), user_api="blas")
        shm = False
        if shm_names:
            try:
                segs = {slot: _Attached(name) for slot, name in shm_names.items()}
            except (OSError, ValueError):  # not on this machine, or not visible from here
                segs = {}
            if segs and bytes(segs["vector"].buf[:len(nonce)]) == nonce:
                self._segments, shm = segs, True
            else:
                for seg in segs.values():
                    _close(seg)
        return dict(pid=os.getpid(), host=socket.gethostname(), compile_seconds=seconds, rebuilt=self.rebuilt,
                    shared_memory=shm)

    def info(self):
        """Process id, compiled functions and compile seconds of this worker's model (all shard sizes)."""
        opts = self.model.all()
        return dict(pid=os.getpid(), functions=sorted({name for o in opts for name in o.compiled_functions}),
                    compile_seconds=sum(o.compile_seconds for o in opts), shard_sizes=sorted(self.model.variants),
                    busy_seconds=self.busy_seconds)

    def close(self):
        """Drop this run's shards and shared blocks and give the BLAS threads back."""
        self._batches, self._ops = {}, []
        for seg in self._segments.values():
            _close(seg)
        self._segments = {}
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None

    # -- the commands -------------------------------------------------------------------
    def run(self, commands):
        """Execute ``[(method, args), ...]`` in order; returns ``(array_or_dtype, extra)`` of the last.

        Each method returns ``(parts, dtype, extra)``: the weighted terms
        ``[(weight, array), ...]`` of its array result and the dtype to sum
        them in. The sum is written in one pass to this worker's shared block
        when one is attached, and its dtype string returned instead of the
        array; None means this worker holds no shard of that batch and
        contributes nothing.
        """
        t0 = time.perf_counter()
        parts, dtype, extra = None, None, None
        for method, args in commands:
            if method not in self.COMMANDS:
                raise ArgumentError(f"unknown shard command {method!r}: expected one of {sorted(self.COMMANDS)}")
            parts, dtype, extra = getattr(self, "_" + method)(*(self._resolve(a) for a in args))
        if not parts:
            self.busy_seconds += time.perf_counter() - t0
            return None, extra
        shape = np.shape(parts[0][1])
        if "result" in self._segments:
            out = np.ndarray(shape, dtype, buffer=self._segments["result"].buf)
        else:
            out = np.empty(shape, dtype)
        for j, (w, a) in enumerate(parts):
            if j == 0:
                np.multiply(a, np.asarray(w, dtype=dtype), out=out)
            else:
                out += np.asarray(w, dtype=dtype) * a
        self.busy_seconds += time.perf_counter() - t0
        if "result" in self._segments:
            del out
            return np.dtype(dtype).str, extra
        return out, extra

    def _resolve(self, arg):
        if isinstance(arg, np.ndarray):
            return _aligned(arg)
        if not isinstance(arg, _ShmRef):
            return arg
        layout = self.model.base.layout
        # read in place: set_flat copies, compiled functions only read their inputs
        return np.ndarray((layout.size,), layout.dtype, buffer=self._segments[arg.slot].buf)

    def _set_theta(self, theta):
        self.model.base.set_flat(theta)  # the shard-size copies share the parameters
        return None, None, None

    def _load(self, key, items):
        batches = [(float(w), [_aligned(a) for a in b]) for w, b in items]
        self._batches[key] = [(w, b, self.model.for_batch(b)) for w, b in batches]
        return None, None, None

    def _gradient(self, key):
        parts, costs = [], 0.0
        for w, b, opt in self._batches[key]:
            g, c = opt.gradient(b)
            parts.append((w, g))
            costs = costs + w * np.asarray(c, dtype=np.float64)
        return parts, np.float64, (costs.tolist() if parts else None)

    def _cost(self, key):
        items = self._batches[key]
        if not items:
            return None, None, None
        return None, None, sum(w * np.asarray(opt.cost(b), dtype=np.float64) for w, b, opt in items).tolist()

    def _begin_cg(self, key, structural):
        self._ops = [(w, opt.curvature_operator(b, structural_coefficient=structural))
                     for w, b, opt in self._batches[key]]
        return None, None, None

    def _matvec(self, v):
        return [(w, op.matvec(v)) for w, op in self._ops], self.model.base.layout.dtype, None

    def _plain_product(self, key, p):
        return [(w, opt.plain_product(p, b)) for w, b, opt in self._batches[key]], np.float64, None

    def _statistic(self, key, name):
        return [(w, opt.statistic(name, b)) for w, b, opt in self._batches[key]], np.float64, None
