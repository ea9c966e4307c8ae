"""Every setting of HF training, checked once when it is built."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from hf_symbolic.errors import ArgumentError
from hf_symbolic.solve.damping import DampingRule

__all__ = ["TrainOptions", "LoopSettings", "RESUMABLE_CHANGES"]

#: Options whose change between a run and its resumption is allowed (they do not alter past updates).
RESUMABLE_CHANGES = frozenset({"num_updates", "patience", "time_budget", "max_failures"})


@dataclass(frozen=True)
class LoopSettings:
    """The loop's own settings (the step rule holds the method's)."""

    num_updates: int = 100
    validation_frequency: int = 1
    patience: float = math.inf
    time_budget: float | None = None
    max_failures: int = 5

    def __post_init__(self):
        def bad(name, value, expected):
            raise ArgumentError(f"{name}={value!r} is invalid: expected {expected}")

        for name in ("validation_frequency", "max_failures"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                bad(name, v, "an integer >= 1")
        if not isinstance(self.num_updates, (int, np.integer)) or isinstance(self.num_updates, bool) or self.num_updates < 0:
            bad("num_updates", self.num_updates, "an integer >= 0")
        if not (self.patience > 0):
            bad("patience", self.patience, "a number > 0 (numpy.inf for none)")
        if self.time_budget is not None and not (self.time_budget > 0):
            bad("time_budget", self.time_budget, "None or a number of seconds > 0")



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
        if not (isinstance(self.preconditioner, (bool, np.bool_, str))
                or (hasattr(self.preconditioner, "statistic") and callable(getattr(self.preconditioner, "diagonal", None)))):
            bad("preconditioner", self.preconditioner, "True, False, a registered name or a preconditioner object")
        if not isinstance(self.damping, DampingRule):
            bad("damping", self.damping, "a hf_symbolic.damping.DampingRule")

    def to_json(self) -> dict:
        d = asdict(self)
        d["patience"] = None if math.isinf(self.patience) else self.patience
        if not isinstance(self.preconditioner, (bool, str)):  # an object: recorded by its class name
            d["preconditioner"] = type(self.preconditioner).__name__
        return d

    def loop_settings(self):
        """The settings of the training loop itself (the rest are the HF step's)."""
        return LoopSettings(num_updates=self.num_updates, validation_frequency=self.validation_frequency,
                            patience=self.patience, time_budget=self.time_budget, max_failures=self.max_failures)
