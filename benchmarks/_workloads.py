"""Shared pieces of the hand-run benchmarks: the two reference workloads, the GEMM floor, timing.

Not part of the library and never imported by the test suite. The scripts in this
folder import it as a sibling module (they put their own folder on ``sys.path``).

Workloads (float32 or float64, weights and data drawn from one seed):

* ``rnn``: tanh RNN 1-H-1 (H = 100), T = 100 steps, B = 1000 sequences of random
  bits, input ``x`` of shape (T, B, 1), ``h_t = tanh(x_t W_in + h_{t-1} W_hh + b_h)``
  with ``h_0 = 0``, output pre-activation ``s = h_T W_out + b_out`` read at the last
  step only, target the first bit, loss = mean over sequences of the logistic
  cross-entropy ``softplus(s) - y s``; Gauss-Newton split at ``s``.
* ``ae``: autoencoder 784-1000-500-250-30-250-500-1000-784 (logistic hidden units,
  linear 30-unit code, sigmoid output), B = 1000 cases with pixel values in [0, 1],
  loss = mean over cases of the summed cross-entropy with the input as target;
  split at the output pre-activation.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np

AE_SIZES = (784, 1000, 500, 250, 30, 250, 500, 1000, 784)


@dataclass(frozen=True)
class Workload:
    """A model as hf_optimizer takes it, plus the numbers the peers need to rebuild it.

    Attributes
    ----------
    name : str
        ``"rnn"`` or ``"ae"``.
    params : list of shared variables
    inputs : list of symbolic inputs
    s : Variable
        Output pre-activation (the Gauss-Newton split).
    costs : list of scalar Variables
    data : list of ndarray
        One batch, in the order of ``inputs``.
    values : dict of str -> ndarray
        Initial parameter values by name (the same arrays as ``params`` hold).
    dims : dict
        Sizes (``T``, ``B``, ``H`` or ``sizes``).
    gemms : dict of str -> list of (M, K, N, transpose_a)
        The GEMMs one ``cost``, ``gradient`` and cached ``gv`` product need (see
        :func:`gemm_floor`).
    """

    name: str
    params: list
    inputs: list
    s: object
    costs: list
    data: list
    values: dict
    dims: dict
    gemms: dict = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        return int(sum(v.size for v in self.values.values()))


def _rnn_gemms(T, B, H):
    fwd = [(B, H, H, False)] * T                      # h_{t-1} W_hh, every step
    bwd = [(B, H, H, False)] * T                      # delta_t W_hh^T, every step
    wgrad = [(H, T * B, H, True)]                     # sum_t h_{t-1}^T delta_t as one product
    tangent = [(B, H, H, False)] * T + [(T * B, H, H, False)]  # R h_{t-1} W_hh per step; h_{t-1} V_hh at once
    return {"cost": fwd, "gradient": fwd + bwd + wgrad, "gv": tangent + bwd + wgrad}


def _ae_gemms(B, sizes):
    pairs = list(zip(sizes[:-1], sizes[1:]))
    fwd = [(B, a, b, False) for a, b in pairs]                       # A_i W_i
    back = [(B, b, a, False) for a, b in pairs[1:]]                  # delta_{i+1} W_i^T (not into the input)
    wgrad = [(a, B, b, True) for a, b in pairs]                      # A_i^T delta_{i+1}
    tangent = fwd + [(B, a, b, False) for a, b in pairs[1:]]         # A_i V_i and R(A_i) W_i
    return {"cost": fwd, "gradient": fwd + back + wgrad, "gv": tangent + back + wgrad}


def rnn_workload(T=100, batch=1000, hidden=100, dtype="float32", seed=0, static=False):
    """The tanh RNN workload (A). ``static=True`` gives the inputs static shapes (JAX needs them)."""
    import pytensor
    import pytensor.tensor as pt

    rng = np.random.default_rng(seed)
    H, B = hidden, batch
    values = {
        "W_in": rng.standard_normal((1, H)) * 0.5,
        "W_hh": rng.standard_normal((H, H)) / np.sqrt(H),
        "b_h": rng.standard_normal(H) * 0.1,
        "W_out": rng.standard_normal((H, 1)) * 0.1,
        "b_out": np.array([0.05]),
    }
    values = {k: v.astype(dtype) for k, v in values.items()}
    params = [pytensor.shared(v.copy(), name=k) for k, v in values.items()]
    W_in, W_hh, b_h, W_out, b_out = params
    x = pt.tensor("x", dtype=dtype, shape=(T, B, 1) if static else (None, None, 1))
    y = pt.tensor("y", dtype=dtype, shape=(B, 1) if static else (None, 1))

    def step(x_t, h_prev):
        return pt.tanh(pt.dot(x_t, W_in) + pt.dot(h_prev, W_hh) + b_h)

    h0 = pt.zeros((B, H) if static else (x.shape[1], H), dtype=dtype)
    h = pytensor.scan(step, sequences=[x], outputs_info=[h0], n_steps=T if static else None, return_updates=False)
    s = pt.dot(h[-1], W_out) + b_out
    cost = pt.mean(pt.sum(pt.softplus(s) - y * s, axis=1))
    xv = (rng.random((T, B, 1)) < 0.5).astype(dtype)
    yv = xv[0].copy()
    return Workload("rnn", params, [x, y], s, [cost], [xv, yv], values, dict(T=T, B=B, H=H),
                    _rnn_gemms(T, B, H))


def ae_workload(batch=1000, sizes=AE_SIZES, dtype="float32", seed=0, static=False):
    """The deep autoencoder workload (B)."""
    import pytensor
    import pytensor.tensor as pt

    rng = np.random.default_rng(seed)
    sizes = tuple(int(n) for n in sizes)
    code = min(sizes)
    x = pt.tensor("x", dtype=dtype, shape=(batch if static else None, sizes[0]))
    values, params = {}, []
    a = x
    n = len(sizes) - 1
    s = None
    for i in range(n):
        W = (rng.standard_normal((sizes[i], sizes[i + 1])) / np.sqrt(sizes[i])).astype(dtype)
        b = (rng.standard_normal(sizes[i + 1]) * 0.1).astype(dtype)
        values[f"W{i}"], values[f"b{i}"] = W, b
        Ws, bs = pytensor.shared(W.copy(), name=f"W{i}"), pytensor.shared(b.copy(), name=f"b{i}")
        params += [Ws, bs]
        z = pt.dot(a, Ws) + bs
        if i == n - 1:
            s = z
        elif sizes[i + 1] == code:
            a = z                       # linear code layer
        else:
            a = pt.sigmoid(z)
    cost = pt.mean(pt.sum(pt.softplus(s) - x * s, axis=1))
    xv = rng.random((batch, sizes[0])).astype(dtype)
    return Workload("ae", params, [x], s, [cost], [xv], values, dict(B=batch, sizes=sizes),
                    _ae_gemms(batch, sizes))


def build(name, dtype="float32", small=False, seed=0, static=False):
    """Workload by name; ``small=True`` gives a seconds-long version for checking the scripts."""
    if name == "rnn":
        kw = dict(T=8, batch=16, hidden=6) if small else {}
        return rnn_workload(dtype=dtype, seed=seed, static=static, **kw)
    if name == "ae":
        kw = dict(batch=20, sizes=(12, 10, 8, 3, 8, 10, 12)) if small else {}
        return ae_workload(dtype=dtype, seed=seed, static=static, **kw)
    raise ValueError(f"unknown workload {name!r}: expected 'rnn' or 'ae'")


# -- GEMM floor ------------------------------------------------------------------

def gemm_floor(gemms, dtype="float32", seed=0):
    """A callable doing exactly the GEMMs listed, as plain numpy products into preallocated outputs.

    Each entry ``(M, K, N, transpose_a)`` is one ``(M, K) x (K, N)`` product; with
    ``transpose_a`` the left operand is the transposed view of a ``(K, M)`` array (as in
    weight gradients ``A^T delta``), which BLAS reads without a copy. Elementwise work
    and memory traffic are not included: a real implementation cannot reach this time.
    """
    rng = np.random.default_rng(seed)
    cache = {}
    jobs = []
    for M, K, N, ta in gemms:
        key = (M, K, N, ta)
        if key not in cache:
            a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
            b = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(dtype)
            assert a.dtype == b.dtype == np.dtype(dtype)
            cache[key] = (a.T if ta else a, b, np.empty((M, N), dtype))
        jobs.append(cache[key])

    def run():
        for a, b, out in jobs:
            np.matmul(a, b, out=out)

    return run


def multiply_adds(gemms) -> int:
    return int(sum(M * K * N for M, K, N, _ in gemms))


# -- timing ------------------------------------------------------------------------

def interleaved_medians(fns, reps=5, rounds=3, warmup=1):
    """Median of per-round medians for each callable, the callables interleaved round by round.

    ``fns`` maps a name to a callable; each round times every callable ``reps`` times
    (after ``warmup`` untimed calls in the first round), so slow drifts of the machine
    load hit all of them alike. Returns ``{name: seconds}``.
    """
    if reps < 1 or rounds < 1:
        raise ValueError(f"reps and rounds must be >= 1, got reps={reps}, rounds={rounds}")
    per = {k: [] for k in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            if r == 0:
                for _ in range(warmup):
                    fn()
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            per[name].append(statistics.median(ts))
    return {k: statistics.median(v) for k, v in per.items()}


def max_rel_diff(a, b) -> float:
    """``max|a - b| / max|b|`` in float64 (0 when both are zero)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diff / scale if scale > 0 else diff


