"""Every setting of HF training, checked once when it is built."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from hf_symbolic._checks import bad, check_bool, check_int, check_real
from hf_symbolic.solve.damping import DampingRule

__all__ = ["TrainOptions", "LoopSettings", "RESUMABLE_CHANGES"]

#: Options whose change between a run and its resumption is allowed (they do not alter past updates).
RESUMABLE_CHANGES = frozenset({"num_updates", "patience", "time_budget", "max_failures", "verbose"})


@dataclass(frozen=True)
class LoopSettings:
    """The loop's own settings (the step rule holds the method's)."""

    num_updates: int = 100
    validation_frequency: int = 1
    patience: float = math.inf
    time_budget: float | None = None
    max_failures: int = 5

    def __post_init__(self):
        for name in ("validation_frequency", "max_failures"):
            check_int(name, getattr(self, name), 1)
        check_int("num_updates", self.num_updates, 0)
        check_real("patience", self.patience, lambda v: v > 0, "a number > 0 (numpy.inf for none)")
        if self.time_budget is not None:
            check_real("time_budget", self.time_budget, lambda v: v > 0, "None or a number of seconds > 0")


@dataclass(frozen=True)
class TrainOptions:
    """Every setting of :meth:`hf_optimizer.train` (see its docstring)."""

    initial_lambda: float = 0.1
    mu: float = 0.03
    global_backtracking: bool = False
    preconditioner: bool = False
    max_cg_iterations: int = 250
    max_cg_exponent: float = 0.0
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
    verbose: bool | None = None

    def __post_init__(self):
        finite = math.isfinite
        check_real("initial_lambda", self.initial_lambda, lambda v: finite(v) and v > 0, "a finite number > 0")
        check_real("mu", self.mu, lambda v: finite(v) and v >= 0, "a finite number >= 0")
        for name in ("max_cg_iterations", "min_cg_iterations", "validation_frequency", "line_search_tries",
                     "max_failures", "cg_window_min"):
            check_int(name, getattr(self, name), 1)
        check_int("num_updates", self.num_updates, 0)
        if self.min_cg_iterations > self.max_cg_iterations:
            bad("min_cg_iterations", self.min_cg_iterations, f"at most max_cg_iterations={self.max_cg_iterations}")
        check_real("max_cg_exponent", self.max_cg_exponent, lambda v: finite(v) and v >= 0,
                   "a finite number >= 0 (0: a fixed CG cap)")
        check_real("cg_decay", self.cg_decay, lambda v: 0 <= v <= 1, "a number in [0, 1]")
        check_real("patience", self.patience, lambda v: v > 0, "a number > 0 (numpy.inf for none)")
        check_real("armijo_c", self.armijo_c, lambda v: 0 < v < 1, "a number in (0, 1)")
        check_real("line_search_shrink", self.line_search_shrink, lambda v: 0 < v < 1, "a number in (0, 1)")
        check_real("preconditioner_exponent", self.preconditioner_exponent, lambda v: 0 <= v <= 1, "a number in [0, 1]")
        check_real("cg_epsilon", self.cg_epsilon, lambda v: v >= 0, "a number >= 0")
        check_real("cg_window_frac", self.cg_window_frac, lambda v: finite(v) and v >= 0, "a finite number >= 0")
        check_real("cg_grid_gamma", self.cg_grid_gamma, lambda v: finite(v) and v > 1, "a finite number > 1")
        check_real("cg_grid_start", self.cg_grid_start, lambda v: finite(v) and v > 0, "a finite number > 0")
        if self.time_budget is not None:
            check_real("time_budget", self.time_budget, lambda v: v > 0, "None or a number of seconds > 0")
        for name in ("global_backtracking", "backtracking", "line_search"):
            check_bool(name, getattr(self, name))
        if self.preconditioner is None:  # the same as False (and recorded so in checkpoints)
            object.__setattr__(self, "preconditioner", False)
        if not (isinstance(self.preconditioner, (bool, np.bool_, str))
                or (hasattr(self.preconditioner, "statistic") and callable(getattr(self.preconditioner, "diagonal", None)))):
            bad("preconditioner", self.preconditioner, "True, False, None, a registered name or a preconditioner object")
        if self.verbose is not None:
            check_bool("verbose", self.verbose)
        if not isinstance(self.damping, DampingRule):
            bad("damping", self.damping, "a hf_symbolic.DampingRule")

    def max_cg(self, cg_batches: int, first_cg_batches: int) -> int:
        """The CG cap of an update whose CG dataset yields ``cg_batches`` batches.

        ``max_cg_iterations`` for the ``first_cg_batches`` of the run's first update, times the
        growth of the CG batch since then to the power ``max_cg_exponent`` (rounded up; never
        below ``min_cg_iterations``). With the default exponent 0 the cap is fixed.

        >>> TrainOptions(max_cg_iterations=25, max_cg_exponent=1.0).max_cg(3, 1)
        75
        >>> TrainOptions(max_cg_iterations=25, max_cg_exponent=0.5).max_cg(2, 1)
        36
        >>> TrainOptions(max_cg_iterations=25).max_cg(8, 1)
        25
        """
        if self.max_cg_exponent == 0 or cg_batches == first_cg_batches:
            return self.max_cg_iterations
        cap = math.ceil(self.max_cg_iterations * (cg_batches / first_cg_batches) ** self.max_cg_exponent - 1e-9)
        return max(self.min_cg_iterations, cap)

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
