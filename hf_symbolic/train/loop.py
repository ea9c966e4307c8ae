"""The outer training loop, written once for every method (HF, SGD, Adam).

A method is a *step rule* (:class:`StepRule`): it makes one update and owns the
state that update carries to the next (HF's damping and CG warm start, SGD's
velocity, Adam's moments). Everything else is this loop's:

- the checkpoint lock, resuming from ``save_progress`` (all or nothing, validated
  before anything is restored) and the atomic checkpoint after every update;
- the stopping rules: ``num_updates``, ``time_budget``, ``patience`` on the
  validation cost, ``max_failures`` consecutive failed updates, a callback that
  raises ``StopIteration``, an interrupt;
- validation every ``validation_frequency`` updates and the best parameters;
- the history (in memory, and as JSON lines in ``history_file``) and the
  :class:`~hf_symbolic.train.stats.TrainResult`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time

import numpy as np

from hf_symbolic.errors import ArgumentError, CheckpointCorruptError, NumericalFailureError
from hf_symbolic.train.checkpoint import load_checkpoint, save_checkpoint
from hf_symbolic.train.checkpoint_lock import CheckpointLock
from hf_symbolic.train.options import LoopSettings
from hf_symbolic.train.progress import sgd_line, show_progress
from hf_symbolic.train.state import (
    check_dataset,
    check_signature,
    checked_state,
    parameter_signature,
    restore_dataset_states,
    save_dataset_states,
)
from hf_symbolic.train.stats import STOP_REASONS, HistoryWriter, TrainResult, UpdateStats

__all__ = ["StepRule", "LoopSettings", "Run", "run_training"]

log = logging.getLogger("hf_symbolic.train")


class StepRule:
    """One training method: makes an update and owns the state carried between updates.

    Subclasses set :attr:`name`, :attr:`vectors` (their arrays of shape ``(n,)``
    in a checkpoint) and :attr:`has_damping`, and implement :meth:`step`,
    :meth:`options_json`, :meth:`check_options`, :meth:`state` and
    :meth:`load_state`. :meth:`begin` and :meth:`end` bracket the updates of
    one call of ``train`` (an evaluator is opened and closed there).
    """

    name = "step"
    vectors: tuple = ()
    has_damping = False
    uses_cg_dataset = False
    #: The message of the NumericalFailureError after ``max_failures`` failed updates.
    failure_message = "training stopped at update {u}: {n} consecutive updates failed (last: {last}); " \
                      "the parameters are those before the failed updates"

    def options_json(self) -> dict:
        raise NotImplementedError

    def check_options(self, path, saved: dict) -> None:
        """Refuse (CheckpointMismatchError) a checkpoint made with options this rule cannot resume."""
        raise NotImplementedError

    def state(self) -> tuple[dict, dict]:
        """``(arrays, meta)``: the rule's own part of a checkpoint."""
        raise NotImplementedError

    def load_state(self, state: dict, meta: dict) -> None:
        """Take the rule's part of a validated checkpoint state (see :func:`checked_state`)."""
        raise NotImplementedError

    def begin(self, run: "Run") -> None:
        """Called once before the first update of a call of ``train``."""

    def end(self, run: "Run") -> None:
        """Called once after the last update (also after an error)."""

    def step(self, run: "Run", u: int) -> UpdateStats:
        """Make update ``u`` and return its record (``run.failures`` is the loop's)."""
        raise NotImplementedError

    @property
    def lambda_(self) -> float:
        return 0.0

    def log_update(self, s: UpdateStats) -> None:
        """Log one line for the update (the progress line of ``train``)."""
        log.info("%s", sgd_line(s))


