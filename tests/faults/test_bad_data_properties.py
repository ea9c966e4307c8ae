"""Property tests (hypothesis) of the datasets and the batch check against bad data.

For random data (empty, ragged, of non-numeric or mixed dtypes, with NaN or
inf, sequences shorter than ``minimum_size``, batch sizes larger than the data,
``number_batches`` of 0) an independent statement of the documented rules
predicts whether construction must fail; then:

* a refusal is always the named error (:class:`DatasetError`,
  :class:`BatchError`) and never another exception or a hang;
* an accepted dataset serves exactly the documented items, each exactly once
  per epoch, with the values it was given (NaN and inf included where they are
  documented to pass through);
* an accepted batch has the input's dtype and ndim and the values given, and an
  array of the right dtype is passed through without a copy.

A few example-based tests run training on bad data: the run refuses before
touching the parameters.  Hand-computed chunk positions, epochs and reshuffles
of valid data are in ``test_dataset.py``.
"""

import numpy as np
import pytensor.tensor as pt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crash_worker as worker
from hf_symbolic import BatchDataset, SequenceDataset
from hf_symbolic.errors import BatchError, DatasetError
from hf_symbolic.model.checks import check_batch

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUMERIC = "biufc"


def _array_kind(a):
    """'ragged', 'nonnumeric', 'empty' or 'ok' for one entry of the data."""
    try:
        arr = np.asarray(a)
    except ValueError:
        return "ragged", None
    if arr.dtype.kind not in NUMERIC:
        return "nonnumeric", arr
    if arr.size == 0:
        return "empty", arr
    return "ok", arr


# ---------------------------------------------------------------------------------------------
# SequenceDataset
# ---------------------------------------------------------------------------------------------
@st.composite
def sequence_cases(draw):
    n_inputs = draw(st.integers(1, 3))
    n_seq = draw(st.sampled_from([1, 2, 3, 3, 4, 4, 0]))
    lengths = draw(st.lists(st.integers(0, 20), min_size=n_seq, max_size=n_seq))
    data = []
    for i in range(n_inputs):
        seqs = []
        for j, length in enumerate(lengths):
            rows = np.arange(length, dtype=np.float64)
            seqs.append(np.stack([1000.0 * j + rows, np.full(length, float(i))], axis=1))  # (length, 2)
        data.append(seqs)
    fault = draw(st.sampled_from(["none", "none", "nan", "inf", "int", "bool", "str", "object", "ragged_list",
                                  "nested_list", "length_mismatch", "missing_sequence"]))
    if n_seq and fault != "none":
        i = draw(st.integers(0, n_inputs - 1))
        j = draw(st.integers(0, n_seq - 1))
        a = data[i][j]
        if fault in ("nan", "inf") and len(a):
            a = a.copy()
            a[draw(st.integers(0, len(a) - 1)), 1] = np.nan if fault == "nan" else -np.inf
        elif fault == "int":
            a = a.astype(np.int64)
        elif fault == "bool" and i > 0:
            a = a > 0.5
        elif fault == "str":
            a = a.astype(str)
        elif fault == "object":
            a = a.astype(object)
        elif fault == "ragged_list":
            a = [[0.0, 1.0], [2.0]]
        elif fault == "nested_list":
            a = a.tolist()
        elif fault == "length_mismatch" and n_inputs > 1 and i > 0:
            a = a[:-1] if len(a) else np.zeros((1, 2))
        elif fault == "missing_sequence":
            data[i] = data[i][:-1]
            a = None
        if a is not None:
            data[i][j] = a
    batch_size = draw(st.sampled_from([None, None, 1, 2, 3, 5, 8, 25, 0]))  # 25: longer than any sequence
    minimum_size = draw(st.sampled_from([1, 1, 2, 3, 5, 8, 0]))
    number_batches = draw(st.sampled_from([1, 1, 2, 3, 5, 9, 0]))  # 9: more than the items
    seed = draw(st.integers(0, 2**32 - 1))
    return data, batch_size, number_batches, minimum_size, seed


def _expected_sequence_errors(data, batch_size, number_batches, minimum_size):
    """Every documented reason for a SequenceDataset to refuse these arguments (any one may be reported)."""
    reasons = set()
    if number_batches < 1:
        reasons.add("number_batches")
    if batch_size is not None and batch_size < 1:
        reasons.add("batch_size")
    if minimum_size < 1:
        reasons.add("minimum_size")
    if len({len(seqs) for seqs in data}) > 1:
        reasons.add("sequences but input 0 has")
    if not data[0]:
        reasons.add("zero sequences")
    for seqs in data:
        for a in seqs:
            kind, _ = _array_kind(a)
            if kind != "ok":
                reasons.add({"ragged": "not a rectangular array", "nonnumeric": "dtype",
                             "empty": "holds no values"}[kind])
    if batch_size is not None and len({len(seqs) for seqs in data}) == 1:
        for j in range(len(data[0])):
            lengths = {np.shape(seqs[j])[0] for seqs in data if _array_kind(seqs[j])[0] != "ragged"}
            if len(lengths) > 1:
                reasons.add("rows in input")
            if lengths and min(lengths) < minimum_size:
                reasons.add("shorter than minimum_size")
    return reasons


