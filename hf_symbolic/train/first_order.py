"""First-order baselines as step rules: SGD with momentum (classical or Nesterov) and Adam.

One *update* is ``steps_per_update`` passes over ``gradient_dataset.iterate()``,
one parameter step per batch, so that an update of a baseline and of HF see
the same data. The gradient of each batch is taken at the parameters the
previous batch left.

- Classical momentum (heavy ball): ``v ← m·v − η·g(θ)``, ``θ ← θ + v``.
- Nesterov momentum (Sutskever et al. 2013, eq. 3-4): the gradient is taken
  at the look-ahead point, ``v ← m·v − η·g(θ + m·v)``, ``θ ← θ + v``.
- Adam (Kingma & Ba 2015, Algorithm 1): ``m ← β₁m + (1−β₁)g``,
  ``s ← β₂s + (1−β₂)g²``, ``θ ← θ − η·m̂/(√ŝ + ε)`` with bias-corrected
  ``m̂ = m/(1−β₁ᵗ)``, ``ŝ = s/(1−β₂ᵗ)``, ``t`` counting steps over the run.

A non-finite cost, gradient or parameter vector rejects the whole update: the
parameters are those from before it and the method's state is reset.
"""

from __future__ import annotations

import math
import time

import numpy as np

from hf_symbolic._checks import check_bool, check_int, check_real
from hf_symbolic.errors import CheckpointCorruptError, CheckpointMismatchError
from hf_symbolic.train.loop import StepRule
from hf_symbolic.train.stats import UpdateStats

__all__ = ["SGDStep", "AdamStep"]


