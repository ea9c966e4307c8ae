"""The Hessian-free training loop (Martens 2010; Martens & Sutskever 2011, 2012).

One update:

1. gradient ``g`` and the costs on the gradient batch;
2. the damped curvature ``B = G + λI (+ λμ·structural)`` on the CG batch;
3. preconditioned CG on ``B p = -g`` from ``cg_decay ×`` the previous solution,
   stopped by Martens' relative-progress rule, iterates kept on a
   ``ceil(γ^j)`` grid;
4. backtracking over the kept iterates on the gradient batch's objective;
5. the reduction ratio ``ρ`` of that step against the *undamped* quadratic
   ``q(p) = gᵀp + ½ pᵀGp`` and the Levenberg-Marquardt rule for ``λ`` (which
   rises at least by the boost when a curvature product inside CG was not
   finite; a non-finite cost or gradient, a first curvature product or a cost
   after the step that is not finite rejects the update and raises ``λ``);
6. an Armijo line search along the chosen step; the parameters change only
   when the new cost is finite;
7. validation, early stopping, history record, checkpoint, callback.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .cg import backtrack, conjugate_gradient
from .checkpoint import CheckpointLock, load_checkpoint, save_checkpoint
from .damping import DampingRule, reduction_ratio
from .errors import (
    ArgumentError,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    NumericalFailureError,
)
from .linesearch import armijo
from .stats import STOP_REASONS, HistoryWriter, TrainResult, UpdateStats

__all__ = ["TrainOptions", "train"]

log = logging.getLogger("hf_symbolic.train")

#: Options whose change between a run and its resumption is allowed (they do not alter past updates).
_RESUMABLE_CHANGES = {"num_updates", "patience", "time_budget", "max_failures", "verbose"}


@dataclass(frozen=True)
class TrainOptions:
    """Every setting of :meth:`hf_optimizer.train` (see its docstring)."""

    initial_lambda: float = 0.1
    mu: float = 0.03
    global_backtracking: bool = False
    preconditioner: bool = False
    max_cg_iterations: int = 250
    num_updates: int = 100
    validation_frequency: int = 1
    patience: float = math.inf
    cg_decay: float = 0.95
    min_cg_iterations: int = 1
    cg_epsilon: float = 5e-4
    cg_window_min: int = 10
    cg_window_frac: float = 0.1
    cg_grid_gamma: float = 1.3
    cg_grid_start: float = 1.0
    backtracking: bool = True
    line_search: bool = True
    armijo_c: float = 1e-2
    line_search_shrink: float = 0.8
    line_search_tries: int = 60
    preconditioner_exponent: float = 0.75
    damping: DampingRule = field(default_factory=DampingRule)
    max_failures: int = 5
    time_budget: float | None = None
    verbose: bool | None = None  # hf_symbolic.train.progress

    def __post_init__(self):
        def bad(name, value, expected):
            raise ArgumentError(f"{name}={value!r} is invalid: expected {expected}")

        lam = self.initial_lambda
        if not (isinstance(lam, (int, float, np.floating)) and math.isfinite(lam) and lam > 0):
            bad("initial_lambda", lam, "a finite number > 0")
        if not (math.isfinite(self.mu) and self.mu >= 0):
            bad("mu", self.mu, "a finite number >= 0")
        for name in ("max_cg_iterations", "min_cg_iterations", "validation_frequency", "line_search_tries", "max_failures", "cg_window_min"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                bad(name, v, "an integer >= 1")
        if not isinstance(self.num_updates, (int, np.integer)) or isinstance(self.num_updates, bool) or self.num_updates < 0:
            bad("num_updates", self.num_updates, "an integer >= 0")
        if self.min_cg_iterations > self.max_cg_iterations:
            bad("min_cg_iterations", self.min_cg_iterations, f"at most max_cg_iterations={self.max_cg_iterations}")
        if not (0 <= self.cg_decay <= 1):
            bad("cg_decay", self.cg_decay, "a number in [0, 1]")
        if not (self.patience > 0):
            bad("patience", self.patience, "a number > 0 (numpy.inf for none)")
        if not (0 < self.armijo_c < 1):
            bad("armijo_c", self.armijo_c, "a number in (0, 1)")
        if not (0 < self.line_search_shrink < 1):
            bad("line_search_shrink", self.line_search_shrink, "a number in (0, 1)")
        if not (0 <= self.preconditioner_exponent <= 1):
            bad("preconditioner_exponent", self.preconditioner_exponent, "a number in [0, 1]")
        if not (self.cg_epsilon >= 0):
            bad("cg_epsilon", self.cg_epsilon, "a number >= 0")
        if self.time_budget is not None and not (self.time_budget > 0):
            bad("time_budget", self.time_budget, "None or a number of seconds > 0")
        if not isinstance(self.damping, DampingRule):
            bad("damping", self.damping, "a hf_symbolic.damping.DampingRule")

    def to_json(self) -> dict:
        d = asdict(self)
        d["patience"] = None if math.isinf(self.patience) else self.patience
        return d


def parameter_signature(opt):
    """Names, shapes and dtypes of the parameters: what a checkpoint must match."""
    return [[x.name or f"p{i}", list(s), str(x.dtype)] for i, (x, s) in enumerate(zip(opt.p, opt.layout.shapes))]


def save_dataset_states(datasets, arrays, states):
    """Store each dataset's ``state_dict()``: JSON part in ``states[name]``, arrays as ``arrays["name/key"]``."""
    for name, ds in datasets.items():
        if ds is not None and hasattr(ds, "state_dict"):
            st = ds.state_dict()
            states[name] = st["json"]
            for k, v in st["arrays"].items():
                arrays[f"{name}/{k}"] = v