def _expected_items(data, batch_size, minimum_size):
    """``(sequence, first row, rows)`` of every item, by the documented cutting rule."""
    items = []
    for j, a in enumerate(data[0]):
        length = np.asarray(a).shape[0]
        if batch_size is None:
            items.append((j, 0, length))
        else:
            for k in range(0, length - minimum_size + 1, batch_size):
                items.append((j, k, min(batch_size, length - k)))
    return items


@SETTINGS
@given(sequence_cases())
def test_sequence_dataset_refuses_exactly_the_documented_bad_data(case):
    data, batch_size, number_batches, minimum_size, seed = case
    expected = _expected_sequence_errors(data, batch_size, number_batches, minimum_size)
    if expected:
        with pytest.raises(DatasetError) as info:
            SequenceDataset(data, batch_size, number_batches, minimum_size, seed=seed)
        assert any(reason in str(info.value) for reason in expected), (expected, str(info.value))
        return
    ds = SequenceDataset(data, batch_size, number_batches, minimum_size, seed=seed)
    items = _expected_items(data, batch_size, minimum_size)
    assert len(ds) == len(items) >= 1
    assert len(list(ds.iterate(update=False))) == number_batches

    # one epoch, one item per call: every documented item exactly once, with the given values (NaN, inf too)
    one = SequenceDataset(data, batch_size, 1, minimum_size, seed=seed)
    seen = []
    for _ in range(len(items)):
        (item,) = list(one.iterate())
        first = item[0][0, 0]
        j, k = int(first) // 1000, int(first) % 1000
        seen.append((j, k, len(item[0])))
        for i, a in enumerate(item):
            want = np.asarray(data[i][j])[k:k + len(item[0])] if batch_size else np.asarray(data[i][j])
            assert a.dtype == np.asarray(data[i][j]).dtype
            assert np.array_equal(a, want, equal_nan=a.dtype.kind == "f")
    assert sorted(seen) == sorted(items)
    assert one.position == 0  # the epoch ended


# ---------------------------------------------------------------------------------------------
# BatchDataset
# ---------------------------------------------------------------------------------------------
@st.composite
def batch_cases(draw):
    n_cases = draw(st.integers(0, 30))
    n_inputs = draw(st.integers(1, 3))
    axes, arrays = [], []
    for i in range(n_inputs):
        ndim = draw(st.integers(1, 3))
        axis = draw(st.integers(0, ndim - 1))
        shape = [draw(st.integers(1, 3)) for _ in range(ndim)]
        shape[axis] = n_cases
        a = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
        arrays.append(a)
        axes.append(axis)
    fault = draw(st.sampled_from(["none", "none", "nan", "nan", "inf", "-inf", "int", "bool", "str", "object",
                                  "fewer_cases", "complex"]))
    i = draw(st.integers(0, n_inputs - 1))
    a = arrays[i]
    if fault in ("nan", "inf", "-inf") and a.size:
        a = a.copy()
        flat = draw(st.lists(st.integers(0, a.size - 1), min_size=1, max_size=3))
        a.flat[flat] = float(fault)
    elif fault == "int":
        a = a.astype(np.int32)
    elif fault == "bool":
        a = a > 3
    elif fault == "complex":
        a = a + 1j
    elif fault == "str":
        a = a.astype(str)
    elif fault == "object":
        a = a.astype(object)
    elif fault == "fewer_cases" and n_inputs > 1 and n_cases > 0:
        a = np.take(a, range(n_cases - 1), axis=axes[i])
    arrays[i] = a
    batch_size = draw(st.sampled_from([1, 2, 3, 5, 8, 30, 40, 0]))  # 30, 40: at least the data
    number_batches = draw(st.sampled_from([1, 1, 2, 3, 4, 0]))
    return arrays, axes, batch_size, number_batches, draw(st.integers(0, 2**32 - 1))


