"""One Hessian-free update (Martens 2010; Martens & Sutskever 2011, 2012), as a step rule of the training loop.

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
7. validation (the loop's), and the update's :class:`~hf_symbolic.train.stats.UpdateStats`.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from hf_symbolic.errors import ArgumentError, CheckpointCorruptError, CheckpointMismatchError
from hf_symbolic.solve.backtrack import backtrack
from hf_symbolic.solve.cg import conjugate_gradient
from hf_symbolic.solve.damping import reduction_ratio
from hf_symbolic.solve.linesearch import armijo
from hf_symbolic.solve.preconditioners import make_preconditioner, operator
from hf_symbolic.train.loop import StepRule
from hf_symbolic.train.options import RESUMABLE_CHANGES, TrainOptions
from hf_symbolic.train.stats import UpdateStats

__all__ = ["HFStep"]

log = logging.getLogger("hf_symbolic.train")


def _finite(*xs) -> bool:
    return all(np.all(np.isfinite(x)) for x in xs)


class HFStep(StepRule):
    """Martens' Hessian-free update with its damping ``λ`` and CG warm start as state.

    Parameters
    ----------
    model : hf_symbolic.model.Model
        Compiled gradient and curvature products (``opt`` of :class:`~hf_symbolic.hf_optimizer`).
    options : TrainOptions
    make_evaluator : callable
        ``make_evaluator()`` returns the :class:`~hf_symbolic.evaluate.Evaluator`
        the updates of one ``train`` call use; it is closed by :meth:`end`.
    """

    name = "hf"
    vectors = ("cg_x",)
    has_damping = True
    uses_cg_dataset = True

    def __init__(self, model, options: TrainOptions, make_evaluator):
        self.model = model
        self.o = options
        self._make_evaluator = make_evaluator
        self.evaluator = None
        self.lam = float(options.initial_lambda)
        self.cg_x = np.zeros(model.layout.size, dtype=model.layout.dtype)
        self.first_cg_batches = None  # batches of the run's first CG batch: the unit of max_cg_exponent
        self.preconditioner = make_preconditioner(options.preconditioner, exponent=options.preconditioner_exponent)
        if getattr(self.preconditioner, "needs_structure", False):  # e.g. K-FAC: the model's dense layers
            self.preconditioner = self.preconditioner.with_structure(*model.kronecker_structure())

    # -- state ---------------------------------------------------------------------
    @property
    def lambda_(self) -> float:
        return self.lam

    def options_json(self) -> dict:
        return self.o.to_json()

    def state(self):
        meta = {"curvature": self.model.curvature, "lambda": self.lam}
        if self.first_cg_batches is not None:
            meta["first_cg_batches"] = self.first_cg_batches
        return {"cg_x": self.cg_x}, meta

    def check_options(self, path, meta):
        curvature = self.model.curvature
        if meta.get("curvature") != curvature:
            raise CheckpointMismatchError(f"checkpoint {path} was made with curvature={meta.get('curvature')!r}, not {curvature!r}")
        saved, now = meta["options"], self.o.to_json()
        # an option the checkpoint does not name was added later: the run that wrote it used its default
        defaults = TrainOptions().to_json()
        saved = {k: saved[k] if k in saved else defaults[k] for k in now}
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved[k] != now[k])
        if changed:
            raise CheckpointMismatchError(
                f"checkpoint {path} was made with other training options: "
                + ", ".join(f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in changed)
                + "; call train with the same arguments to resume, or use another save_progress path"
            )
        first = meta.get("first_cg_batches")
        if first is not None and not (isinstance(first, int) and not isinstance(first, bool) and first >= 1):
            raise CheckpointCorruptError(f"checkpoint {path}: 'first_cg_batches' is {first!r:.80}; "
                                         "expected an int >= 1")

    def load_state(self, state, meta):
        self.cg_x, self.lam = state["cg_x"], state["lambda"]
        self.first_cg_batches = meta.get("first_cg_batches")

    def begin(self, run):
        self.evaluator = self._make_evaluator()

    def end(self, run):
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None

    def log_update(self, s: UpdateStats) -> None:
        val = "" if s.validation is None else " valid=" + ",".join(f"{v:.5g}" for v in s.validation)
        log.info(
            "update %d: cost %.6g -> %.6g%s lambda=%.3g rho=%.3g cg=%d(%s) iterate=%d step=%.3g%s %.2fs",
            s.update, s.costs[0], s.new_cost, val, s.lambda_, s.rho, s.cg_iterations, s.cg_status,
            s.chosen_iterate, s.step, "" if s.accepted else f" rejected({s.failure or 'no decrease'})", s.seconds,
        )

    # -- the update ----------------------------------------------------------------
    def step(self, run, u):
        model, o, ev = self.model, self.o, self.evaluator
        dtype = model.layout.dtype
        t_start = time.perf_counter()
        timings = {k: 0.0 for k in ("gradient", "curvature", "cg", "backtracking", "line_search", "validation",
                                    "checkpoint")}
        theta = model.get_flat()
        lam = self.lam

        # 1. gradient on the gradient batch -----------------------------------------
        t0 = time.perf_counter()
        gbatches = [list(b) for b in run.gradient_dataset.iterate(update=True)]
        if not gbatches:
            raise ArgumentError("gradient_dataset.iterate() yielded no batch")
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
                model.set_flat(theta)
            run.nfev += len(gbatches)
            return f if math.isfinite(f) else math.inf

        def finish(failure, next_lam, **kw):
            fields_ = dict(
                rho=math.nan, cg_iterations=0, cg_status="", chosen_iterate=0, step=0.0, accepted=False,
                new_cost=f_old, grad_norm=float(np.linalg.norm(g)) if g is not None else math.nan, step_norm=0.0,
            )
            fields_.update(kw)
            self.lam = next_lam
            run.update = u
            if failure:
                log.warning("update %d rejected: %s (lambda -> %.3g, %d consecutive failures)", u, failure, next_lam,
                            run.failures + 1)
            val = run.validate(u, timings)
            stats = UpdateStats(
                update=u, costs=costs, validation=val, lambda_=lam, next_lambda=next_lam, failure=failure,
                seconds=time.perf_counter() - t_start, timings=timings, **fields_,
            )
            run.count_failure(u, failure, stats)
            return stats

        boost = o.damping(lam, math.nan)
        if not (math.isfinite(f_old) and _finite(g)):
            run.cg_dataset.update()
            return finish("nonfinite cost or gradient", boost)

        # 2-3. CG on the curvature batch ---------------------------------------------
        cbatches = [list(b) for b in run.cg_dataset.iterate(update=False)]
        if not cbatches:
            raise ArgumentError("cg_dataset.iterate() yielded no batch")
        if self.first_cg_batches is None:
            self.first_cg_batches = len(cbatches)
        max_cg = o.max_cg(len(cbatches), self.first_cg_batches)
        structural = lam * o.mu if model.has_structural_damping else 0.0
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
        if self.preconditioner is not None:
            t = time.perf_counter()
            stat = ev.statistic("cg", self.preconditioner.statistic)
            M = operator(self.preconditioner, stat, lam, dtype)
            curv_time[0] += time.perf_counter() - t
        setup_time = curv_time[0]
        t0 = time.perf_counter()
        res = conjugate_gradient(
            matvec, -g, o.cg_decay * self.cg_x, M=M, maxiter=max_cg, miniter=o.min_cg_iterations,
            eps=o.cg_epsilon, window_min=o.cg_window_min, window_frac=o.cg_window_frac,
            grid_gamma=o.cg_grid_gamma, grid_start=o.cg_grid_start,
        )
        timings["curvature"] = curv_time[0]
        timings["cg"] = time.perf_counter() - t0 - (curv_time[0] - setup_time)
        cg_kw = dict(cg_iterations=res.iterations, cg_status=res.status)
        if res.status == "nonfinite" and res.iterations == 0:
            run.cg_dataset.update()
            return finish("nonfinite curvature product", boost, **cg_kw)
        if _finite(res.x):
            self.cg_x = res.x.astype(dtype)

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
        run.cg_dataset.update()

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
        model.set_flat(new_theta)
        return finish("", next_lam, step=float(step), accepted=True, new_cost=float(new_cost),
                      step_norm=float(step * np.linalg.norm(p)), **kw)