def check_signature(path, meta, signature):
    """Refuse a checkpoint whose parameters (names, shapes, dtypes) are not ``signature``."""
    if meta.get("signature") != signature:
        raise CheckpointMismatchError(
            f"checkpoint {path} belongs to another model: its parameters are {meta.get('signature')!r:.200}, "
            f"this model's are {signature}"
        )


def restore_dataset_states(datasets, arrays, states, path=None):
    """Inverse of :func:`save_dataset_states`, all or nothing.

    Each dataset validates its own state, so a later one can still refuse after
    an earlier one was restored: those are then put back as they were.  A
    refusal (a :class:`~hf_symbolic.errors.CheckpointError`) is raised again
    with the dataset's name, and the checkpoint ``path`` when given, in front
    of its message.
    """
    restored = []
    try:
        for name, ds in datasets.items():
            st = states.get(name)
            if ds is None or st is None or not hasattr(ds, "load_state_dict"):
                continue
            prefix = f"{name}/"
            before = ds.state_dict() if hasattr(ds, "state_dict") else None
            own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            try:
                ds.load_state_dict({"json": st, "arrays": own})
            except CheckpointError as exc:
                where = f"checkpoint {path}: {name}" if path is not None else name
                raise type(exc)(f"{where}: {exc}") from exc
            restored.append((ds, before))
    except BaseException:
        for ds, before in reversed(restored):
            if before is not None:
                ds.load_state_dict(before)
        raise


def _check_dataset(ds, name):
    if ds is None or not hasattr(ds, "iterate") or not hasattr(ds, "update"):
        raise ArgumentError(
            f"{name} must be a dataset with iterate(update) and update() methods "
            f"(hf_symbolic.SequenceDataset or BatchDataset), got {type(ds).__name__}"
        )


def _finite(*xs) -> bool:
    return all(np.all(np.isfinite(x)) for x in xs)


class _Run:
    """State of one training run; everything a checkpoint must hold lives here."""

    def __init__(self, opt, opts: TrainOptions):
        self.opt = opt
        self.o = opts
        n = opt.layout.size
        self.update = 0
        self.lam = float(opts.initial_lambda)
        self.cg_x = np.zeros(n, dtype=opt.layout.dtype)
        self.best_theta = opt.get_flat()
        self.best_update = 0
        self.best_validation = None
        self.failures = 0
        self.history: list[UpdateStats] = []
        self.nfev = self.njev = self.nhev = 0

    # -- checkpoint (de)serialization -----------------------------------------
    def signature(self):
        return parameter_signature(self.opt)

    def to_checkpoint(self, datasets):
        arrays = {"theta": self.opt.get_flat(), "best_theta": self.best_theta, "cg_x": self.cg_x}
        meta = {
            "signature": self.signature(),
            "curvature": self.opt.curvature,
            "options": self.o.to_json(),
            "update": self.update,
            "lambda": self.lam,
            "best_update": self.best_update,
            "best_validation": None if self.best_validation is None else list(self.best_validation),
            "failures": self.failures,
            "history": [s.to_json() for s in self.history],
            "datasets": {},
        }
        save_dataset_states(datasets, arrays, meta["datasets"])
        return arrays, meta

    def from_checkpoint(self, path, arrays, meta, datasets):
        check_signature(path, meta, self.signature())
        if meta.get("curvature") != self.opt.curvature:
            raise CheckpointMismatchError(f"checkpoint {path} was made with curvature={meta.get('curvature')!r}, not {self.opt.curvature!r}")
        saved = meta.get("options", {})
        if not isinstance(saved, dict):
            raise CheckpointCorruptError(f"checkpoint {path}: 'options' is {saved!r:.80}; expected an object")
        now = self.o.to_json()
        changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k])
        if changed:
            raise CheckpointMismatchError(
                f"checkpoint {path} was made with other training options: "
                + ", ".join(f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in changed)
                + "; call train with the same arguments to resume, or use another save_progress path"
            )
        state = _checked_state(path, arrays, meta, self.opt.layout.size, self.opt.layout.dtype)
        # everything validated that can be: now restore (the datasets all or nothing, then the rest)
        restore_dataset_states(datasets, arrays, meta["datasets"], path)
        self.opt.set_flat(state["theta"])
        self.best_theta, self.cg_x = state["best_theta"], state["cg_x"]
        self.update, self.lam, self.best_update = state["update"], state["lambda"], state["best_update"]
        self.best_validation, self.failures = state["best_validation"], state["failures"]
        self.history = state["history"]


