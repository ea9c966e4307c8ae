"""Pieces shared by the example scripts: sparse initialization, model builders, output layers.

The examples import this module as ``_common`` (their own folder is on
``sys.path`` when run as scripts; each example also adds it when imported by
path). Everything here builds plain PyTensor graphs for
:class:`hf_symbolic.hf_optimizer`, or prints what the examples say before
training (what runs, the state of PyTensor's compile cache, each compiled
function and its time); nothing here trains.

Sparse initialization (Martens 2010, §5; Martens & Sutskever 2011): every
unit receives exactly ``n_nonzero`` (15) nonzero incoming weights drawn from
a Gaussian, all other incoming weights are 0, biases are 0. It keeps the
total input of a unit independent of the layer width, so that wide layers
do not saturate and units differ from one another from the start.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

OUTPUTS = ("linear", "sigmoid", "softmax")
LOSSES = {"linear": "squared", "sigmoid": "cross_entropy", "softmax": "categorical_cross_entropy"}


def sparse_weights(n_in, n_out, rng, n_nonzero=15, scale=1.0):
    """A ``(n_in, n_out)`` weight matrix with ``min(n_nonzero, n_in)`` nonzero entries per column.

    Column ``j`` holds the incoming weights of unit ``j``; its nonzero rows are
    a uniformly random subset, their values ``N(0, scale²)``.

    Examples
    --------
    >>> w = sparse_weights(40, 3, np.random.default_rng(0))
    >>> (w != 0).sum(axis=0).tolist()
    [15, 15, 15]
    """
    k = min(int(n_nonzero), n_in)
    w = np.zeros((n_in, n_out))
    for j in range(n_out):
        rows = rng.choice(n_in, size=k, replace=False)
        w[rows, j] = rng.normal(scale=scale, size=k)
    return w


def sparse_recurrent(n, rng, radius=1.1, n_nonzero=15):
    """Sparse ``(n, n)`` recurrent weights rescaled to spectral radius ``radius``.

    Examples
    --------
    >>> w = sparse_recurrent(30, np.random.default_rng(0), radius=1.1)
    >>> round(float(np.max(np.abs(np.linalg.eigvals(w)))), 6)
    1.1
    """
    w = sparse_weights(n, n, rng, n_nonzero)
    rho = np.max(np.abs(np.linalg.eigvals(w)))
    if rho > 0:
        w *= radius / rho
    return w


def output_layer(s, y, output, case_axis=-2):
    """Output nonlinearity and matching loss at the split ``s``.

    Parameters
    ----------
    s : TensorVariable
        Output pre-activations; the last axis indexes output units.
    y : TensorVariable
        Targets shaped like ``s``.
    output : {"linear", "sigmoid", "softmax"}
        ``linear`` pairs with half the squared error, ``sigmoid`` with the
        binary cross-entropy, ``softmax`` (over the last axis) with the
        categorical cross-entropy.
    case_axis : int
        Axis of ``y`` indexing cases: the loss is summed over every other
        axis (units and time steps) and averaged over cases.

    Returns
    -------
    out : TensorVariable
        The network's output (``s`` passed through the nonlinearity).
    cost : TensorVariable
        Scalar loss, a convex function of ``s``.
    """
    import pytensor.tensor as pt

    if output == "linear":
        out = s
        elementwise = 0.5 * (s - y) ** 2
    elif output == "sigmoid":
        out = pt.sigmoid(s)
        elementwise = pt.softplus(-s) * y + pt.softplus(s) * (1 - y)
    elif output == "softmax":
        out = pt.special.softmax(s, axis=-1)
        elementwise = -y * pt.special.log_softmax(s, axis=-1)
    else:
        raise ValueError(f"output={output!r}; expected one of {OUTPUTS}")
    cost = pt.sum(elementwise) / pt.cast(y.shape[case_axis], s.dtype)
    return out, cost


@dataclass(frozen=True)
class Model:
    """A model ready for :class:`hf_symbolic.hf_optimizer`.

    ``hf_optimizer(model.params, model.inputs, model.s, model.costs, h=model.h, ha=model.ha)``.
    ``out`` is the prediction (after the output nonlinearity); ``h``/``ha``
    are None for models without structural damping.
    """

    params: list
    inputs: list
    s: object
    costs: list
    out: object
    h: object = None
    ha: object = None


def build_rnn(n_in, n_hidden, n_out, output, rng, *, output_steps=1, dtype="float32", radius=1.1, input_scale=0.1,
              output_scale=0.1, n_nonzero=15):
    """A tanh RNN read at the last step (or the last ``output_steps`` steps).

    Input ``x`` is time-major ``(T, n, n_in)``; targets ``y`` are ``(n, n_out)``
    for one output step and ``(output_steps, n, n_out)`` otherwise.

    The recurrence runs on the pre-activation ``a_t = x_t W_xh + tanh(a_{t-1}) W_hh + b_h``
    (``a_0 = 0``), so that ``scan`` returns ``ha`` and ``h = tanh(ha)`` is
    computed outside the scan: structural damping then acts on ``(h + 1)/2``
    (in (0, 1)) split at ``ha``. Recurrent weights: sparse init rescaled to
    spectral radius ``radius``. Input weights: dense ``N(0, input_scale²)``;
    they must be small, or the tanh units saturate and the first inputs no
    longer move the last hidden state at initialization. Output weights:
    dense ``N(0, output_scale²)``. Biases 0.

    Returns
    -------
    Model
        ``inputs = [x, y]``, ``costs = [loss]``.
    """
    import pytensor
    import pytensor.tensor as pt

    values = dict(
        W_xh=rng.normal(scale=input_scale, size=(n_in, n_hidden)),
        W_hh=sparse_recurrent(n_hidden, rng, radius, n_nonzero),
        b_h=np.zeros(n_hidden),
        W_hy=rng.normal(scale=output_scale, size=(n_hidden, n_out)),
        b_y=np.zeros(n_out),
    )
    p = {k: pytensor.shared(v.astype(dtype), name=k) for k, v in values.items()}
    x = pt.tensor3("x", dtype=dtype)
    y = pt.matrix("y", dtype=dtype) if output_steps == 1 else pt.tensor3("y", dtype=dtype)

    def step(x_t, a_prev):
        return pt.dot(x_t, p["W_xh"]) + pt.dot(pt.tanh(a_prev), p["W_hh"]) + p["b_h"]

    a0 = pt.zeros((x.shape[1], n_hidden), dtype=dtype)
    ha = pytensor.scan(step, sequences=x, outputs_info=[a0], return_updates=False)
    h = pt.tanh(ha)
    read = h[-1] if output_steps == 1 else h[-output_steps:]
    s = pt.dot(read, p["W_hy"]) + p["b_y"]
    out, cost = output_layer(s, y, output)
    return Model(list(p.values()), [x, y], s, [cost], out, (h + 1) / 2, ha)


def rnn_forward(params, x, output, output_steps=1):
    """Numpy forward pass of :func:`build_rnn` (a reference for tests); returns the output."""
    names = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")
    W_xh, W_hh, b_h, W_hy, b_y = (np.asarray(params[k], dtype=np.float64) for k in names)
    a = np.zeros((x.shape[1], W_hh.shape[0]))
    hs = []
    for t in range(x.shape[0]):
        a = x[t] @ W_xh + np.tanh(a) @ W_hh + b_h
        hs.append(np.tanh(a))
    read = hs[-1] if output_steps == 1 else np.stack(hs[-output_steps:])
    s = read @ W_hy + b_y
    if output == "sigmoid":
        return 1 / (1 + np.exp(-s))
    if output == "softmax":
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return s


def build_mlp(sizes, activations, rng, *, dtype="float32", n_nonzero=15, scale=1.0, target_is_input=False):
    """A feed-forward net with sparse-initialized layers and a sigmoid output trained with cross-entropy.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths from the input to the output.
    activations : sequence of {"sigmoid", "linear"}
        One per hidden layer (``len(sizes) - 2`` entries); the output layer
        is always a sigmoid with binary cross-entropy summed over units.
    target_is_input : bool
        Autoencoder: the target is the input itself (``inputs = [x]``);
        otherwise ``inputs = [x, y]``.

    Returns
    -------
    Model
        ``costs = [cross-entropy, squared error]`` (both summed over output
        units, averaged over cases), and for classifiers a third cost, the
        zero-one error at threshold 0.5 (a case is wrong if any unit is).
    """
    import pytensor
    import pytensor.tensor as pt

    if len(activations) != len(sizes) - 2:
        raise ValueError(f"{len(activations)} activations for {len(sizes) - 2} hidden layers; "
                         "expected one per hidden layer")
    params = []
    x = pt.matrix("x", dtype=dtype)
    y = x if target_is_input else pt.matrix("y", dtype=dtype)
    a = x
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = pytensor.shared(sparse_weights(n_in, n_out, rng, n_nonzero, scale).astype(dtype), name=f"W{i}")
        b = pytensor.shared(np.zeros(n_out, dtype=dtype), name=f"b{i}")
        params += [W, b]
        z = pt.dot(a, W) + b
        if i == len(sizes) - 2:
            s = z
        elif activations[i] == "sigmoid":
            a = pt.sigmoid(z)
        elif activations[i] == "linear":
            a = z
        else:
            raise ValueError(f"activation {activations[i]!r}; expected 'sigmoid' or 'linear'")
    out, ce = output_layer(s, y, "sigmoid", case_axis=0)
    sq = pt.sum((out - y) ** 2) / pt.cast(y.shape[0], dtype)
    costs = [ce, sq]
    inputs = [x]
    if not target_is_input:
        costs.append(pt.mean(pt.any(pt.neq(pt.gt(s, 0), pt.gt(y, 0.5)), axis=1)))
        inputs = [x, y]
    return Model(params, inputs, s, costs, out)


class Clock:
    """Wall time since construction, for per-update lines."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return time.perf_counter() - self.start