# -- environment report ------------------------------------------------------------

def add_common_arguments(ap):
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (threadpoolctl limit)")
    ap.add_argument("--reps", type=int, default=5, help="timed calls per round (median)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median of the round medians)")
    ap.add_argument("--small", action="store_true", help="tiny workloads: checks the script in seconds")


def check_environment(threads):
    """Print the command to reproduce, warn about OpenBLAS overrides, set XLA's thread flags."""
    if threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {threads}")
    keep = [k for k in ("PYTENSOR_FLAGS", "HF_SYMBOLIC_MODE", "NUMBA_CACHE_DIR", "XLA_FLAGS") if k in os.environ]
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in keep)
    print("# reproduce: " + (env + " " if env else "") + "python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  {platform.node()}  {platform.machine()}  "
          f"cpus={os.cpu_count()}  python {platform.python_version()}  numpy {np.__version__}")
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if k in os.environ:
            print(f"# WARNING: {k}={os.environ[k]} is set; for benchmark commands run `unset {k}` first "
                  "(it changes OpenBLAS's kernels and cache blocking)")
    if threads == 1 and "XLA_FLAGS" not in os.environ:
        # JAX's CPU backend uses its own thread pool, which threadpoolctl cannot limit
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        print(f"# XLA_FLAGS={os.environ['XLA_FLAGS']!r} (set for JAX rows: one thread)")


def print_threadpools(prefix="# "):
    """Print every BLAS/OpenMP library threadpoolctl sees, with its current thread count."""
    from threadpoolctl import threadpool_info

    info = threadpool_info()
    if not info:
        print(prefix + "threadpoolctl sees no BLAS/OpenMP library")
    for d in info:
        print(prefix + f"{d.get('user_api')}/{d.get('internal_api')} {d.get('version', '')} "
              f"threads={d.get('num_threads')} {os.path.basename(d.get('filepath', ''))}")


def fmt_s(t):
    """Seconds for a table cell."""
    if t is None or (isinstance(t, float) and not np.isfinite(t)):
        return "–"
    return f"{t:.4g}" if t < 10 else f"{t:.1f}"


def fmt_ratio(a, b):
    if a is None or b is None or not b:
        return "–"
    return f"{a / b:.2f}"


def markdown_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