def _checked_state(path, arrays, meta, n, dtype, vectors=("cg_x",), damping=True):
    """The training state of a checkpoint, validated before anything is restored.

    The digest only shows that a file is as it was written; a file written by
    other means, with its digest recomputed, must still hold a state a run can
    continue from: finite parameter vectors of the parameters' dtype, counters
    that are ints in range, a finite positive lambda, one history record per update.

    Parameters
    ----------
    vectors : tuple of str, default ("cg_x",)
        The method's own arrays of shape ``(n,)``, checked like ``theta`` and
        ``best_theta`` (HF's CG warm start; SGD passes ``("velocity",)``).
    damping : bool, default True
        Whether the state holds a damping ``lambda`` (HF does, SGD does not).

    Raises
    ------
    CheckpointMismatchError
        A parameter vector is missing or not of shape ``(n,)``.
    CheckpointCorruptError
        Any other field is missing or invalid; the message names it, its value
        and what was expected.
    """
    def bad(what, value, expected):
        raise CheckpointCorruptError(f"checkpoint {path}: {what} is {value!r:.80}; expected {expected}")

    def integer(key, lo, hi=None):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            bad(repr(key), v, f"an int >= {lo}" + ("" if hi is None else f" and <= {hi}"))
        return v

    state = {}
    for key in ("theta", "best_theta", *vectors):
        a = arrays.get(key)
        if a is None or a.shape != (n,):
            raise CheckpointMismatchError(f"checkpoint {path}: array {key!r} missing or not of shape ({n},)")
        if a.dtype != dtype:
            bad(f"the dtype of array {key!r}", str(a.dtype), f"{dtype}, the parameters' dtype")
        if not np.all(np.isfinite(a)):
            raise CheckpointCorruptError(f"checkpoint {path}: array {key!r} holds {int(np.sum(~np.isfinite(a)))} "
                                         "non-finite value(s); expected finite values")
        state[key] = a.copy()
    state["update"] = update = integer("update", 0)
    state["best_update"] = integer("best_update", 0, update)
    state["failures"] = integer("failures", 0)
    if damping:
        lam = meta.get("lambda")
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (math.isfinite(lam) and lam > 0):
            bad("'lambda'", lam, "a finite number > 0")
        state["lambda"] = float(lam)
    bv = meta.get("best_validation")
    if bv is not None and not (isinstance(bv, list) and bv
                               and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bv)):
        bad("'best_validation'", bv, "null or a non-empty list of numbers")
    if bv is not None and not math.isfinite(bv[0]):  # only a finite first cost is ever recorded as the best
        bad("'best_validation'[0]", bv[0], "a finite number (the best validation cost)")
    state["best_validation"] = None if bv is None else tuple(float(v) for v in bv)
    if not isinstance(meta.get("datasets"), dict):
        bad("'datasets'", meta.get("datasets"), "an object holding the datasets' states")
    records = meta.get("history")
    if not isinstance(records, list):
        bad("'history'", records, "a list of update records")
    if len(records) != update:
        raise CheckpointCorruptError(f"checkpoint {path}: 'history' holds {len(records)} update records but "
                                     f"'update' is {update}; expected one record per update")
    try:
        history = [UpdateStats.from_json(d) for d in records]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorruptError(f"checkpoint {path}: 'history' holds a malformed update record: {exc!r}") from exc
    if [s.update for s in history] != list(range(1, update + 1)):
        bad("the update numbering of 'history'", [s.update for s in history], f"1, 2, ..., {update}")
    state["history"] = history
    return state


