"""Task records and success scorers for the recurrent benchmark problems.

A :class:`Task` bundles what a training script needs to know about one
sequence problem: input/output sizes, the output nonlinearity and loss to use,
the data generator, and the rule deciding whether a trained network has
solved it.  Scorers return an immutable :class:`SuccessResult`.
"""

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from ..errors import DatasetError
from ._common import as_float_array

OUTPUTS = ("linear", "sigmoid", "softmax")
LOSSES = ("squared", "cross_entropy", "categorical_cross_entropy")


class SuccessResult(NamedTuple):
    """Outcome of scoring predictions against targets.

    Attributes
    ----------
    wrong_fraction : float
        Fraction of sequences counted as wrong, in ``[0, 1]``.
    n_wrong : int
        Number of wrong sequences.
    n_cases : int
        Number of sequences scored.
    solved : bool
        Whether the task's success criterion is met.
    """

    wrong_fraction: float
    n_wrong: int
    n_cases: int
    solved: bool


@dataclasses.dataclass(frozen=True)
class Task:
    """Description of one recurrent benchmark problem.

    Attributes
    ----------
    name : str
        Registry key.
    n_in, n_out : int
        Input features per time step and output units per read-out step.
    output : {'linear', 'sigmoid', 'softmax'}
        Output nonlinearity the task is meant to be trained with.
    loss : {'squared', 'cross_entropy', 'categorical_cross_entropy'}
        Training loss matching ``output``.
    output_steps : int
        Number of final time steps at which the output is read.  With 1 the
        targets are ``(n, n_out)`` (read at the last step); with ``k > 1`` they
        are ``(k, n, n_out)``, ``y[j]`` being the target at time step ``T - k + j``.
    min_T : int
        Smallest sequence length the generator accepts.
    generate : callable
        ``generate(T, n, seed=0, dtype="floatX") -> (x, y)`` with ``x`` of shape
        ``(T, n, n_in)``.
    success : callable
        ``success(pred, y) -> SuccessResult`` with ``pred`` shaped like ``y``
        (outputs after the output nonlinearity).
    definition : str
        Exact definition of inputs, targets, loss and success rule, with its source.
    """

    name: str
    n_in: int
    n_out: int
    output: str
    loss: str
    output_steps: int
    min_T: int
    generate: Callable
    success: Callable
    definition: str

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise DatasetError(f"Task {self.name!r}: output={self.output!r}; expected one of {OUTPUTS}")
        if self.loss not in LOSSES:
            raise DatasetError(f"Task {self.name!r}: loss={self.loss!r}; expected one of {LOSSES}")


def _pair(pred, y):
    pred = as_float_array("pred", pred)
    y = as_float_array("y", y)
    if pred.shape != y.shape:
        raise DatasetError(f"pred has shape {pred.shape} but y has shape {y.shape}; expected equal shapes")
    if y.ndim < 2:
        raise DatasetError(f"y has shape {y.shape}; expected (n, n_out) or (steps, n, n_out)")
    return pred, y


def _result(wrong_per_case, max_wrong_fraction):
    n_cases = int(wrong_per_case.size)
    if n_cases == 0:
        raise DatasetError("cannot score zero sequences; expected at least one case")
    n_wrong = int(np.count_nonzero(wrong_per_case))
    fraction = n_wrong / n_cases
    if max_wrong_fraction == 0:
        solved = n_wrong == 0
    else:
        solved = fraction < max_wrong_fraction
    return SuccessResult(wrong_fraction=fraction, n_wrong=n_wrong, n_cases=n_cases, solved=bool(solved))


def _per_case(wrong):
    """Reduce an elementwise wrong mask shaped like ``y`` to one flag per case (axis -2)."""
    wrong = np.moveaxis(wrong, -2, 0)
    return wrong.reshape(wrong.shape[0], -1).any(axis=1)


def regression_success(pred, y, *, tolerance=0.04, max_wrong_fraction=0.01):
    """Score real-valued predictions: a case is wrong when any ``|pred - y| > tolerance``.

    Non-finite predictions count as wrong.  Solved when the wrong fraction is
    strictly below ``max_wrong_fraction`` (or exactly zero wrong if it is 0).

    Examples
    --------
    >>> import numpy as np
    >>> regression_success(np.array([[0.5], [1.0]]), np.array([[0.52], [1.1]]))
    SuccessResult(wrong_fraction=0.5, n_wrong=1, n_cases=2, solved=False)
    """
    pred, y = _pair(pred, y)
    wrong = ~(np.abs(pred - y) <= tolerance)
    return _result(_per_case(wrong), max_wrong_fraction)


def binary_success(pred, y, *, max_wrong_fraction=0.01):
    """Score probabilities of binary targets with a 0.5 threshold (zero-one error).

    ``pred > 0.5`` predicts 1; a target counts as 1 when ``y > 0.5``.
    Non-finite predictions count as wrong.

    Examples
    --------
    >>> import numpy as np
    >>> binary_success(np.array([[0.9], [0.2]]), np.array([[1.0], [0.0]]))
    SuccessResult(wrong_fraction=0.0, n_wrong=0, n_cases=2, solved=True)
    """
    pred, y = _pair(pred, y)
    wrong = ((pred > 0.5) != (y > 0.5)) | ~np.isfinite(pred)
    return _result(_per_case(wrong), max_wrong_fraction)


def class_success(pred, y, *, max_wrong_fraction=0.01):
    """Score class probabilities against one-hot targets by arg-max along the last axis.

    For targets shaped ``(steps, n, classes)`` a sequence is wrong when any of
    its steps is wrong.  Rows with a non-finite prediction count as wrong.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.eye(3)[[0, 2]]
    >>> class_success(np.array([[0.6, 0.3, 0.1], [0.5, 0.1, 0.4]]), y)
    SuccessResult(wrong_fraction=0.5, n_wrong=1, n_cases=2, solved=False)
    """
    pred, y = _pair(pred, y)
    wrong = (np.argmax(pred, axis=-1) != np.argmax(y, axis=-1)) | ~np.all(np.isfinite(pred), axis=-1)
    wrong = wrong[..., None]
    return _result(_per_case(wrong), max_wrong_fraction)
