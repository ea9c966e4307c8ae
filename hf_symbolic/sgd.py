"""Stochastic gradient descent with momentum: the first-order baseline, with HF's interface.

:class:`sgd_optimizer` takes the same constructor arguments as
:class:`~hf_symbolic.hf_optimizer` and a :meth:`~sgd_optimizer.train` with the
same datasets, validation, early stopping, checkpoints, callback and result
record, so that comparing HF with SGD is one switch in a script.
"""

from __future__ import annotations

import logging
import math
import os
import time

import numpy as np

from .checkpoint import CheckpointLock, load_checkpoint, save_checkpoint
from .errors import (
    ArgumentError,
    CheckpointCorruptError,
    CheckpointMismatchError,
    NumericalFailureError,
)
from .optimizer import hf_optimizer
from .stats import STOP_REASONS, HistoryWriter, TrainResult, UpdateStats
from .train import progress
from .training import (
    _check_dataset,
    check_signature,
    _checked_state,
    _validate,
    parameter_signature,
    restore_dataset_states,
    save_dataset_states,
)

__all__ = ["sgd_optimizer"]

log = logging.getLogger("hf_symbolic.sgd")


class _SGDRun:
    """The part of the HF run state that validation bookkeeping needs."""

    def __init__(self, opt, validation_frequency):
        from types import SimpleNamespace

        self.opt = opt
        self.o = SimpleNamespace(validation_frequency=validation_frequency)
        self.best_theta = opt.get_flat()
        self.best_update = 0
        self.best_validation = None
        self.nfev = 0


def _check_same_run(path, meta, signature, options):
    """Refuse a checkpoint of another model or another SGD configuration.

    Raises
    ------
    CheckpointMismatchError
        The parameters' names, shapes or dtypes differ, the checkpoint was not
        written by SGD training, or an SGD option differs; the message lists them.
    CheckpointCorruptError
        ``options`` is not a JSON object.
    """
    check_signature(path, meta, signature)
    saved = meta.get("options")
    if not isinstance(saved, dict):
        raise CheckpointCorruptError(f"checkpoint {path}: 'options' is {saved!r:.80}; expected an object")
    if saved.get("method") != options["method"]:
        raise CheckpointMismatchError(
            f"checkpoint {path} was not written by SGD training: its options hold method={saved.get('method')!r:.80}, "
            f"expected {options['method']!r}; use another save_progress path"
        )
    changed = sorted(k for k in set(options) | set(saved) if saved.get(k) != options.get(k))
    if changed:
        raise CheckpointMismatchError(
            f"checkpoint {path} was made with other SGD options: "
            + ", ".join(f"{k}={saved.get(k)!r:.80} (now {options.get(k)!r})" for k in changed)
            + "; call train with the same arguments to resume, or use another save_progress path"
        )


