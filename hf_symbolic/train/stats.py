"""Records of a training run: one :class:`UpdateStats` per update and the final :class:`TrainResult`."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

__all__ = ["UpdateStats", "TrainResult", "HistoryWriter", "STOP_REASONS"]

#: Why :meth:`hf_optimizer.train` stopped.
STOP_REASONS = {
    "num_updates": "reached num_updates",
    "patience": "no validation improvement for `patience` updates",
    "callback": "the callback raised StopIteration",
    "time_budget": "the time budget ran out",
    "interrupted": "interrupted by the user (KeyboardInterrupt)",
    "already_done": "the checkpoint had already reached num_updates",
    "numerical_failure": "too many consecutive updates with non-finite costs, gradients or curvature products",
}


@dataclass(frozen=True)
class UpdateStats:
    """What happened in one update.

    Attributes
    ----------
    update : int
        1-based index of the update.
    costs : tuple of float
        Every cost on the gradient batch at the parameters *before* the update.
    validation : tuple of float or None
        Validation costs *after* the update (None when not validated this update).
    lambda_ : float
        Tikhonov damping used by this update's CG run.
    next_lambda : float
        Damping after the Levenberg-Marquardt rule.
    rho : float
        Reduction ratio of the chosen CG iterate (NaN when not computable).
    cg_iterations : int
    cg_status : str
    chosen_iterate : int
        CG iteration number of the step chosen by backtracking (0 when none).
    step : float
        Line-search step size applied (0.0 when the update was rejected).
    accepted : bool
        Whether the parameters changed.
    new_cost : float
        costs[0] on the gradient batch after the update (the old one if rejected).
    grad_norm, step_norm : float
    failure : str
        Empty, or why the update was rejected ("nonfinite gradient", ...).
    seconds : float
        Wall time of the update (validation and checkpoint included).
    timings : dict
        Seconds spent in "gradient", "curvature" (products), "cg" (CG bookkeeping),
        "backtracking", "line_search", "validation", "checkpoint".
    """

    update: int
    costs: tuple
    validation: tuple | None
    lambda_: float
    next_lambda: float
    rho: float
    cg_iterations: int
    cg_status: str
    chosen_iterate: int
    step: float
    accepted: bool
    new_cost: float
    grad_norm: float
    step_norm: float
    failure: str
    seconds: float
    timings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["costs"] = list(self.costs)
        d["validation"] = None if self.validation is None else list(self.validation)
        return d

    @classmethod
    def from_json(cls, d) -> "UpdateStats":
        d = dict(d)
        d["costs"] = tuple(d["costs"])
        d["validation"] = None if d["validation"] is None else tuple(d["validation"])
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :meth:`hf_optimizer.train` (scipy.optimize style).

    Attributes
    ----------
    x : ndarray
        The best parameters as one flat vector (lowest validation cost[0];
        the final parameters when there is no validation).
    params : list of ndarray
        ``x`` split into arrays shaped like ``p``.
    status : str
        A key of :data:`STOP_REASONS`.
    message : str
    success : bool
        True unless training was interrupted.
    updates : int
        Updates performed in total (resumed ones included).
    best_update : int
        Update that produced ``x`` (0 = the initial parameters).
    best_validation : tuple of float or None
    history : tuple of UpdateStats
    lambda_ : float
        Damping at the end (what a continued run would start from).
    nfev, njev, nhev : int
        Cost evaluations, gradient evaluations and curvature products (this call only).
    """

    x: np.ndarray
    params: list
    status: str
    message: str
    success: bool
    updates: int
    best_update: int
    best_validation: tuple | None
    history: tuple
    lambda_: float
    nfev: int
    njev: int
    nhev: int


def _clean(obj):
    """Make floats JSON-safe (NaN/inf become strings) for JSON-lines files read by other tools."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class HistoryWriter:
    """Append one JSON object per update to a JSON-lines file (flushed each line)."""

    def __init__(self, path, truncate_to=None):
        self.path = str(path)
        if truncate_to is not None:
            # resuming: keep exactly the updates the checkpoint knows about
            lines = []
            try:
                with open(self.path, encoding="utf-8") as f:
                    for line in f:
                        try:
                            if json.loads(line).get("update", 0) <= truncate_to:
                                lines.append(line if line.endswith("\n") else line + "\n")
                        except ValueError:
                            break
            except FileNotFoundError:
                pass
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(lines)
        else:
            open(self.path, "w", encoding="utf-8").close()

    def write(self, stats: UpdateStats) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_clean(stats.to_json())) + "\n")