def _mean_costs(opt, batches):
    costs = [opt.cost(b) for b in batches]
    return tuple(float(np.mean([c[i] for c in costs])) for i in range(len(costs[0])))


def train(opt, gradient_dataset, cg_dataset, opts: TrainOptions, *, validation=None, save_progress=None, callback=None,
          history_file=None, blas_threads=1, workers=1, client=None, reuse_memory=True):
    """Run HF on ``opt``; see :meth:`hf_optimizer.train` for the meaning of every argument."""
    if client is not None:
        if workers is not None and workers != 1:
            raise ArgumentError(f"workers={workers!r} and client= were both given: the Dask client's workers "
                                "replace the forked ones, so pass workers=1 with a client")
        from .distributed import check_client

        check_client(client)
    _check_dataset(gradient_dataset, "gradient_dataset")
    _check_dataset(cg_dataset, "cg_dataset")
    if validation is not None and not callable(validation):
        _check_dataset(validation, "validation")
    if callback is not None and not callable(callback):
        raise ArgumentError(f"callback must be callable, got {type(callback).__name__}")

    opt.result = None
    run = _Run(opt, opts)
    datasets = {"gradient_dataset": gradient_dataset, "cg_dataset": cg_dataset}
    if validation is not None and not callable(validation):
        datasets["validation"] = validation

    lock = None
    resumed = False
    if save_progress is not None:
        save_progress = os.fspath(save_progress)
        missing = [n for n, d in datasets.items() if not hasattr(d, "state_dict")]
        if missing:
            log.warning("%s cannot save their position: a resumed run will not be identical", missing)
        lock = CheckpointLock(save_progress).acquire()
    try:
        if save_progress is not None and os.path.exists(save_progress):
            arrays, meta = load_checkpoint(save_progress)
            run.from_checkpoint(save_progress, arrays, meta, datasets)
            resumed = True
            log.info("resumed from %s at update %d (lambda=%.4g)", save_progress, run.update, run.lam)
        history = HistoryWriter(history_file, truncate_to=run.update if resumed else None) if history_file else None
        from .backend import blas_threads as _limit
        from .memory import reuse_freed_memory
        from .parallel import make_evaluator
        from .train.progress import show_progress

        with _limit(blas_threads), reuse_freed_memory(bool(reuse_memory)), show_progress(opts.verbose):
            if client is not None:
                from .distributed import DaskEvaluator

                run.evaluator = DaskEvaluator(opt, client, blas_threads=blas_threads)
            else:
                run.evaluator = make_evaluator(opt, workers)
            try:
                return _loop(run, gradient_dataset, cg_dataset, validation, save_progress, callback, history, datasets)
            finally:
                run.evaluator.close()
    finally:
        if lock is not None:
            lock.release()


def _loop(run, gradient_dataset, cg_dataset, validation, save_progress, callback, history, datasets):
    opt, o = run.opt, run.o
    dtype = opt.layout.dtype
    start = time.perf_counter()
    status = "num_updates"
    if run.update >= o.num_updates:
        status = "already_done" if run.update > 0 else "num_updates"
    try:
        while run.update < o.num_updates:
            if o.time_budget is not None and time.perf_counter() - start >= o.time_budget:
                status = "time_budget"
                break
            if run.update - run.best_update >= o.patience and run.best_validation is not None:
                status = "patience"
                break
            stats = _one_update(run, gradient_dataset, cg_dataset, validation, dtype)
            run.history.append(stats)
            if history is not None:
                history.write(stats)
            if save_progress is not None:
                t0 = time.perf_counter()
                arrays, meta = run.to_checkpoint(datasets)
                save_checkpoint(save_progress, arrays, meta)
                stats.timings["checkpoint"] = time.perf_counter() - t0
            _log_update(stats)
            if callback is not None:
                try:
                    callback(stats)
                except StopIteration:
                    status = "callback"
                    break
        else:
            if run.update - run.best_update >= o.patience and run.best_validation is not None:
                status = "patience"
    except KeyboardInterrupt:
        status = "interrupted"
        log.warning("interrupted at update %d; parameters restored to the best so far", run.update + 1)
    except NumericalFailureError:
        opt.result = _result(run, "numerical_failure", opt.get_flat())
        raise
    x = run.best_theta if run.best_validation is not None else opt.get_flat()
    opt.set_flat(x)
    opt.result = _result(run, status, x)
    return opt.result