class Run:
    """State of one training run that every method shares; the rule holds the rest."""

    def __init__(self, model, rule: StepRule, settings: LoopSettings, gradient_dataset, cg_dataset, validation):
        self.opt = self.model = model
        self.rule = rule
        self.settings = settings
        self.gradient_dataset = gradient_dataset
        self.cg_dataset = cg_dataset
        self.validation = validation
        self.update = 0
        self.best_theta = model.get_flat()
        self.best_update = 0
        self.best_validation = None
        self.failures = 0
        self.history: list[UpdateStats] = []
        self.nfev = self.njev = self.nhev = 0

    # -- validation -------------------------------------------------------------
    def validate(self, u: int, timings: dict, force: bool = False):
        """Validation costs at update ``u`` (None when it is not a validation update); keeps the best.

        ``force`` validates whatever ``u``: the loop's last update when
        ``validation_frequency`` skipped it.
        """
        validation = self.validation
        if validation is None or (u % self.settings.validation_frequency and not force):
            return None
        t0 = time.perf_counter()
        if callable(validation):
            vals = tuple(float(v) for v in validation())
        else:
            batches = [list(b) for b in validation.iterate(update=False)]
            costs = [self.model.cost(b) for b in batches]
            vals = tuple(float(np.mean([c[i] for c in costs])) for i in range(len(costs[0])))
            self.nfev += 1
        timings["validation"] = time.perf_counter() - t0
        if not vals:
            raise ArgumentError("validation returned no cost")
        if math.isfinite(vals[0]) and (self.best_validation is None or vals[0] < self.best_validation[0]):
            self.best_validation = vals
            self.best_update = u
            self.best_theta = self.model.get_flat()
        return vals

    def count_failure(self, u: int, failure: str, stats: UpdateStats | None = None) -> None:
        """Count a failed update (``failure`` non-empty) or reset the count; stop after ``max_failures``."""
        if not failure:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.settings.max_failures:
            if stats is not None:
                self.history.append(stats)
            raise NumericalFailureError(self.rule.failure_message.format(u=u, n=self.failures, last=failure))

    # -- checkpoint ---------------------------------------------------------------
    def to_checkpoint(self, datasets):
        arrays, meta = self.rule.state()
        arrays = {"theta": self.model.get_flat(), "best_theta": self.best_theta, **arrays}
        meta = {
            "signature": parameter_signature(self.model),
            "options": self.rule.options_json(),
            **meta,
            "update": self.update,
            "best_update": self.best_update,
            "best_validation": None if self.best_validation is None else list(self.best_validation),
            "failures": self.failures,
            "history": [s.to_json() for s in self.history],
            "datasets": {},
        }
        save_dataset_states(datasets, arrays, meta["datasets"])
        return arrays, meta

    def from_checkpoint(self, path, arrays, meta, datasets):
        check_signature(path, meta, parameter_signature(self.model))
        saved = meta.get("options")
        if not isinstance(saved, dict):
            raise CheckpointCorruptError(f"checkpoint {path}: 'options' is {saved!r:.80}; expected an object")
        self.rule.check_options(path, meta)
        layout = self.model.layout
        state = checked_state(path, arrays, meta, layout.size, layout.dtype, vectors=self.rule.vectors,
                              damping=self.rule.has_damping)
        # everything validated that can be: now restore (the datasets all or nothing, then the rest)
        restore_dataset_states(datasets, arrays, meta["datasets"], path)
        self.model.set_flat(state["theta"])
        self.best_theta = state["best_theta"]
        self.update, self.best_update = state["update"], state["best_update"]
        self.best_validation, self.failures = state["best_validation"], state["failures"]
        self.history = state["history"]
        self.rule.load_state(state, meta)

    def result(self, status: str, x) -> TrainResult:
        return TrainResult(
            x=np.array(x, copy=True),
            params=self.model.unflatten(x),
            status=status,
            message=STOP_REASONS[status],
            success=status not in ("interrupted", "numerical_failure"),
            updates=self.update,
            best_update=self.best_update if self.best_validation is not None else self.update,
            best_validation=self.best_validation,
            history=tuple(self.history),
            lambda_=self.rule.lambda_,
            nfev=self.nfev,
            njev=self.njev,
            nhev=self.nhev,
        )


def run_training(model, rule: StepRule, settings: LoopSettings, gradient_dataset, cg_dataset=None, *,
                 validation=None, save_progress=None, callback=None, history_file=None, environment=None,
                 verbose=None) -> TrainResult:
    """Train ``model`` with ``rule``; the result is also stored as ``model.result``.

    Parameters
    ----------
    environment : context manager, optional
        Entered around the updates (BLAS threads, memory reuse), after the
        checkpoint is loaded.
    verbose : bool or None
        One line per update on stderr: None only when the caller configured no
        logging (:mod:`hf_symbolic.train.progress`), False never, True always.
    """
    check_dataset(gradient_dataset, "gradient_dataset")
    if cg_dataset is not None:
        check_dataset(cg_dataset, "cg_dataset")
    if validation is not None and not callable(validation):
        check_dataset(validation, "validation")
    if callback is not None and not callable(callback):
        raise ArgumentError(f"callback must be callable, got {type(callback).__name__}")

    model.result = None
    run = Run(model, rule, settings, gradient_dataset, cg_dataset, validation)
    datasets = {"gradient_dataset": gradient_dataset}
    if cg_dataset is not None and rule.uses_cg_dataset:
        datasets["cg_dataset"] = cg_dataset
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
            log.info("resumed from %s at update %d", save_progress, run.update)
        history = HistoryWriter(history_file, truncate_to=run.update if resumed else None) if history_file else None
        with environment if environment is not None else contextlib.nullcontext(), show_progress(verbose):
            rule.begin(run)
            try:
                return _loop(run, save_progress, callback, history, datasets)
            finally:
                rule.end(run)
    finally:
        if lock is not None:
            lock.release()


def _loop(run: Run, save_progress, callback, history, datasets):
    model, o = run.model, run.settings
    start = time.perf_counter()
    status = "num_updates"
    first_update = run.update
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
            stats = run.rule.step(run, run.update + 1)
            run.history.append(stats)
            if history is not None:
                history.write(stats)
            if save_progress is not None:
                t0 = time.perf_counter()
                arrays, meta = run.to_checkpoint(datasets)
                save_checkpoint(save_progress, arrays, meta)
                stats.timings["checkpoint"] = time.perf_counter() - t0
            run.rule.log_update(stats)
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
        model.result = run.result("numerical_failure", model.get_flat())
        raise
    if run.update > first_update and status != "interrupted" and run.update % o.validation_frequency:
        # The last update was not validated (validation_frequency > 1): validate it now, so that the
        # updates since the last validation can still be the best (not written to the checkpoint, so a
        # resumed run picks its best among the same validated updates as an uninterrupted one).
        vals = run.validate(run.update, {}, force=True)
        if vals is not None:
            log.info("update %d (the last): validation %s", run.update, ",".join(f"{v:.5g}" for v in vals))
    x = run.best_theta if run.best_validation is not None else model.get_flat()
    model.set_flat(x)
    model.result = run.result(status, x)
    return model.result
