"""Minibatch datasets feeding the HF driver.

Both classes hand out *items*: an item is a list with one array per symbolic
input of the model, ready to be passed to a compiled function.  Items are
visited in a shuffled order, ``number_batches`` at a time:

* :meth:`iterate` yields ``number_batches`` consecutive items starting at the
  current position (wrapping around the end), then calls :meth:`update` when
  the generator is exhausted and ``update=True``.  Stopping the generator early
  skips that update.
* :meth:`update` moves the position forward by ``number_batches``; once
  ``position + number_batches >= len(dataset)`` the epoch is over: the data are
  reshuffled and the position goes back to 0.  Several ``iterate(update=False)``
  passes followed by one ``update()`` therefore revisit the same items, which is
  how a curvature (CG) batch is held fixed while CG runs.
* ``growth > 1`` makes the number of batches grow with training:
  after ``u`` updates it is ``min(max_batches, floor(number_batches *
  growth**u))`` (``max_batches`` defaults to all items), the geometric sample
  growth of Friedlander & Schmidt (2012, "Hybrid deterministic-stochastic
  methods for data fitting"). Small, cheap batches early, when a noisy step
  still makes progress; larger ones later, when the noise of a small batch
  limits what a step can gain (Byrd et al. 2012, "Sample size selection in
  optimization methods for machine learning").

:class:`SequenceDataset` keeps the behaviour of the ``SequenceDataset`` class
of the 2012 Theano ``hf.py`` (lists of sequences, optionally cut into chunks).
:class:`BatchDataset` is the form for large batches of cases stored in one
array per input.

Randomness
----------
``seed=None`` draws every shuffle from numpy's global legacy generator
(``numpy.random.permutation``), like the 2012 code, so calling
``numpy.random.seed`` beforehand makes a run reproducible; for the same global
seed the item order equals the one the 2012 code produced.  An ``int``,
:class:`numpy.random.SeedSequence` or :class:`numpy.random.Generator` gives the
dataset its own generator instead (a Generator passed in is used, and on
:meth:`load_state_dict` restored, in place, not copied).  Shuffles always draw
a permutation of indices, so the generator state alone determines the order.

Saving and resuming
-------------------
:meth:`state_dict` returns ``{"json": {...}, "arrays": {name: ndarray}}``: the
``"json"`` part holds only JSON data (str, int, float, list, dict) and can go
into a checkpoint's metadata; the ``"arrays"`` part (``"order"`` plus the
generator's array-valued state fields, named ``"rng.<field>"``) can be stored
as arrays.  In the JSON part an array-valued field is replaced by
``{"__array__": name}``.  The JSON part holds the dataset class, its
configuration (sizes, batch settings, a fingerprint of the data shapes), the
position, the current order and the generator state: the dataset's own
``bit_generator.state``, or for ``seed=None`` the state of numpy's global
generator at the time :meth:`state_dict` is called.
:meth:`load_state_dict` restores all of it, including the global generator in
``seed=None`` mode, so a resumed run draws exactly what an uninterrupted run
would have drawn.  When several ``seed=None`` datasets are saved, call their
``state_dict`` methods one after another with no random draws in between (and
restore them the same way): each one captures, and restores, the whole global
state.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np

from hf_symbolic.errors import DatasetError
from hf_symbolic.train.shuffled import _ShuffledItems, _check_int, _is_int

__all__ = ["BatchDataset", "SequenceDataset"]

_log = logging.getLogger(__name__)


def _shape_fingerprint(shapes) -> str:
    return hashlib.sha256(json.dumps(shapes, separators=(",", ":")).encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------
# SequenceDataset
# ---------------------------------------------------------------------------


class SequenceDataset(_ShuffledItems):
    """Items built from lists of sequences, as in the 2012 Theano ``hf.py``.

    Parameters
    ----------
    data : list of lists of array_like
        One entry per symbolic input; ``data[i][j]`` is the ``j``-th sequence
        (or ready-made batch) for input ``i``.  Every input needs the same
        number of sequences.
    batch_size : int or None
        ``None``: sequence ``j`` is one item, ``[data[0][j], data[1][j], ...]``.
        An int: every sequence is cut along axis 0 into chunks
        ``[k:k + batch_size]`` starting at ``k = 0, batch_size, 2*batch_size, ...``
        as long as ``k <= length - minimum_size``, so the last, possibly
        shorter, chunk keeps at least ``minimum_size`` rows (a trailing part
        shorter than that is not used).  All inputs' ``j``-th arrays must then
        have the same length along axis 0.
    number_batches : int
        Items yielded per :meth:`iterate` call.
    minimum_size : int, default 10
        Shortest chunk kept when cutting; also the shortest sequence accepted.
        Ignored when ``batch_size`` is None.
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        ``None`` shuffles with numpy's global RNG (see the module docs).
    growth : float, default 1.0
        Factor by which the number of batches grows per :meth:`update` (see
        the module docs); 1 keeps it fixed.
    max_batches : int or None, default None
        Most batches per :meth:`iterate` call when growing (None: all items).

    Raises
    ------
    DatasetError
        Bad ``data`` layout, different numbers of sequences per input, a
        ragged, empty or non-numeric array, a sequence shorter than
        ``minimum_size`` (or of mismatched length across inputs) when cutting,
        no items, or a size argument below 1.

    Notes
    -----
    The items are shuffled once at construction and again at each epoch end.
    Items are views of the given arrays: nothing is copied.  Unlike
    :class:`BatchDataset`, values are not checked for NaN or inf: an item
    holding them is served as it is, and the training update that uses it
    fails with a non-finite cost and is rejected (parameters kept, lambda
    raised), so such an item is skipped once per epoch.

    Examples
    --------
    >>> import numpy as np
    >>> x = [np.arange(25.0).reshape(25, 1)]      # one sequence of 25 steps
    >>> y = [np.arange(25.0).reshape(25, 1) * 2]
    >>> ds = SequenceDataset([x, y], batch_size=10, number_batches=2, minimum_size=5, seed=0)
    >>> len(ds)                                    # chunks at rows 0, 10, 20 (last one has 5 rows)
    3
    >>> sorted(int(item[0][0, 0]) for item in ds.iterate(update=False))
    [0, 20]
    """

    def __init__(self, data, batch_size, number_batches, minimum_size=10, *, seed=None, growth=1.0,
                 max_batches=None):
        super().__init__(number_batches, seed, growth, max_batches)
        if batch_size is not None:
            batch_size = _check_int(batch_size, "batch_size")
        self._batch_size = batch_size
        self._minimum_size = _check_int(minimum_size, "minimum_size")
        self._data = self._validate(data)
        self._items = self._build_items()
        if not self._items:
            raise DatasetError("data yield zero items; expected at least one sequence")
        self._order = self._permutation(len(self._items))

    def _validate(self, data) -> list[list[np.ndarray]]:
        if not isinstance(data, (list, tuple)) or len(data) == 0:
            raise DatasetError(
                f"data = {data!r:.100} of type {type(data).__name__}; expected a non-empty list "
                "with one list of arrays per symbolic input"
            )
        out = []
        for i, seqs in enumerate(data):
            if not isinstance(seqs, (list, tuple)):
                raise DatasetError(
                    f"data[{i}] has type {type(seqs).__name__}; expected a list of arrays, one per sequence "
                    "(use list(array) to split an array along its first axis)"
                )
            if len(seqs) != len(data[0]):
                raise DatasetError(
                    f"input {i} has {len(seqs)} sequences but input 0 has {len(data[0])}; "
                    "every input needs one array per sequence"
                )
            arrays = []
            for j, seq in enumerate(seqs):
                try:
                    a = np.asarray(seq)
                except (ValueError, TypeError) as exc:  # ragged nested lists
                    raise DatasetError(f"data[{i}][{j}] is not a rectangular array: {exc}") from exc
                if a.dtype.kind not in "biufc":
                    raise DatasetError(
                        f"data[{i}][{j}] has dtype {a.dtype}; expected a numeric (bool/int/float/complex) dtype"
                    )
                if a.size == 0:
                    raise DatasetError(
                        f"data[{i}][{j}] has shape {a.shape} and holds no values; expected a non-empty array"
                    )
                arrays.append(a)
            out.append(arrays)
        if len(out[0]) == 0:
            raise DatasetError("data hold zero sequences; expected at least one")
        if self._batch_size is not None:
            for j in range(len(out[0])):
                for i in range(len(out)):
                    if out[i][j].ndim == 0:
                        raise DatasetError(
                            f"data[{i}][{j}] is 0-d; cutting into chunks needs arrays with ndim >= 1"
                        )
                length = out[0][j].shape[0]
                for i in range(1, len(out)):
                    if out[i][j].shape[0] != length:
                        raise DatasetError(
                            f"sequence {j} has {out[i][j].shape[0]} rows in input {i} but {length} in input 0; "
                            "the arrays of one sequence must have the same length along axis 0"
                        )
                if length < self._minimum_size:
                    raise DatasetError(
                        f"sequence {j} has length {length} along axis 0, shorter than minimum_size = "
                        f"{self._minimum_size}; drop it or lower minimum_size"
                    )
        return out

    def _build_items(self) -> list[tuple[np.ndarray, ...]]:
        n_inputs = len(self._data)
        items = []
        for j in range(len(self._data[0])):
            if self._batch_size is None:
                items.append(tuple(self._data[i][j] for i in range(n_inputs)))
                continue
            length = self._data[0][j].shape[0]
            for k in range(0, length - self._minimum_size + 1, self._batch_size):
                items.append(tuple(self._data[i][j][k:k + self._batch_size] for i in range(n_inputs)))
        return items

    # hooks
    def _item(self, index: int) -> list:
        return list(self._items[self._order[index]])

    def _reshuffle(self) -> None:
        self._order = self._permutation(len(self._items))

    def _order_length(self) -> int:
        return len(self._items)

    def _config(self) -> dict:
        shapes = [[list(a.shape) for a in seqs] for seqs in self._data]
        return {
            "num_items": len(self._items),
            "num_inputs": len(self._data),
            "num_sequences": len(self._data[0]),
            "batch_size": self._batch_size,
            "minimum_size": self._minimum_size,
            "number_batches": self._initial_batches,
            "shapes_sha256": _shape_fingerprint(shapes),
            **self._growth_config(),
        }

    def __len__(self) -> int:
        return len(self._items)

    @property
    def num_sequences(self) -> int:
        """Number of sequences per input."""
        return len(self._data[0])

    @property
    def batch_size(self):
        """Chunk length, or None when every sequence is one item."""
        return self._batch_size

    @property
    def minimum_size(self) -> int:
        """Shortest chunk kept when cutting sequences."""
        return self._minimum_size

    def __repr__(self) -> str:
        return (
            f"SequenceDataset(num_items={len(self)}, num_inputs={len(self._data)}, "
            f"num_sequences={self.num_sequences}, batch_size={self._batch_size}, "
            f"number_batches={self._number_batches}, minimum_size={self._minimum_size}, "
            f"rng_mode={self.rng_mode!r}, position={self._position})"
        )


# ---------------------------------------------------------------------------
# BatchDataset
# ---------------------------------------------------------------------------


class BatchDataset(_ShuffledItems):
    """Minibatches of ``batch_size`` cases drawn from one big array per input.

    Parameters
    ----------
    arrays : list of array_like
        One array per symbolic input, holding all cases along its case axis.
    batch_size : int
        Cases per item.  If ``batch_size >= num_cases`` there is a single item,
        the unshuffled data themselves.  Otherwise there are
        ``num_cases // batch_size`` items per epoch, taken as consecutive
        slices of a permutation of the cases; the ``num_cases % batch_size``
        cases left over are not used in that epoch (with ``shuffle=False``
        always the same last cases).
    number_batches : int, default 1
        Items yielded per :meth:`iterate` call.
    case_axis : int or list of int, default 0
        Axis holding the cases, for all inputs or per input (negative values
        count from the end).  E.g. ``[1, 0]`` for an RNN input of shape
        ``(time, batch, features)`` and a target of shape ``(batch, outputs)``.
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        ``None`` shuffles with numpy's global RNG (see the module docs).
    shuffle : bool, default True
        Draw a new permutation of the cases at construction and at every epoch
        end.  With ``False`` the cases stay in order, no random numbers are
        drawn and items are views (slices) of the arrays.
    growth : float, default 1.0
        Factor by which the number of batches grows per :meth:`update` (see
        the module docs); 1 keeps it fixed.
    max_batches : int or None, default None
        Most batches per :meth:`iterate` call when growing (None: all items).

    Raises
    ------
    DatasetError
        No arrays, an array without cases (0-d or zero cases), arrays that
        disagree on the number of cases, non-numeric dtype, NaN or inf values
        (checked once here), a ``case_axis`` out of range or of the wrong
        length, ``batch_size`` or ``number_batches`` below 1, ``growth`` below 1
        or ``max_batches`` below ``number_batches``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((5, 8, 3))                   # (time, batch, features)
    >>> y = np.arange(8.0).reshape(8, 1)          # (batch, outputs)
    >>> ds = BatchDataset([x, y], batch_size=4, case_axis=[1, 0], seed=0)
    >>> len(ds), ds.num_cases
    (2, 8)
    >>> [a.shape for a in next(ds.iterate())]
    [(5, 4, 3), (4, 1)]

    A batch that doubles after every update, up to 4 items of 4 cases:

    >>> ds = BatchDataset([np.zeros((40, 2))], batch_size=4, growth=2.0, max_batches=4, seed=0)
    >>> sizes = []
    >>> for _ in range(4):
    ...     sizes.append(sum(len(item[0]) for item in ds.iterate()))
    >>> sizes
    [4, 8, 16, 16]
    """

    def __init__(self, arrays, batch_size, number_batches=1, *, case_axis=0, seed=None, shuffle=True,
                 growth=1.0, max_batches=None):
        super().__init__(number_batches, seed, growth, max_batches)
        self._batch_size = _check_int(batch_size, "batch_size")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise DatasetError(f"shuffle = {shuffle!r}; expected a bool")
        self._shuffle = bool(shuffle)
        if not isinstance(arrays, (list, tuple)) or len(arrays) == 0:
            raise DatasetError(
                f"arrays of type {type(arrays).__name__}; "
                "expected a non-empty list with one array per symbolic input"
            )
        self._arrays = [np.asarray(a) for a in arrays]
        self._axes = self._normalize_axes(case_axis)
        counts = [a.shape[ax] for a, ax in zip(self._arrays, self._axes)]
        if len(set(counts)) != 1:
            detail = ", ".join(f"input {i} has {c} along axis {ax}"
                               for i, (c, ax) in enumerate(zip(counts, self._axes)))
            raise DatasetError(f"inputs disagree on the number of cases: {detail}")
        self._num_cases = counts[0]
        if self._num_cases == 0:
            raise DatasetError("data are empty (0 cases); expected at least one case")
        self._check_values()
        self._whole = self._batch_size >= self._num_cases
        self._num_items = 1 if self._whole else self._num_cases // self._batch_size
        self._order = np.arange(self._num_cases)
        self._reshuffle()

    def _normalize_axes(self, case_axis) -> list[int]:
        n = len(self._arrays)
        if _is_int(case_axis):
            axes = [case_axis] * n
        elif isinstance(case_axis, (list, tuple)):
            if len(case_axis) != n:
                raise DatasetError(
                    f"case_axis = {case_axis!r} has {len(case_axis)} entries; expected {n}, one per input"
                )
            axes = list(case_axis)
        else:
            raise DatasetError(f"case_axis = {case_axis!r}; expected an int or a list of {n} ints")
        out = []
        for i, (a, ax) in enumerate(zip(self._arrays, axes)):
            if not _is_int(ax):
                raise DatasetError(f"case_axis for input {i} is {ax!r}; expected an int")
            if a.ndim == 0:
                raise DatasetError(f"input {i} is 0-d; expected an array with a case axis")
            if not -a.ndim <= ax < a.ndim:
                raise DatasetError(
                    f"case_axis {ax} is out of range for input {i} with shape {a.shape}; "
                    f"expected -{a.ndim} <= case_axis < {a.ndim}"
                )
            out.append(int(ax) % a.ndim)
        return out

    def _check_values(self) -> None:
        for i, a in enumerate(self._arrays):
            if a.dtype.kind not in "biufc":
                raise DatasetError(
                    f"input {i} has dtype {a.dtype}; expected a numeric (bool/int/float/complex) dtype"
                )
            if a.dtype.kind in "fc":
                finite = np.isfinite(a)
                if not finite.all():
                    bad = np.argwhere(~finite)
                    raise DatasetError(
                        f"input {i} holds {len(bad)} non-finite value(s) (NaN or inf), the first at index "
                        f"{tuple(int(v) for v in bad[0])}; expected finite data"
                    )

    # hooks
    def _reshuffle(self) -> None:
        if self._shuffle and not self._whole:
            self._order = self._permutation(self._num_cases)

    def _item(self, index: int) -> list:
        if self._whole:
            return list(self._arrays)
        start = index * self._batch_size
        stop = start + self._batch_size
        if not self._shuffle:
            return [a[(slice(None),) * ax + (slice(start, stop),)] for a, ax in zip(self._arrays, self._axes)]
        idx = self._order[start:stop]
        return [np.take(a, idx, axis=ax) for a, ax in zip(self._arrays, self._axes)]

    def _order_length(self) -> int:
        return self._num_cases

    def _config(self) -> dict:
        return {
            "num_items": self._num_items,
            "num_cases": self._num_cases,
            "batch_size": self._batch_size,
            "number_batches": self._initial_batches,
            "case_axes": list(self._axes),
            "shapes": [list(a.shape) for a in self._arrays],
            "shuffle": self._shuffle,
            **self._growth_config(),
        }

    def __len__(self) -> int:
        return self._num_items

    @property
    def num_cases(self) -> int:
        """Number of cases in the data."""
        return self._num_cases

    @property
    def batch_size(self) -> int:
        """Cases per item (all cases when it exceeds ``num_cases``)."""
        return self._batch_size

    @property
    def case_axes(self) -> tuple[int, ...]:
        """Non-negative case axis of every input."""
        return tuple(self._axes)

    @property
    def shuffle(self) -> bool:
        """Whether cases are reshuffled every epoch."""
        return self._shuffle

    def __repr__(self) -> str:
        return (
            f"BatchDataset(num_items={len(self)}, num_cases={self._num_cases}, "
            f"batch_size={self._batch_size}, number_batches={self._number_batches}, "
            f"case_axes={self._axes}, shuffle={self._shuffle}, rng_mode={self.rng_mode!r}, "
            f"position={self._position})"
        )