def _positive(name, value):
    return check_real(name, value, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def _fraction(name, value):
    return check_real(name, value, lambda v: 0 <= v < 1, "a number in [0, 1)")


class _FirstOrder(StepRule):
    """The loop over batches shared by the first-order rules; subclasses give :meth:`_move`."""

    failure_message = "{method} stopped at update {u}: {n} consecutive non-finite updates"

    def __init__(self, model, learning_rate, steps_per_update):
        self.model = model
        self.learning_rate = _positive("learning_rate", learning_rate)
        self.steps_per_update = check_int("steps_per_update", steps_per_update, 1)
        self.failure_message = self.failure_message.replace("{method}", self.label)

    label = "first-order"

    def check_options(self, path, meta):
        saved, options = meta["options"], self.options_json()
        if saved.get("method") != options["method"]:
            raise CheckpointMismatchError(
                f"checkpoint {path} was not written by {self.label} training: its options hold "
                f"method={saved.get('method')!r:.80}, expected {options['method']!r}; use another save_progress path"
            )
        changed = sorted(k for k in set(options) | set(saved) if saved.get(k) != options.get(k))
        if changed:
            raise CheckpointMismatchError(
                f"checkpoint {path} was made with other {self.label} options: "
                + ", ".join(f"{k}={saved.get(k)!r:.80} (now {options.get(k)!r})" for k in changed)
                + "; call train with the same arguments to resume, or use another save_progress path"
            )

    def _reset(self):
        raise NotImplementedError

    def _move(self, theta, g, gradient_at):
        """The new parameters after one batch's step (may call ``gradient_at(theta')``)."""
        raise NotImplementedError

    def step(self, run, u):
        model = self.model
        t0 = time.perf_counter()
        theta_start = theta = model.get_flat()
        saved_state = self._snapshot()
        first, failure, gnorm = None, "", 0.0
        try:
            for _ in range(self.steps_per_update):
                batches = run.gradient_dataset.iterate(update=True)
                for batch in batches:
                    def gradient_at(x, batch=batch):
                        model.set_flat(x)
                        g, costs = model.gradient(batch)
                        run.njev += 1
                        return g, costs

                    theta, costs, g = self._move(theta, gradient_at)
                    if first is None:
                        first, gnorm = tuple(costs), float(np.linalg.norm(g))
                    if not (np.all(np.isfinite(g)) and math.isfinite(costs[0])):
                        failure = "nonfinite cost or gradient"
                        break
                    model.set_flat(theta)  # the next batch's gradient is taken at the new parameters
                if failure:
                    # skip the bad batches like a finished pass would (else the next update sees them again)
                    batches.close()
                    run.gradient_dataset.update()
                    break
        except KeyboardInterrupt:
            # an interrupted update does not count and leaves the parameters and state of the last whole one
            model.set_flat(theta_start)
            self._restore(saved_state)
            raise
        if failure or not np.all(np.isfinite(theta)):
            failure = failure or "nonfinite parameters"
            self._reset()
            model.set_flat(theta_start)
        else:
            model.set_flat(theta)
        run.update = u
        run.count_failure(u, failure)
        val = run.validate(u, {})
        return UpdateStats(
            update=u, costs=first or (math.nan,), validation=val, lambda_=0.0, next_lambda=0.0,
            rho=math.nan, cg_iterations=0, cg_status="", chosen_iterate=0, step=self.learning_rate,
            accepted=not failure, new_cost=math.nan, grad_norm=gnorm, step_norm=self._step_norm(),
            failure=failure, seconds=time.perf_counter() - t0,
        )

    #: Attributes that hold the method's state (copied at the start of an update, put back on an interrupt).
    _state_attrs: tuple = ()

    def _snapshot(self):
        return {k: np.copy(getattr(self, k)) for k in self._state_attrs}

    def _restore(self, saved):
        for k, v in saved.items():
            setattr(self, k, v if isinstance(v, np.ndarray) and v.ndim else v.item())


class SGDStep(_FirstOrder):
    """SGD with classical (heavy-ball) or Nesterov momentum; the velocity is its state."""

    name = "sgd"
    label = "SGD"
    vectors = ("velocity",)
    _state_attrs = ("velocity",)

    def __init__(self, model, learning_rate=0.01, momentum=0.9, steps_per_update=1, nesterov=False):
        super().__init__(model, learning_rate, steps_per_update)
        self.momentum = _fraction("momentum", momentum)
        self.nesterov = check_bool("nesterov", nesterov)
        self.velocity = np.zeros(model.layout.size, dtype=model.layout.dtype)

    def options_json(self):
        d = dict(method="sgd", learning_rate=self.learning_rate, momentum=self.momentum,
                 steps_per_update=self.steps_per_update)
        if self.nesterov:  # absent for classical momentum, as in the checkpoints of release 0.1
            d["nesterov"] = True
        return d

    def state(self):
        return {"velocity": self.velocity}, {}

    def load_state(self, state, meta):
        self.velocity = state["velocity"]

    def _reset(self):
        self.velocity = np.zeros_like(self.velocity)

    def _move(self, theta, gradient_at):
        dtype = self.velocity.dtype
        lr, mom = np.asarray(self.learning_rate, dtype=dtype), np.asarray(self.momentum, dtype=dtype)
        if self.nesterov:
            g, costs = gradient_at(theta + mom * self.velocity)
        else:
            g, costs = gradient_at(theta)
        self.velocity = mom * self.velocity - lr * g
        return theta + self.velocity, costs, g

    def _step_norm(self):
        return float(np.linalg.norm(self.velocity))


class AdamStep(_FirstOrder):
    """Adam; the first and second moment estimates and the step count are its state."""

    name = "adam"
    label = "Adam"
    vectors = ("first_moment", "second_moment")
    _state_attrs = ("first_moment", "second_moment", "steps")

    def __init__(self, model, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, steps_per_update=1):
        super().__init__(model, learning_rate, steps_per_update)
        self.beta1 = _fraction("beta1", beta1)
        self.beta2 = _fraction("beta2", beta2)
        self.eps = _positive("eps", eps)
        n, dtype = model.layout.size, model.layout.dtype
        self.first_moment = np.zeros(n, dtype=dtype)
        self.second_moment = np.zeros(n, dtype=dtype)
        self.steps = 0
        self._last = 0.0

    def options_json(self):
        return dict(method="adam", learning_rate=self.learning_rate, beta1=self.beta1, beta2=self.beta2,
                    eps=self.eps, steps_per_update=self.steps_per_update)

    def state(self):
        return {"first_moment": self.first_moment, "second_moment": self.second_moment}, {"adam_steps": self.steps}

    def load_state(self, state, meta):
        steps = meta.get("adam_steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise CheckpointCorruptError(f"checkpoint: 'adam_steps' is {steps!r:.80}; expected an int >= 0")
        self.first_moment, self.second_moment, self.steps = state["first_moment"], state["second_moment"], steps

    def _reset(self):
        self.first_moment = np.zeros_like(self.first_moment)
        self.second_moment = np.zeros_like(self.second_moment)
        self.steps = 0

    def _move(self, theta, gradient_at):
        g, costs = gradient_at(theta)
        g64 = np.asarray(g, dtype=np.float64)
        self.steps += 1
        t = self.steps
        m = self.beta1 * self.first_moment + (1 - self.beta1) * g64
        s = self.beta2 * self.second_moment + (1 - self.beta2) * g64 * g64
        self.first_moment, self.second_moment = m.astype(theta.dtype), s.astype(theta.dtype)
        m_hat = m / (1 - self.beta1 ** t)
        s_hat = s / (1 - self.beta2 ** t)
        delta = (self.learning_rate * m_hat / (np.sqrt(s_hat) + self.eps)).astype(theta.dtype)
        self._last = float(np.linalg.norm(delta))
        return theta - delta, costs, g

    def _step_norm(self):
        return self._last