def update_line(stats, clock, extra=""):
    """One line describing an HF or SGD update (SGD has no CG fields)."""
    if stats.cg_status:
        hf = (f"lambda {stats.lambda_:.3g}  rho {stats.rho:.2f}  CG {stats.cg_iterations:3d} ({stats.cg_status})  "
              f"step {stats.step:.2f}  ")
    else:
        hf = ""
    return (f"update {stats.update:3d}  cost {stats.costs[0]:.5f}  {extra}  {hf}"
            f"{stats.seconds:5.1f} s  total {clock():6.1f} s")


# -- what runs, and the first compile -------------------------------------------------


def cores():
    """Cores available to this process."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def backend_summary(mode=None):
    """The backend hf_symbolic will use, said without importing PyTensor (which takes a while)."""
    from hf_symbolic.graph.backend import openblas_available

    chosen = mode or os.environ.get("HF_SYMBOLIC_MODE")
    if chosen:
        return f"PyTensor mode {chosen}"
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    if shutil.which(os.environ.get("CXX", "g++")) and openblas_available():
        return "PyTensor C backend (CVM), BLAS OpenBLAS, 1 BLAS thread per process"
    if "blas__ldflags" in flags:
        return f"PyTensor C backend (CVM), BLAS from PYTENSOR_FLAGS ({flags})"
    return "PyTensor's default backend (no C compiler or no libopenblas.so: apt-get install libopenblas-dev)"


def say(*parts):
    print(*parts, flush=True)


def _stamp(example, dtype, mode):
    import pytensor

    tag = f"{example}-{dtype}-{mode or os.environ.get('HF_SYMBOLIC_MODE') or 'default'}"
    return pytensor.config.compiledir, os.path.join(str(pytensor.config.compiledir), f"hf_symbolic-{tag}.compiled")


def announce_compile_cache(example, dtype, mode=None):
    """Say whether this example's C code is in PyTensor's compile cache already (a stamp file there says so)."""
    compiledir, stamp = _stamp(example, dtype, mode)
    if not os.path.exists(stamp):
        say(f"First compile with this compile cache ({compiledir}): building the C code takes about a minute "
            "(less with 2 free cores); later runs reuse it and compile in a few seconds.")
    return stamp


def compile_now(opt, stamp, processes=2, names=None):
    """Compile what training needs, one line per function; returns the seconds it took."""
    from hf_symbolic.model.parallel_compile import TITLES, compile_for_training, training_functions

    titles = [TITLES[n] for n in (names or training_functions(opt))]
    say(f"compiling {', '.join(titles)}" + (" (the first two in a second process)" if processes > 1 else ""))
    t0 = time.perf_counter()
    compile_for_training(opt, processes=processes, names=names,
                         report=lambda title, dt, note: say(f"  {'compiled ' * title.startswith('hf_')}{title} in "
                                                            f"{dt:.1f} s{note}"))
    seconds = time.perf_counter() - t0
    say(f"compiled in {seconds:.1f} s")
    try:
        open(stamp, "a").close()
    except OSError:
        pass
    return seconds


# -- records of a run ---------------------------------------------------------------


def cpu_model(path="/proc/cpuinfo"):
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` or "unknown" elsewhere)."""
    try:
        with open(path) as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def write_json_atomic(path, record):
    """Write ``record`` as JSON to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader (or a benchmark collecting results) sees the old file or the
    complete new one, never a half-written one.
    """
    import json
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