def _expected_batch_errors(arrays, axes, batch_size, number_batches):
    """Every documented reason for a BatchDataset to refuse these arguments (any one may be reported)."""
    reasons = set()
    if number_batches < 1:
        reasons.add("number_batches")
    if batch_size < 1:
        reasons.add("batch_size")
    counts = {a.shape[ax] for a, ax in zip(arrays, axes)}
    if len(counts) > 1:
        reasons.add("disagree on the number of cases")
    if 0 in counts:
        reasons.add("0 cases")
    for i, a in enumerate(arrays):
        if a.dtype.kind not in NUMERIC:
            reasons.add(f"input {i} has dtype")
        elif a.dtype.kind in "fc" and not np.isfinite(a).all():
            first = tuple(int(v) for v in np.unravel_index(int(np.flatnonzero(~np.isfinite(a))[0]), a.shape))
            reasons.add(f"input {i} holds {int((~np.isfinite(a)).sum())} non-finite value(s) (NaN or inf), "
                        f"the first at index {first}")
    return reasons


@SETTINGS
@given(batch_cases())
def test_batch_dataset_refuses_exactly_the_documented_bad_data(case):
    arrays, axes, batch_size, number_batches, seed = case
    expected = _expected_batch_errors(arrays, axes, batch_size, number_batches)
    if expected:
        with pytest.raises(DatasetError) as info:
            BatchDataset(arrays, batch_size, number_batches, case_axis=axes, seed=seed)
        assert any(reason in str(info.value) for reason in expected), (expected, str(info.value))
        return
    ds = BatchDataset(arrays, batch_size, number_batches, case_axis=axes, seed=seed)
    n = arrays[0].shape[axes[0]]
    if batch_size >= n:  # documented: one item, the data themselves, unshuffled
        assert len(ds) == 1
        for item in ds.iterate():
            assert all(x is a for x, a in zip(item, arrays))
    else:
        assert len(ds) == n // batch_size
    items = list(ds.iterate())
    assert len(items) == number_batches
    for item in items:
        for x, a, ax in zip(item, arrays, axes):
            assert x.dtype == a.dtype and x.shape[ax] == min(batch_size, n)
            assert x.shape[:ax] + x.shape[ax + 1:] == a.shape[:ax] + a.shape[ax + 1:]


# ---------------------------------------------------------------------------------------------
# the batch check
# ---------------------------------------------------------------------------------------------
DTYPES = ["float64", "float32", "int64", "uint8", "complex128"]


@st.composite
def batch_check_cases(draw):
    n_inputs = draw(st.integers(1, 3))
    inputs = []
    for i in range(n_inputs):
        dtype = draw(st.sampled_from(DTYPES))
        ndim = draw(st.integers(0, 3))
        inputs.append(pt.tensor(f"x{i}", dtype=dtype, shape=(None,) * ndim))
    batch = []
    for x in inputs:
        shape = tuple(draw(st.integers(0, 3)) for _ in range(x.ndim))
        form = draw(st.sampled_from(["array", "array", "array", "array", "other_dtype", "other_ndim", "list",
                                     "float_list", "int_list", "big_int_list", "negative_list", "bool_list",
                                     "complex_list", "str_list", "none_list", "ragged_list", "nan_array", "scalar"]))
        base = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
        if form == "array":
            value = base.astype(x.dtype)
        elif form == "nan_array":
            value = np.asarray(base + np.nan if np.dtype(x.dtype).kind in "fc" else base, dtype=x.dtype)
        elif form == "other_dtype":
            value = base.astype(draw(st.sampled_from([d for d in DTYPES + ["bool", "int32"] if d != x.dtype])))
        elif form == "other_ndim":
            value = base.astype(x.dtype).reshape(base.shape + (1,))
        elif form == "list":
            value = base.astype(x.dtype).tolist()
        elif form == "float_list":
            value = (base + 0.5).tolist()
        elif form == "int_list":
            value = base.astype(np.int64).tolist()
        elif form == "big_int_list":
            value = (base.astype(np.int64) + 300).tolist()
        elif form == "negative_list":
            value = (-1 - base.astype(np.int64)).tolist()
        elif form == "bool_list":
            value = (base > 1).tolist()
        elif form == "complex_list":
            value = (base + 1j).tolist()
        elif form == "str_list":
            value = base.astype(str).tolist()
        elif form == "none_list":
            value = np.full(shape, None, dtype=object).tolist()
        elif form == "ragged_list":
            value = [[0.0, 1.0], [2.0]] if x.ndim == 2 else [[[0.0]], [1.0, 2.0]]
        else:  # a Python scalar
            value = 2.5 if draw(st.booleans()) else 3
        batch.append(value)
    count = draw(st.sampled_from(["right"] * 8 + ["fewer", "more"]))
    if count == "fewer":
        batch = batch[:-1]
    elif count == "more":
        batch = batch + [np.zeros(2)]
    return inputs, batch