def _result(run, status, x):
    opt = run.opt
    return TrainResult(
        x=x.copy(),
        params=opt.unflatten(x),
        status=status,
        message=STOP_REASONS[status],
        success=status not in ("interrupted", "numerical_failure"),
        updates=run.update,
        best_update=run.best_update if run.best_validation is not None else run.update,
        best_validation=run.best_validation,
        history=tuple(run.history),
        lambda_=run.lam,
        nfev=run.nfev,
        njev=run.njev,
        nhev=run.nhev,
    )


def _log_update(s: UpdateStats):
    val = "" if s.validation is None else " valid=" + ",".join(f"{v:.5g}" for v in s.validation)
    log.info(
        "update %d: cost %.6g -> %.6g%s lambda=%.3g rho=%.3g cg=%d(%s) iterate=%d step=%.3g%s %.2fs",
        s.update, s.costs[0], s.new_cost, val, s.lambda_, s.rho, s.cg_iterations, s.cg_status,
        s.chosen_iterate, s.step, "" if s.accepted else f" rejected({s.failure or 'no decrease'})", s.seconds,
    )


def _one_update(run, gradient_dataset, cg_dataset, validation, dtype):
    opt, o = run.opt, run.o
    t_start = time.perf_counter()
    timings = {k: 0.0 for k in ("gradient", "curvature", "cg", "backtracking", "line_search", "validation", "checkpoint")}
    u = run.update + 1
    theta = opt.get_flat()
    lam = run.lam

    # 1. gradient on the gradient batch -----------------------------------------
    t0 = time.perf_counter()
    gbatches = [list(b) for b in gradient_dataset.iterate(update=True)]
    if not gbatches:
        raise ArgumentError("gradient_dataset.iterate() yielded no batch")
    ev = run.evaluator
    ev.set_theta(theta)
    ev.load("gradient", gbatches)
    g, costs = ev.gradient("gradient")
    run.njev += len(gbatches)
    g = g.astype(dtype)
    costs = tuple(float(c) for c in costs)
    f_old = costs[0]
    timings["gradient"] = time.perf_counter() - t0

    def objective(p):
        """costs[0] on the gradient batch at theta + p (parameters restored afterwards)."""
        try:
            ev.set_theta(theta + p)
            f = ev.cost("gradient")[0]
        finally:
            opt.set_flat(theta)
        run.nfev += len(gbatches)
        return f if math.isfinite(f) else math.inf

    def finish(failure, next_lam, **kw):
        fields_ = dict(
            rho=math.nan, cg_iterations=0, cg_status="", chosen_iterate=0, step=0.0, accepted=False,
            new_cost=f_old, grad_norm=float(np.linalg.norm(g)) if g is not None else math.nan, step_norm=0.0,
        )
        fields_.update(kw)
        run.lam = next_lam
        run.update = u
        if failure:
            run.failures += 1
            log.warning("update %d rejected: %s (lambda -> %.3g, %d consecutive failures)", u, failure, next_lam, run.failures)
        else:
            run.failures = 0
        val = _validate(run, validation, u, timings)
        stats = UpdateStats(
            update=u, costs=costs, validation=val, lambda_=lam, next_lambda=next_lam, failure=failure,
            seconds=time.perf_counter() - t_start, timings=timings, **fields_,
        )
        if run.failures >= o.max_failures:
            run.history.append(stats)
            raise NumericalFailureError(
                f"training stopped at update {u}: {run.failures} consecutive updates failed (last: {failure}); "
                f"the parameters are those before the failed updates"
            )
        return stats

    boost = o.damping(lam, math.nan)
    if not (math.isfinite(f_old) and _finite(g)):
        cg_dataset.update()
        return finish("nonfinite cost or gradient", boost)

    # 2-3. CG on the curvature batch ---------------------------------------------
    cbatches = [list(b) for b in cg_dataset.iterate(update=False)]
    if not cbatches:
        raise ArgumentError("cg_dataset.iterate() yielded no batch")
    structural = lam * o.mu if opt.has_structural_damping else 0.0
    t = time.perf_counter()
    ev.load("cg", cbatches)
    ev.begin_cg("cg", structural)
    curv_time = [time.perf_counter() - t]

    def matvec(v):
        t = time.perf_counter()
        out = ev.matvec(v)
        run.nhev += len(cbatches)
        curv_time[0] += time.perf_counter() - t
        return out + np.asarray(lam, dtype=out.dtype) * v

    M = None
    if o.preconditioner:
        t = time.perf_counter()
        sq = ev.per_case_squared_gradient("cg")
        M = ((sq + lam) ** o.preconditioner_exponent).astype(dtype)
        curv_time[0] += time.perf_counter() - t
    setup_time = curv_time[0]
    t0 = time.perf_counter()
    res = conjugate_gradient(
        matvec, -g, o.cg_decay * run.cg_x, M=M, maxiter=o.max_cg_iterations, miniter=o.min_cg_iterations,
        eps=o.cg_epsilon, window_min=o.cg_window_min, window_frac=o.cg_window_frac,
        grid_gamma=o.cg_grid_gamma, grid_start=o.cg_grid_start,
    )
    timings["curvature"] = curv_time[0]
    timings["cg"] = time.perf_counter() - t0 - (curv_time[0] - setup_time)
    cg_kw = dict(cg_iterations=res.iterations, cg_status=res.status)
    if res.status == "nonfinite" and res.iterations == 0:
        cg_dataset.update()
        return finish("nonfinite curvature product", boost, **cg_kw)
    if _finite(res.x):
        run.cg_x = res.x.astype(dtype)

    # 4. backtracking over the kept iterates ----------------------------------------
    t0 = time.perf_counter()
    if o.backtracking:
        bt = backtrack(list(res.iterates), objective, global_search=o.global_backtracking)
        p, f_new, chosen = bt.step, bt.value, res.iterate_indices[bt.index]
    else:
        p, chosen = res.x, res.iterations
        f_new = objective(p)
    timings["backtracking"] = time.perf_counter() - t0

    # 5. reduction ratio with the undamped model, Levenberg-Marquardt ----------------
    t = time.perf_counter()
    ev.set_theta(theta)
    gp = ev.plain_product("cg", p)
    run.nhev += len(cbatches)
    timings["curvature"] += time.perf_counter() - t
    slope = float(np.dot(g.astype(np.float64), p.astype(np.float64)))
    q = slope + 0.5 * float(np.dot(p.astype(np.float64), gp.astype(np.float64)))
    rho = reduction_ratio(f_new, f_old, q)
    next_lam = o.damping(lam, rho)
    if res.status == "nonfinite":  # a curvature product failed inside CG: trust the quadratic model less
        next_lam = max(next_lam, boost)
    cg_dataset.update()

    # 6. line search ----------------------------------------------------------------
    t0 = time.perf_counter()
    if o.line_search:
        ls = armijo(lambda a: objective(a * p), f_old, slope, c=o.armijo_c, shrink=o.line_search_shrink,
                    max_tries=o.line_search_tries, known_values={1.0: f_new})
        step, new_cost = ls.step, ls.value
    else:
        step, new_cost = (1.0, f_new) if math.isfinite(f_new) else (0.0, f_old)
    timings["line_search"] = time.perf_counter() - t0

    kw = dict(rho=rho, chosen_iterate=int(chosen), **cg_kw)
    if step == 0.0 or not math.isfinite(new_cost):
        failure = "" if math.isfinite(f_new) else "nonfinite cost after the step"
        return finish(failure, next_lam, **kw)
    new_theta = theta + np.asarray(step, dtype=dtype) * p
    if not _finite(new_theta):
        return finish("nonfinite parameters after the step", boost, **kw)
    opt.set_flat(new_theta)
    return finish("", next_lam, step=float(step), accepted=True, new_cost=float(new_cost),
                  step_norm=float(step * np.linalg.norm(p)), **kw)


def _validate(run, validation, u, timings):
    o = run.o
    if validation is None or u % o.validation_frequency:
        return None
    t0 = time.perf_counter()
    if callable(validation):
        vals = tuple(float(v) for v in validation())
    else:
        vals = _mean_costs(run.opt, [list(b) for b in validation.iterate(update=False)])
        run.nfev += 1
    timings["validation"] = time.perf_counter() - t0
    if not vals:
        raise ArgumentError("validation returned no cost")
    if math.isfinite(vals[0]) and (run.best_validation is None or vals[0] < run.best_validation[0]):
        run.best_validation = vals
        run.best_update = u
        run.best_theta = run.opt.get_flat()
    return vals
