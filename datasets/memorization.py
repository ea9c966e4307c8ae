"""The 100-step memorization problem of the 2012 HF release (``example_RNN``).

Definition (Martens & Sutskever 2012 demo, as summarised in the project's
TASKS.md): every sequence has ``T`` time steps, each carrying one random bit
(0 or 1, probability 1/2, independent).  The target is the **first** bit of the
sequence; everything after step 0 is noise the network must ignore.  A tanh
RNN with a single sigmoid output read at the last step is trained with
cross-entropy; the error is the zero-one error at the last step, and the task
is solved when the zero-one error on the validation sequences is exactly 0.

The 2012 run used ``T = 100`` with 99,000 training and 1,000 validation
sequences (:func:`memorization_data` defaults).
"""

from typing import NamedTuple

import numpy as np

from ..errors import DatasetError
from ._common import FLOATX, as_float_array, check_int, make_rng, resolve_dtype
from .task import Task, binary_success

__all__ = ["memorization", "memorization_error", "memorization_data", "MemorizationData", "MEMORIZATION_TASK"]


def memorization(T=100, n=1000, seed=0, dtype=FLOATX):
    """Generate memorization sequences whose target is the first input bit.

    Parameters
    ----------
    T : int, default 100
        Sequence length (>= 1).
    n : int, default 1000
        Number of sequences (>= 1).
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source; the same int gives identical arrays.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of both arrays (``"floatX"``: PyTensor's ``config.floatX``,
        float64 without PyTensor).

    Returns
    -------
    x : ndarray, shape (T, n, 1)
        Bits 0/1 as floats, time-major.
    y : ndarray, shape (n, 1)
        ``y[i, 0] == x[0, i, 0]``.

    Examples
    --------
    >>> x, y = memorization(T=5, n=3, seed=1, dtype="float64")
    >>> x.shape, y.shape
    ((5, 3, 1), (3, 1))
    >>> bool((y == x[0]).all())
    True
    """
    T = check_int("T", T, 1)
    n = check_int("n", n, 1)
    dtype = resolve_dtype(dtype)
    rng = make_rng(seed)
    bits = rng.integers(0, 2, size=(T, n, 1), dtype=np.int8)
    x = bits.astype(dtype)
    y = x[0].copy()
    return x, y


def memorization_error(pred_prob, y):
    """Zero-one error of sigmoid outputs ``pred_prob`` against binary targets ``y``.

    A prediction is 1 when ``pred_prob > 0.5``; non-finite predictions count
    as wrong.

    Parameters
    ----------
    pred_prob : array_like, shape (n, 1)
        Output probabilities at the last step.
    y : array_like, shape (n, 1)
        Targets 0/1.

    Returns
    -------
    float
        Fraction of wrong sequences.

    Examples
    --------
    >>> memorization_error([[0.7], [0.4], [0.6]], [[1.0], [0.0], [0.0]])
    0.3333333333333333
    """
    pred_prob = as_float_array("pred_prob", pred_prob)
    y = as_float_array("y", y)
    if pred_prob.shape != y.shape:
        raise DatasetError(
            f"pred_prob has shape {pred_prob.shape} but y has shape {y.shape}; expected equal shapes"
        )
    if y.size == 0:
        raise DatasetError("cannot compute an error over zero sequences")
    wrong = ((pred_prob > 0.5) != (y > 0.5)) | ~np.isfinite(pred_prob)
    return float(np.count_nonzero(wrong) / wrong.size)


class MemorizationData(NamedTuple):
    """Train/validation split of the memorization problem (see :func:`memorization_data`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray


def memorization_data(T=100, n_train=99_000, n_valid=1_000, seed=0, dtype=FLOATX):
    """Training and validation sets of the memorization problem.

    Both sets are drawn from one generator seeded by ``seed`` (training first),
    so they are independent samples and reproducible.

    Parameters
    ----------
    T : int, default 100
        Sequence length.
    n_train, n_valid : int, default 99000 and 1000
        Numbers of sequences (the 2012 settings); smaller values are fine.
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of all arrays.

    Returns
    -------
    MemorizationData
        ``x_train (T, n_train, 1)``, ``y_train (n_train, 1)``,
        ``x_valid (T, n_valid, 1)``, ``y_valid (n_valid, 1)``.

    Examples
    --------
    >>> d = memorization_data(T=10, n_train=20, n_valid=5, seed=0, dtype="float32")
    >>> d.x_train.shape, d.y_valid.shape, d.x_valid.dtype
    ((10, 20, 1), (5, 1), dtype('float32'))
    """
    rng = make_rng(seed)
    x_train, y_train = memorization(T, n_train, rng, dtype)
    x_valid, y_valid = memorization(T, n_valid, rng, dtype)
    return MemorizationData(x_train, y_train, x_valid, y_valid)


def _memorization_success(pred, y):
    return binary_success(pred, y, max_wrong_fraction=0)


MEMORIZATION_TASK = Task(
    name="memorization",
    n_in=1,
    n_out=1,
    output="sigmoid",
    loss="cross_entropy",
    output_steps=1,
    min_T=1,
    generate=memorization,
    success=_memorization_success,
    definition=(
        "2012 HF release example_RNN memorization problem. Input: T steps, 1 feature, each an "
        "independent fair random bit 0/1. Target: the first bit x[0], read at the last step. "
        "Output: sigmoid; loss: cross-entropy. Error: zero-one with threshold 0.5. "
        "Solved when the zero-one error on the validation set is exactly 0."
    ),
)
