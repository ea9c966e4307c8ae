"""Pathological long-term-dependency problems for recurrent networks.

The seven problems are those Martens & Sutskever (2011, "Learning recurrent
neural networks with Hessian-free optimization", ICML) trained with HF.  Most
come from Hochreiter & Schmidhuber (1997, "Long short-term memory", Neural
Computation 9(8)): adding (their Experiment 4), multiplication (Experiment 5),
temporal order with two and three relevant symbols (Experiments 6a and 6b) and
the random-permutation long-lag sequences (Experiment 2); XOR and noiseless
memorization follow the descriptions of Martens & Sutskever 2011.  Published
versions differ in details (value ranges, start/end symbols, variable
lengths), so each generator below implements **one** version, stated exactly
in its docstring and in ``TASKS[name].definition``.  Common choices:

* every sequence has exactly ``T`` time steps (H&S drew lengths in
  ``[T, T + T/10]``); relevant positions scale with ``T`` as in
  Martens & Sutskever 2011;
* positions are drawn independently per sequence and uniformly over integer
  ranges computed with integer arithmetic, e.g. ``[T*10//100, T*20//100]``;
* inputs ``x`` are time-major, shape ``(T, n, n_in)``; targets ``y`` are read
  at the last step, shape ``(n, n_out)``, except noiseless memorization whose
  targets cover the final 5 steps, shape ``(5, n, n_out)``;
* categorical inputs and targets are one-hot floats.

The registry :data:`TASKS` maps each name to a :class:`~.task.Task`; it also
holds the 2012 ``"memorization"`` problem.  :func:`get_task` looks names up
with a named error.

Examples
--------
>>> task = get_task("addition")
>>> x, y = task.generate(20, 4, seed=0, dtype="float64")
>>> x.shape, y.shape, task.output, task.loss
((20, 4, 2), (4, 1), 'linear', 'squared')
>>> task.success(y, y).solved
True
"""

import numpy as np

from ..errors import DatasetError
from ._common import FLOATX, check_int, make_rng, one_hot, resolve_dtype
from .memorization import MEMORIZATION_TASK
from .task import Task, binary_success, class_success, regression_success

__all__ = [
    "addition",
    "multiplication",
    "xor",
    "temporal_order",
    "temporal_order_3bit",
    "random_permutation",
    "noiseless_memorization",
    "noiseless_memorization_success",
    "TASKS",
    "PATHOLOGICAL_TASKS",
    "get_task",
    "ADDITION_TOLERANCE",
    "MAX_WRONG_FRACTION",
    "N_SYMBOLS_PERMUTATION",
    "N_MEMORIZED_BITS",
]

#: A real-valued answer further than this from the target counts as wrong (H&S 1997).
ADDITION_TOLERANCE = 0.04
#: Tasks other than the memorization ones are solved when strictly less than this fraction is wrong.
MAX_WRONG_FRACTION = 0.01
#: Alphabet size of the random permutation problem.
N_SYMBOLS_PERMUTATION = 100
#: Number of bits to recall in noiseless memorization.
N_MEMORIZED_BITS = 5

_MIN_T_MARKED = 10


def _draw_between(rng, low, high, n):
    """``n`` integers uniform on the closed range ``[low, high]``."""
    return rng.integers(low, high + 1, size=n)