def _convertible(value, dtype):
    """Whether a non-array value is documented to convert to ``dtype``: same kind and range, rectangular."""
    try:
        raw = np.asarray(value)
    except ValueError:
        return False
    target = np.dtype(dtype)
    allowed = {"i": "biu", "u": "biu", "f": "biuf", "c": "biufc"}[target.kind]
    if raw.dtype.kind not in allowed:
        return False
    if target.kind in "iu":
        info = np.iinfo(target)
        return raw.size == 0 or (info.min <= raw.min() and raw.max() <= info.max)
    return True


@SETTINGS
@given(batch_check_cases())
def test_check_batch_accepts_exactly_the_documented_batches(case):
    inputs, batch = case
    good = len(batch) == len(inputs)
    if good:
        for x, value in zip(inputs, batch):
            if isinstance(value, np.ndarray):
                good &= value.dtype == np.dtype(x.dtype) and value.ndim == x.ndim
            else:
                good &= _convertible(value, x.dtype) and np.asarray(value).ndim == x.ndim
    if not good:
        with pytest.raises(BatchError):
            check_batch(inputs, batch)
        return
    out = check_batch(inputs, batch)
    for x, value, a in zip(inputs, batch, out):
        assert isinstance(a, np.ndarray) and a.dtype == np.dtype(x.dtype) and a.ndim == x.ndim
        if isinstance(value, np.ndarray):
            assert a is value  # passed through, not copied (NaN and inf included)
        else:
            # converted without changing a value (a Python float NaN stays NaN)
            assert np.array_equal(a, np.asarray(value), equal_nan=a.dtype.kind in "fc")


@pytest.mark.parametrize("batch", [np.zeros((2, 3)), "ab", 3.0, None, {"x": 1}])
def test_a_batch_that_is_not_a_list_of_arrays(batch):
    x, y = pt.matrix("x"), pt.matrix("y")
    with pytest.raises(BatchError):
        check_batch([x, y], batch)


# ---------------------------------------------------------------------------------------------
# training on bad data
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return worker.build_optimizer()


def _data():
    X, Y = worker.make_data(40, np.random.default_rng(0))
    return X, Y


def test_training_on_batches_of_the_wrong_dtype_stops_before_any_change(model, tmp_path):
    opt, theta0 = model
    X, Y = _data()
    bad = SequenceDataset([[X.astype(np.float32)], [Y]], None, 1, seed=0)  # the model takes float64
    good = BatchDataset([X, Y], 10, seed=1)
    opt.set_flat(theta0)
    with pytest.raises(BatchError, match="must have dtype float64, got float32"):
        opt.train(bad, good, num_updates=3, save_progress=tmp_path / "run.ckpt", **worker.TRAIN_OPTIONS)
    assert np.array_equal(opt.get_flat(), theta0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt.lock"]  # no checkpoint was written


def test_training_with_a_batch_size_larger_than_the_data_uses_all_of_it(model):
    opt, theta0 = model
    X, Y = _data()
    whole = BatchDataset([X, Y], 1000, number_batches=3, seed=1)  # one item, served 3 times per update
    opt.set_flat(theta0)
    opt.train(whole, BatchDataset([X, Y], 10**6, seed=2), num_updates=3, **worker.TRAIN_OPTIONS)
    assert opt.result.status == "num_updates" and all(s.accepted for s in opt.result.history)
    # the gradient batch is the whole data set: the recorded cost is the full-data cost before each update
    opt.set_flat(theta0)
    assert opt.result.history[0].costs[0] == pytest.approx(opt.cost([X, Y])[0], rel=1e-14)


def test_a_nan_item_of_a_sequence_dataset_is_skipped_as_documented(model):
    opt, theta0 = model
    X, Y = _data()
    xs, ys = [X[i:i + 10].copy() for i in range(0, 40, 10)], [Y[i:i + 10] for i in range(0, 40, 10)]
    xs[1][4, 2] = np.nan
    ds = SequenceDataset([xs, ys], None, 1, seed=5)
    opt.set_flat(theta0)
    with np.errstate(invalid="ignore"):
        opt.train(ds, BatchDataset([X, Y], 10, seed=2), num_updates=8, max_failures=2, **worker.TRAIN_OPTIONS)
    rejected = [s for s in opt.result.history if not s.accepted]
    assert len(rejected) == 2 and all(s.failure == "nonfinite cost or gradient" for s in rejected)  # once per epoch
    assert opt.result.status == "num_updates" and np.all(np.isfinite(opt.result.x))
