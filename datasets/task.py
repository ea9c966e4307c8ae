"""Task records and success scorers for the recurrent benchmark problems.

A :class:`Task` bundles what a training script needs to know about one
sequence problem: input/output sizes, the output nonlinearity and loss to use,
the data generator, and the rule deciding whether a trained network has
solved it.  Scorers return an immutable :class:`SuccessResult`.
"""

import dataclasses
import math
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

    def wrong_upper_bound(self, confidence=0.95):
        """One-sided Clopper-Pearson upper confidence bound of the true wrong fraction.

        The scored sequences are a random sample: ``n_wrong`` of ``n_cases``
        is a binomial draw whose rate ``p`` (the wrong fraction on unlimited
        fresh sequences) is unknown.  The bound ``u`` is the largest ``p``
        under which seeing ``n_wrong`` or fewer wrong sequences still has
        probability at least ``1 - confidence``:
        ``P(X <= n_wrong; n_cases, u) = 1 - confidence``, i.e.
        ``u = Beta(confidence; n_wrong + 1, n_cases - n_wrong)``, and ``u = 1``
        when every sequence is wrong.  Whatever ``p`` is, ``p <= u`` with
        probability at least ``confidence`` over the draw of the sequences.

        Parameters
        ----------
        confidence : float
            In the open interval ``(0, 1)``, e.g. 0.95.

        Returns
        -------
        float
            The bound, in ``(0, 1]``.

        Raises
        ------
        hf_symbolic.errors.DatasetError
            For a confidence outside ``(0, 1)`` or a record with impossible counts.

        Examples
        --------
        With nothing wrong among ``n`` sequences the bound is ``1 - (1 - confidence)**(1/n)``:

        >>> r = SuccessResult(wrong_fraction=0.0, n_wrong=0, n_cases=1000, solved=True)
        >>> round(r.wrong_upper_bound(0.95), 6), round(1 - 0.05 ** (1 / 1000), 6)
        (0.002991, 0.002991)
        >>> round(SuccessResult(0.0114, 114, 10000, False).wrong_upper_bound(0.95), 4)
        0.0133
        """
        confidence = _check_confidence(confidence)
        n, k = self.n_cases, self.n_wrong
        if not (isinstance(n, (int, np.integer)) and isinstance(k, (int, np.integer)) and 0 <= k <= n and n >= 1):
            raise DatasetError(f"n_wrong={k!r}, n_cases={n!r}; expected integers with 0 <= n_wrong <= n_cases "
                               "and n_cases >= 1")
        if k == n:
            return 1.0
        if k == 0:  # closed form, exact where the Beta quantile loses digits
            return float(-math.expm1(math.log1p(-confidence) / n))
        from scipy.stats import beta

        return float(beta.ppf(confidence, k + 1, n - k))

    def confidently_solved(self, confidence=0.95, max_wrong_fraction=0.01):
        """Solved by the task's own rule, and the true wrong fraction below ``max_wrong_fraction`` with ``confidence``.

        ``solved`` says what was *seen* on these sequences; a network whose
        wrong fraction on unlimited fresh sequences is 1.2 % still passes the
        "< 1 % wrong" rule on about one draw in four of 1000 sequences (and
        on a lucky draw of 10000 now and then).  This asks more: the task's
        rule holds on these sequences (for an "all right" rule such as
        noiseless memorization's that means ``n_wrong == 0``), *and* the
        one-sided Clopper-Pearson bound :meth:`wrong_upper_bound` at
        ``confidence`` is strictly below ``max_wrong_fraction``.  For a
        network whose true wrong fraction is at least ``max_wrong_fraction``
        this is true with probability at most ``1 - confidence`` per fresh
        draw of sequences.

        With nothing wrong the bound is about ``-ln(1 - confidence) / n``, so
        an "all right" result needs ``n >= ln(1 - confidence) / ln(1 - max_wrong_fraction)``
        sequences (299 at 95 % and 1 %) to count; with 10000 sequences at
        95 % up to 83 wrong ones (0.83 %) still count.

        Parameters
        ----------
        confidence : float
            In ``(0, 1)``.
        max_wrong_fraction : float
            In ``(0, 1]``: the wrong fraction the true one must be below
            (the pathological tasks' 1 %, :data:`~hf_symbolic.datasets.MAX_WRONG_FRACTION`).

        Returns
        -------
        bool

        Examples
        --------
        The 707 s multiplication run of issue 16: 114 of 10000 fresh test sequences wrong.

        >>> SuccessResult(0.0114, 114, 10000, False).confidently_solved()
        False
        >>> [SuccessResult(k / 10000, k, 10000, True).confidently_solved() for k in (83, 84)]
        [True, False]
        >>> [SuccessResult(0.0, 0, n, True).confidently_solved() for n in (298, 299)]
        [False, True]
        """
        if not (isinstance(max_wrong_fraction, (int, float, np.floating)) and 0 < max_wrong_fraction <= 1):
            raise DatasetError(f"max_wrong_fraction={max_wrong_fraction!r}; expected a number in (0, 1]")
        return bool(self.solved) and self.wrong_upper_bound(confidence) < max_wrong_fraction


def _check_confidence(confidence):
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)) \
            or not 0 < confidence < 1:
        raise DatasetError(f"confidence={confidence!r}; expected a probability strictly between 0 and 1, "
                           "e.g. 0.95")
    return float(confidence)


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