def _marked_positions(T, n, rng):
    """First marker in ``[0, T//10)``, second in ``[T//10, T//2)`` (both half-open)."""
    first = _draw_between(rng, 0, T // 10 - 1, n)
    second = _draw_between(rng, T // 10, T // 2 - 1, n)
    return first, second


def _check_common(T, n, min_T, dtype, seed):
    T = check_int("T", T, min_T)
    n = check_int("n", n, 1)
    return T, n, resolve_dtype(dtype), make_rng(seed)


def _marked_values(T, n, seed, dtype, *, binary):
    T, n, dtype, rng = _check_common(T, n, _MIN_T_MARKED, dtype, seed)
    if binary:
        values = rng.integers(0, 2, size=(T, n)).astype(np.float64)
    else:
        values = rng.uniform(0.0, 1.0, size=(T, n))
    first, second = _marked_positions(T, n, rng)
    cols = np.arange(n)
    x = np.zeros((T, n, 2), dtype=dtype)
    x[:, :, 0] = values
    x[first, cols, 1] = 1
    x[second, cols, 1] = 1
    # Targets are computed from the values as stored in ``dtype`` so that y
    # is an exact function of x.
    v1 = x[first, cols, 0].astype(np.float64)
    v2 = x[second, cols, 0].astype(np.float64)
    return x, v1, v2


def addition(T, n, seed=0, dtype=FLOATX):
    """Adding problem: output the sum of the two marked values.

    Definition (Martens & Sutskever 2011 version of H&S 1997 Experiment 4):
    ``x[t, i, 0]`` is uniform on ``[0, 1)`` independently for every step;
    ``x[t, i, 1]`` is a marker, 1 at exactly two steps and 0 elsewhere.  The
    first marked step is uniform on ``{0, ..., T//10 - 1}`` (first 10% of the
    sequence), the second uniform on ``{T//10, ..., T//2 - 1}``.  Target,
    read at the last step: the sum of the two marked values (in ``[0, 2)``).
    Linear output, squared error.  A sequence is wrong when
    ``|prediction - target| > 0.04``; solved when fewer than 1% of fresh
    sequences are wrong.

    Parameters
    ----------
    T : int
        Sequence length, at least 10.
    n : int
        Number of sequences.
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source; the same int gives identical arrays.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of ``x`` and ``y``.

    Returns
    -------
    x : ndarray, shape (T, n, 2)
    y : ndarray, shape (n, 1)

    Examples
    --------
    >>> x, y = addition(10, 2, seed=3, dtype="float64")
    >>> marked = x[:, :, 1] == 1
    >>> bool(np.allclose((x[:, :, 0] * marked).sum(axis=0), y[:, 0]))
    True
    """
    x, v1, v2 = _marked_values(T, n, seed, dtype, binary=False)
    return x, (v1 + v2).astype(x.dtype)[:, None]


def multiplication(T, n, seed=0, dtype=FLOATX):
    """Multiplication problem: output the product of the two marked values.

    Definition (Martens & Sutskever 2011 version of H&S 1997 Experiment 5):
    inputs exactly as in :func:`addition` (values uniform on ``[0, 1)``,
    marker channel, first mark in ``{0, ..., T//10 - 1}``, second in
    ``{T//10, ..., T//2 - 1}``).  Target: the product of the two marked
    values (in ``[0, 1)``).  Linear output, squared error; wrong when
    ``|prediction - target| > 0.04``; solved when fewer than 1% are wrong.

    Parameters
    ----------
    T : int
        Sequence length, at least 10.
    n : int
        Number of sequences.
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of ``x`` and ``y``.

    Returns
    -------
    x : ndarray, shape (T, n, 2)
    y : ndarray, shape (n, 1)

    Examples
    --------
    >>> x, y = multiplication(12, 3, seed=0, dtype="float64")
    >>> x.shape, y.shape
    ((12, 3, 2), (3, 1))
    """
    x, v1, v2 = _marked_values(T, n, seed, dtype, binary=False)
    return x, (v1 * v2).astype(x.dtype)[:, None]


def xor(T, n, seed=0, dtype=FLOATX):
    """XOR problem: output the exclusive-or of the two marked bits.

    Definition (Martens & Sutskever 2011): ``x[t, i, 0]`` is a fair random
    bit 0/1 at every step; ``x[t, i, 1]`` marks two steps exactly as in
    :func:`addition` (first in ``{0, ..., T//10 - 1}``, second in
    ``{T//10, ..., T//2 - 1}``).  Target at the last step: XOR of the two
    marked bits, 0/1.  Sigmoid output, cross-entropy; zero-one error with
    threshold 0.5; solved when fewer than 1% are wrong.

    Parameters
    ----------
    T : int
        Sequence length, at least 10.
    n : int
        Number of sequences.
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of ``x`` and ``y``.

    Returns
    -------
    x : ndarray, shape (T, n, 2)
    y : ndarray, shape (n, 1)

    Examples
    --------
    >>> x, y = xor(10, 4, seed=0, dtype="float64")
    >>> marked_bits = x[:, :, 0].T[x[:, :, 1].T == 1].reshape(4, 2)
    >>> bool((y[:, 0] == (marked_bits[:, 0] != marked_bits[:, 1])).all())
    True
    """
    x, v1, v2 = _marked_values(T, n, seed, dtype, binary=True)
    return x, (v1 != v2).astype(x.dtype)[:, None]


# Temporal order alphabet: 4 distractors a, b, c, d then the relevant X and Y.
_N_DISTRACTORS = 4
_SYMBOL_X = 4
_N_ORDER_SYMBOLS = 6


def _temporal_order(T, n, seed, dtype, windows):
    T, n, dtype, rng = _check_common(T, n, _MIN_T_MARKED, dtype, seed)
    symbols = rng.integers(0, _N_DISTRACTORS, size=(T, n))
    cols = np.arange(n)
    label = np.zeros(n, dtype=np.int64)
    for low_pct, high_pct in windows:
        pos = _draw_between(rng, T * low_pct // 100, T * high_pct // 100, n)
        which = rng.integers(0, 2, size=n)  # 0 = X, 1 = Y
        symbols[pos, cols] = _SYMBOL_X + which
        label = 2 * label + which
    x = one_hot(symbols, _N_ORDER_SYMBOLS, dtype)
    y = one_hot(label, 2 ** len(windows), dtype)
    return x, y


def temporal_order(T, n, seed=0, dtype=FLOATX):
    """Temporal order problem with two relevant symbols (4 classes).

    Definition (Martens & Sutskever 2011 scaling of H&S 1997 Experiment 6a,
    without H&S's start/end symbols, since the output is read at the last
    step anyway): an alphabet of 6 symbols, one-hot encoded as inputs 0-5:
    distractors a, b, c, d (0-3), X (4), Y (5).  Every step holds a
    distractor drawn uniformly, except two steps: ``t1`` uniform on
    ``{T*10//100, ..., T*20//100}`` and ``t2`` uniform on
    ``{T*50//100, ..., T*60//100}``, each holding X or Y with probability 1/2.
    Target at the last step, one-hot over 4 classes:
    ``class = 2*s1 + s2`` with X = 0, Y = 1, i.e. XX = 0, XY = 1, YX = 2,
    YY = 3.  Softmax output, categorical cross-entropy; a sequence is wrong
    when the arg-max output is not the target class; solved when fewer than
    1% are wrong.

    Parameters
    ----------
    T : int
        Sequence length, at least 10.
    n : int
        Number of sequences.
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of ``x`` and ``y``.

    Returns
    -------
    x : ndarray, shape (T, n, 6)
    y : ndarray, shape (n, 4)

    Examples
    --------
    >>> x, y = temporal_order(20, 3, seed=0, dtype="float64")
    >>> x.shape, y.shape, float(x.sum()), float(y.sum())
    ((20, 3, 6), (3, 4), 60.0, 3.0)
    """
    return _temporal_order(T, n, seed, dtype, ((10, 20), (50, 60)))


def temporal_order_3bit(T, n, seed=0, dtype=FLOATX):
    """Temporal order problem with three relevant symbols (8 classes).

    Definition (Martens & Sutskever 2011 scaling of H&S 1997 Experiment 6b,
    no start/end symbols): the 6-symbol one-hot alphabet of
    :func:`temporal_order` (a, b, c, d = 0-3, X = 4, Y = 5).  Three relevant
    steps: ``t1`` uniform on ``{T*10//100, ..., T*20//100}``, ``t2`` on
    ``{T*33//100, ..., T*43//100}``, ``t3`` on ``{T*66//100, ..., T*76//100}``,
    each holding X or Y with probability 1/2; every other step a uniform
    distractor.  Target at the last step, one-hot over 8 classes:
    ``class = 4*s1 + 2*s2 + s3`` (X = 0, Y = 1; XXX = 0, ..., YYY = 7).
    Softmax output, categorical cross-entropy; arg-max zero-one error; solved
    when fewer than 1% are wrong.

    Parameters
    ----------
    T : int
        Sequence length, at least 10.
    n : int
        Number of sequences.
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of ``x`` and ``y``.

    Returns
    -------
    x : ndarray, shape (T, n, 6)
    y : ndarray, shape (n, 8)

    Examples
    --------
    >>> x, y = temporal_order_3bit(30, 2, seed=0, dtype="float64")
    >>> x.shape, y.shape
    ((30, 2, 6), (2, 8))
    """
    return _temporal_order(T, n, seed, dtype, ((10, 20), (33, 43), (66, 76)))


def random_permutation(T, n, seed=0, dtype=FLOATX):
    """Random permutation problem: recall the first of ``T`` symbols at the end.

    Definition (Martens & Sutskever 2011, after the random-permutation
    long-lag sequences of H&S 1997 Experiment 2): an alphabet of 100 symbols
    ``0, ..., 99``, one-hot encoded as 100 inputs.  Step 0 holds symbol 0 or
    1 with probability 1/2 each (the symbols "1" and "2" of the 1-based
    descriptions); steps ``1, ..., T-1`` hold symbols drawn uniformly from
    ``{2, ..., 99}``.  Target at the last step: the first symbol, one-hot over
    all 100 symbols (the network predicts a symbol of the alphabet).  Softmax
    output, categorical cross-entropy; arg-max zero-one error; solved when
    fewer than 1% are wrong.

    Parameters
    ----------
    T : int
        Sequence length, at least 2.
    n : int
        Number of sequences.
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of ``x`` and ``y``.

    Returns
    -------
    x : ndarray, shape (T, n, 100)
    y : ndarray, shape (n, 100)

    Examples
    --------
    >>> x, y = random_permutation(5, 2, seed=0, dtype="float64")
    >>> bool((y == x[0]).all())
    True
    """
    T, n, dtype, rng = _check_common(T, n, 2, dtype, seed)
    symbols = np.empty((T, n), dtype=np.int64)
    symbols[0] = rng.integers(0, 2, size=n)
    symbols[1:] = rng.integers(2, N_SYMBOLS_PERMUTATION, size=(T - 1, n))
    x = one_hot(symbols, N_SYMBOLS_PERMUTATION, dtype)
    y = one_hot(symbols[0], N_SYMBOLS_PERMUTATION, dtype)
    return x, y


# Noiseless memorization input alphabet.
_BLANK = 2
_CUE = 3
_N_MEMO_SYMBOLS = 4
_N_PATTERNS = 2**N_MEMORIZED_BITS
_MIN_T_MEMO = 2 * N_MEMORIZED_BITS + 1


def noiseless_memorization(T, n, seed=0, dtype=FLOATX):
    """Noiseless memorization: reproduce 5 bits after a long blank gap and a cue.

    Definition (our fixed-length version of the Martens & Sutskever 2011
    problem): input alphabet of 4 symbols, one-hot encoded: bit 0 (0),
    bit 1 (1), blank (2), cue (3).  With total length ``T``:

    * steps ``0..4`` hold the 5 pattern bits ``b0..b4``;
    * steps ``5..T-7`` hold blanks;
    * step ``T-6`` holds the cue;
    * steps ``T-5..T-1`` hold blanks, and at step ``T-5+j`` the network must
      output ``b_j``.

    Targets are returned for those final 5 steps only, ``y`` of shape
    ``(5, n, 2)`` with ``y[j, i]`` one-hot over the 2 bit values, so a tanh
    RNN with a 2-way softmax at every step is trained on ``outputs[-5:]``
    (categorical cross-entropy summed over the 5 steps; earlier outputs carry
    no cost).  Pattern ``k`` in ``0..31`` has bits ``b_j = (k >> (4 - j)) & 1``
    (most significant first).  The patterns are the 32 patterns repeated and
    then shuffled by ``seed``, so any ``n >= 32`` contains every pattern and
    ``n = 32`` contains each once.  A sequence is wrong when any of its 5
    recalled bits is wrong (arg-max); solved when every sequence is right and
    all 32 patterns are present (see :func:`noiseless_memorization_success`).

    Parameters
    ----------
    T : int
        Total sequence length, at least 11 (5 bits + cue + 5 recall steps).
    n : int
        Number of sequences.
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Order of the patterns.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of ``x`` and ``y``.

    Returns
    -------
    x : ndarray, shape (T, n, 4)
    y : ndarray, shape (5, n, 2)

    Examples
    --------
    >>> x, y = noiseless_memorization(15, 32, seed=0, dtype="float64")
    >>> x.shape, y.shape
    ((15, 32, 4), (5, 32, 2))
    >>> bool((x[:5, :, :2] == y).all())
    True
    """
    T, n, dtype, rng = _check_common(T, n, _MIN_T_MEMO, dtype, seed)
    k = N_MEMORIZED_BITS
    patterns = rng.permutation(np.resize(np.arange(_N_PATTERNS), n))
    shifts = np.arange(k - 1, -1, -1)[:, None]
    bits = (patterns[None, :] >> shifts) & 1  # (5, n)
    symbols = np.full((T, n), _BLANK, dtype=np.int64)
    symbols[:k] = bits
    symbols[T - k - 1] = _CUE
    x = one_hot(symbols, _N_MEMO_SYMBOLS, dtype)
    y = one_hot(bits, 2, dtype)
    return x, y


def noiseless_memorization_success(pred, y):
    """Score noiseless memorization: solved only if every bit of every pattern is right.

    Parameters
    ----------
    pred : array_like, shape (5, n, 2)
        Output probabilities at the final 5 steps.
    y : array_like, shape (5, n, 2)
        One-hot targets from :func:`noiseless_memorization`.

    Returns
    -------
    SuccessResult
        A sequence is wrong when any of its 5 steps has the wrong arg-max;
        ``solved`` requires zero wrong sequences and all 32 patterns present
        in ``y`` (use ``n >= 32``).

    Examples
    --------
    >>> x, y = noiseless_memorization(11, 32, seed=0, dtype="float64")
    >>> noiseless_memorization_success(y, y).solved
    True
    >>> noiseless_memorization_success(y[:, :31], y[:, :31]).solved  # a pattern is missing
    False
    """
    result = class_success(pred, y, max_wrong_fraction=0)
    y = np.asarray(y)
    if y.ndim != 3 or y.shape[0] != N_MEMORIZED_BITS:
        raise DatasetError(
            f"y has shape {y.shape}; expected ({N_MEMORIZED_BITS}, n, 2) targets of the final steps"
        )
    weights = 2 ** np.arange(N_MEMORIZED_BITS - 1, -1, -1)
    seen = np.unique(weights @ np.argmax(y, axis=-1))
    if seen.size < _N_PATTERNS:
        result = result._replace(solved=False)
    return result


def _regression(pred, y):
    return regression_success(pred, y, tolerance=ADDITION_TOLERANCE, max_wrong_fraction=MAX_WRONG_FRACTION)


def _binary(pred, y):
    return binary_success(pred, y, max_wrong_fraction=MAX_WRONG_FRACTION)


def _classes(pred, y):
    return class_success(pred, y, max_wrong_fraction=MAX_WRONG_FRACTION)


def _definition_text(func):
    """A generator's docstring up to its Parameters section, as one line of prose."""
    text = func.__doc__.split("Parameters\n")[0]
    return " ".join(text.split())


def _make_tasks():
    specs = [
        (addition, 2, 1, "linear", "squared", 1, _MIN_T_MARKED, _regression),
        (multiplication, 2, 1, "linear", "squared", 1, _MIN_T_MARKED, _regression),
        (xor, 2, 1, "sigmoid", "cross_entropy", 1, _MIN_T_MARKED, _binary),
        (temporal_order, _N_ORDER_SYMBOLS, 4, "softmax", "categorical_cross_entropy", 1, _MIN_T_MARKED, _classes),
        (temporal_order_3bit, _N_ORDER_SYMBOLS, 8, "softmax", "categorical_cross_entropy", 1, _MIN_T_MARKED,
         _classes),
        (random_permutation, N_SYMBOLS_PERMUTATION, N_SYMBOLS_PERMUTATION, "softmax",
         "categorical_cross_entropy", 1, 2, _classes),
        (noiseless_memorization, _N_MEMO_SYMBOLS, 2, "softmax", "categorical_cross_entropy", N_MEMORIZED_BITS,
         _MIN_T_MEMO, noiseless_memorization_success),
    ]
    tasks = {}
    for func, n_in, n_out, output, loss, steps, min_T, success in specs:
        name = func.__name__
        tasks[name] = Task(
            name=name,
            n_in=n_in,
            n_out=n_out,
            output=output,
            loss=loss,
            output_steps=steps,
            min_T=min_T,
            generate=func,
            success=success,
            definition=_definition_text(func),
        )
    tasks[MEMORIZATION_TASK.name] = MEMORIZATION_TASK
    return tasks


#: Registry of every recurrent task: the seven pathological problems and the 2012 ``"memorization"``.
TASKS = _make_tasks()

#: Names of the seven pathological problems of Martens & Sutskever 2011, in their order.
PATHOLOGICAL_TASKS = (
    "addition",
    "multiplication",
    "xor",
    "temporal_order",
    "temporal_order_3bit",
    "random_permutation",
    "noiseless_memorization",
)


def get_task(name):
    """Look up a task record by name.

    Parameters
    ----------
    name : str
        One of the keys of :data:`TASKS`.

    Returns
    -------
    Task

    Raises
    ------
    hf_symbolic.errors.DatasetError
        For an unknown name; the message lists the valid names.

    Examples
    --------
    >>> get_task("temporal_order_3bit").n_out
    8
    """
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise DatasetError(f"unknown task {name!r}; expected one of {sorted(TASKS)}") from None