class sgd_optimizer(hf_optimizer):  # noqa: N801
    """SGD with (heavy-ball) momentum on the same model specification as :class:`hf_optimizer`.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt
    >>> from hf_symbolic import BatchDataset
    >>> w = pytensor.shared(np.zeros(1), name="w")
    >>> x, y = pt.matrix("x"), pt.vector("y")
    >>> s = pt.dot(x, w)
    >>> opt = sgd_optimizer([w], [x, y], s, [pt.mean((s - y) ** 2)], mode="FAST_COMPILE")
    >>> data = BatchDataset([np.ones((4, 1)), np.full(4, 2.0)], 4, seed=0)
    >>> params = opt.train(data, learning_rate=0.1, momentum=0.0, num_updates=50)
    >>> round(float(params[0][0]), 4)
    2.0
    """

    def train(
        self,
        gradient_dataset,
        cg_dataset=None,
        learning_rate=0.01,
        momentum=0.9,
        num_updates=100,
        validation=None,
        validation_frequency=1,
        patience=np.inf,
        save_progress=None,
        *,
        steps_per_update=1,
        callback=None,
        history_file=None,
        time_budget=None,
        max_failures=5,
        verbose=None,
    ):
        """Train with SGD. One *update* is ``steps_per_update`` passes over ``gradient_dataset.iterate()``,
        one parameter step per batch. ``cg_dataset`` is accepted and ignored (interface parity with HF).
        ``verbose`` as for HF (:mod:`hf_symbolic.train.progress`): one line per update on stderr by default
        when logging is not configured.

        Returns the best parameters (list of arrays); the record is in :attr:`result`.
        """
        _check_dataset(gradient_dataset, "gradient_dataset")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ArgumentError(f"learning_rate={learning_rate!r} is invalid: expected a finite number > 0")
        if not (0 <= momentum < 1):
            raise ArgumentError(f"momentum={momentum!r} is invalid: expected a number in [0, 1)")
        for name, v in (("steps_per_update", steps_per_update), ("validation_frequency", validation_frequency)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ArgumentError(f"{name}={v!r} is invalid: expected an integer >= 1")
        run = _SGDRun(self, validation_frequency)
        velocity = np.zeros(self.layout.size, dtype=self.layout.dtype)
        update = 0
        failures = 0
        history = []
        datasets = {"gradient_dataset": gradient_dataset}
        if validation is not None and not callable(validation):
            datasets["validation"] = validation
        signature = parameter_signature(self)
        options = dict(method="sgd", learning_rate=learning_rate, momentum=momentum, steps_per_update=steps_per_update)
        lock = shown = None
        if save_progress is not None:
            save_progress = os.fspath(save_progress)
            lock = CheckpointLock(save_progress).acquire()
        try:
            shown = progress.start(verbose, log.name)
            resumed = False
            if save_progress is not None and os.path.exists(save_progress):
                arrays, meta = load_checkpoint(save_progress)
                _check_same_run(save_progress, meta, signature, options)
                state = _checked_state(save_progress, arrays, meta, self.layout.size, self.layout.dtype,
                                       vectors=("velocity",), damping=False)
                # everything validated that can be: now restore (the datasets all or nothing, then the rest)
                restore_dataset_states(datasets, arrays, meta["datasets"], save_progress)
                self.set_flat(state["theta"])
                velocity, run.best_theta = state["velocity"], state["best_theta"]
                update, run.best_update, failures = state["update"], state["best_update"], state["failures"]
                run.best_validation, history = state["best_validation"], state["history"]
                resumed = True
                log.info("resumed from %s at update %d", save_progress, update)
            writer = HistoryWriter(history_file, truncate_to=update if resumed else None) if history_file else None
            start = time.perf_counter()
            status = "already_done" if resumed and update >= num_updates else "num_updates"
            lr = np.asarray(learning_rate, dtype=self.layout.dtype)
            mom = np.asarray(momentum, dtype=self.layout.dtype)
            try:
                while update < num_updates:
                    if time_budget is not None and time.perf_counter() - start >= time_budget:
                        status = "time_budget"
                        break
                    if run.best_validation is not None and update - run.best_update >= patience:
                        status = "patience"
                        break
                    t0 = time.perf_counter()
                    update += 1
                    theta_start = theta = self.get_flat()
                    first_costs, failure, gnorm = None, "", 0.0
                    try:
                        for _ in range(steps_per_update):
                            batches = gradient_dataset.iterate(update=True)
                            for batch in batches:
                                g, costs = self.gradient(batch)
                                if first_costs is None:
                                    first_costs, gnorm = tuple(costs), float(np.linalg.norm(g))
                                if not (np.all(np.isfinite(g)) and math.isfinite(costs[0])):
                                    failure = "nonfinite cost or gradient"
                                    break
                                velocity = mom * velocity - lr * g
                                theta = theta + velocity
                                self.set_flat(theta)  # the next batch's gradient is taken at the new parameters
                            if failure:
                                # skip the bad batches like a finished pass would (else the next update sees them again)
                                batches.close()
                                gradient_dataset.update()
                                break
                    except KeyboardInterrupt:
                        # an interrupted update does not count and leaves the parameters of the last whole one
                        self.set_flat(theta_start)
                        update -= 1
                        raise
                    if failure or not np.all(np.isfinite(theta)):
                        failure = failure or "nonfinite parameters"
                        failures += 1
                        velocity[:] = 0
                        self.set_flat(theta_start)
                        if failures >= max_failures:
                            raise NumericalFailureError(f"SGD stopped at update {update}: {failures} consecutive non-finite updates")
                    else:
                        failures = 0
                    val = _validate(run, validation, update, {})
                    stats = UpdateStats(
                        update=update, costs=first_costs or (math.nan,), validation=val, lambda_=0.0, next_lambda=0.0,
                        rho=math.nan, cg_iterations=0, cg_status="", chosen_iterate=0, step=float(learning_rate),
                        accepted=not failure, new_cost=math.nan, grad_norm=gnorm, step_norm=float(np.linalg.norm(velocity)),
                        failure=failure, seconds=time.perf_counter() - t0,
                    )
                    history.append(stats)
                    log.info("%s", progress.sgd_line(stats))
                    if writer is not None:
                        writer.write(stats)
                    if save_progress is not None:
                        arrays = {"theta": self.get_flat(), "velocity": velocity, "best_theta": run.best_theta}
                        meta = dict(signature=signature, options=options, update=update, best_update=run.best_update,
                                    failures=failures,
                                    best_validation=None if run.best_validation is None else list(run.best_validation),
                                    history=[h.to_json() for h in history], datasets={})
                        save_dataset_states(datasets, arrays, meta["datasets"])
                        save_checkpoint(save_progress, arrays, meta)
                    if callback is not None:
                        try:
                            callback(stats)
                        except StopIteration:
                            status = "callback"
                            break
            except KeyboardInterrupt:
                status = "interrupted"
        finally:
            progress.stop(shown)
            if lock is not None:
                lock.release()
        x = run.best_theta if run.best_validation is not None else self.get_flat()
        self.set_flat(x)
        self.result = TrainResult(
            x=np.array(x), params=self.unflatten(x), status=status, message=STOP_REASONS[status],
            success=status != "interrupted", updates=update,
            best_update=run.best_update if run.best_validation is not None else update,
            best_validation=run.best_validation, history=tuple(history), lambda_=0.0, nfev=run.nfev, njev=0, nhev=0,
        )
        return self.result.params
