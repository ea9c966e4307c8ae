"""Tests of hf_symbolic.datasets: task generators, scorers, CURVES-like images, IDX and Fashion-MNIST."""

import doctest
import gzip
import itertools
import os
import sys

import numpy as np
import pytest

import hf_symbolic.datasets as hds
from hf_symbolic.datasets import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_ENV,
    PATHOLOGICAL_TASKS,
    TASKS,
    addition,
    curves,
    curves_data,
    get_task,
    load_fashion_mnist,
    load_idx_images,
    load_sample,
    memorization,
    memorization_data,
    memorization_error,
    multiplication,
    noiseless_memorization,
    random_permutation,
    read_idx,
    render_curves,
    temporal_order,
    temporal_order_3bit,
    write_idx,
    write_sample,
    xor,
)
from hf_symbolic.errors import DataNotFoundError, DatasetError

FLOAT_DTYPES = [np.float32, np.float64]


def _small_T(task):
    return max(task.min_T, 20)


# ---------------------------------------------------------------------------
# dtype and seed handling


def test_floatx_default_follows_pytensor():
    pytensor = pytest.importorskip("pytensor")
    x, y = memorization(T=3, n=2)
    assert x.dtype == np.dtype(pytensor.config.floatX)
    assert y.dtype == np.dtype(pytensor.config.floatX)


def test_floatx_without_pytensor_is_float64(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytensor", None)  # makes `import pytensor` raise ImportError
    x, _ = addition(10, 2)
    assert x.dtype == np.float64


@pytest.mark.parametrize("bad", [np.int32, "int64", bool, "nonsense", object])
def test_non_float_dtype_is_rejected(bad):
    with pytest.raises(DatasetError, match="dtype"):
        xor(10, 2, dtype=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, [1, 2]])
def test_bad_seed_is_rejected(bad):
    with pytest.raises(DatasetError, match="seed"):
        memorization(T=3, n=2, seed=bad)


def test_generator_seed_is_used_and_advanced():
    rng = np.random.default_rng(5)
    a, _ = memorization(T=50, n=20, seed=rng)
    b, _ = memorization(T=50, n=20, seed=rng)
    assert not np.array_equal(a, b)
    c, _ = memorization(T=50, n=20, seed=np.random.default_rng(5))
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("kwargs", [dict(T=0, n=3), dict(T=5, n=0), dict(T=5.0, n=3), dict(T=5, n=True)])
def test_bad_sizes_are_rejected(kwargs):
    with pytest.raises(DatasetError):
        memorization(**kwargs)


# ---------------------------------------------------------------------------
# memorization (2012 flagship)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_memorization_shapes_values_and_target(dtype):
    x, y = memorization(T=100, n=500, seed=3, dtype=dtype)
    assert x.shape == (100, 500, 1) and y.shape == (500, 1)
    assert x.dtype == dtype and y.dtype == dtype
    assert set(np.unique(x).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(y[:, 0], x[0, :, 0])
    # Fair bits: the mean of 50,000 bits is within 6 standard deviations of 1/2.
    assert abs(x.mean() - 0.5) < 6 * 0.5 / np.sqrt(x.size)
    # Later bits are independent of the target: agreement with step 1 is near 1/2.
    assert abs(np.mean(x[1, :, 0] == y[:, 0]) - 0.5) < 6 * 0.5 / np.sqrt(500)


def test_memorization_determinism():
    a = memorization(T=20, n=30, seed=11, dtype=np.float64)
    b = memorization(T=20, n=30, seed=11, dtype=np.float64)
    c = memorization(T=20, n=30, seed=12, dtype=np.float64)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_memorization_error_counts_threshold_mistakes():
    y = np.array([[1.0], [0.0], [1.0], [0.0], [1.0]])
    pred = np.array([[0.51], [0.49], [0.5], [0.8], [np.nan]])
    # wrong: 0.5 is not > 0.5 for a 1 target; 0.8 for a 0 target; NaN -> 3 of 5
    assert memorization_error(pred, y) == pytest.approx(3 / 5)
    assert memorization_error(y, y) == 0.0
    with pytest.raises(DatasetError, match="shape"):
        memorization_error(pred[:4], y)


def test_memorization_data_splits():
    d = memorization_data(T=12, n_train=40, n_valid=10, seed=2, dtype=np.float32)
    assert d.x_train.shape == (12, 40, 1) and d.y_train.shape == (40, 1)
    assert d.x_valid.shape == (12, 10, 1) and d.y_valid.shape == (10, 1)
    np.testing.assert_array_equal(d.y_valid[:, 0], d.x_valid[0, :, 0])
    assert not np.array_equal(d.x_train[:, :10], d.x_valid)
    e = memorization_data(T=12, n_train=40, n_valid=10, seed=2, dtype=np.float32)
    np.testing.assert_array_equal(d.x_valid, e.x_valid)


def test_memorization_defaults_follow_tasks_md():
    import inspect

    sig = inspect.signature(memorization_data)
    assert sig.parameters["T"].default == 100
    assert sig.parameters["n_train"].default == 99_000
    assert sig.parameters["n_valid"].default == 1_000


def test_memorization_task_needs_zero_errors():
    task = get_task("memorization")
    _, y = task.generate(10, 1000, seed=0, dtype=np.float64)
    pred = np.where(y > 0.5, 0.9, 0.1)
    assert task.success(pred, y).solved
    pred[7] = 1 - pred[7]
    r = task.success(pred, y)
    assert (r.n_wrong, r.solved) == (1, False)


# ---------------------------------------------------------------------------
# registry


def test_registry_contents_and_pairs():
    assert set(PATHOLOGICAL_TASKS) | {"memorization"} == set(TASKS)
    pairs = {"linear": "squared", "sigmoid": "cross_entropy", "softmax": "categorical_cross_entropy"}
    for name, task in TASKS.items():
        assert task.name == name
        assert pairs[task.output] == task.loss
        assert len(task.definition) > 100 and "\n" not in task.definition
        assert get_task(name) is task


def test_get_task_unknown_name_lists_valid_names():
    with pytest.raises(DatasetError) as info:
        get_task("adding")
    message = str(info.value)
    assert "'adding'" in message
    for name in TASKS:
        assert name in message


def test_task_is_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        get_task("xor").n_in = 3


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_task_shapes_dtypes_and_determinism(name, dtype):
    task = get_task(name)
    T, n = _small_T(task), 40
    x, y = task.generate(T, n, seed=4, dtype=dtype)
    assert x.shape == (T, n, task.n_in)
    if task.output_steps == 1:
        assert y.shape == (n, task.n_out)
    else:
        assert y.shape == (task.output_steps, n, task.n_out)
    assert x.dtype == dtype and y.dtype == dtype
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    x2, y2 = task.generate(T, n, seed=4, dtype=dtype)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = task.generate(T, n, seed=5, dtype=dtype)
    assert not np.array_equal(x, x3)
    if task.output == "softmax":
        np.testing.assert_array_equal(y.sum(axis=-1), 1)
        np.testing.assert_array_equal(x.sum(axis=-1), 1)  # one-hot inputs
    with pytest.raises(DatasetError, match="T="):
        task.generate(task.min_T - 1, n, seed=4, dtype=dtype)


# ---------------------------------------------------------------------------
# definitions, checked against independent recomputation


def _markers(x):
    """(n, 2) marked positions per sequence, from the marker channel."""
    t_idx, i_idx = np.nonzero(x[:, :, 1])
    order = np.lexsort((t_idx, i_idx))
    return t_idx[order].reshape(-1, 2), i_idx[order].reshape(-1, 2)


@pytest.mark.parametrize("T", [10, 11, 37, 100, 200])
@pytest.mark.parametrize("func", [addition, multiplication, xor])
def test_marked_tasks_positions_values_targets(func, T):
    n = 3000
    x, y = func(T, n, seed=T, dtype=np.float64)
    assert set(np.unique(x[:, :, 1]).tolist()) == {0.0, 1.0}
    assert np.all(x[:, :, 1].sum(axis=0) == 2)
    pos, rows = _markers(x)
    np.testing.assert_array_equal(rows[:, 0], np.arange(n))
    first, second = pos[:, 0], pos[:, 1]
    # first marker in the first 10% of T, second in [10%, 50%); both ranges fully used
    assert first.min() == 0 and first.max() == T // 10 - 1
    assert second.min() == T // 10 and second.max() == T // 2 - 1
    v1 = x[first, np.arange(n), 0]
    v2 = x[second, np.arange(n), 0]
    if func is xor:
        assert set(np.unique(x[:, :, 0]).tolist()) == {0.0, 1.0}
        expected = np.array([float(int(a) ^ int(b)) for a, b in zip(v1, v2)])
        np.testing.assert_array_equal(y[:, 0], expected)
        assert 0.4 < y.mean() < 0.6
    else:
        assert x[:, :, 0].min() >= 0 and x[:, :, 0].max() < 1
        assert x[:, :, 0].min() < 0.01 and x[:, :, 0].max() > 0.99
        expected = v1 + v2 if func is addition else v1 * v2
        np.testing.assert_allclose(y[:, 0], expected, rtol=0, atol=1e-15)


def test_addition_float32_target_is_exact_function_of_inputs():
    x, y = addition(50, 200, seed=1, dtype=np.float32)
    pos, _ = _markers(x)
    cols = np.arange(200)
    expected = x[pos[:, 0], cols, 0].astype(np.float64) + x[pos[:, 1], cols, 0].astype(np.float64)
    np.testing.assert_array_equal(y[:, 0], expected.astype(np.float32))


def _order_symbols(x):
    return np.argmax(x, axis=-1)  # (T, n), 0-3 distractors, 4 = X, 5 = Y


@pytest.mark.parametrize("T", [10, 13, 60, 100, 150])
@pytest.mark.parametrize(
    "func, windows",
    [
        (temporal_order, [(10, 20), (50, 60)]),
        (temporal_order_3bit, [(10, 20), (33, 43), (66, 76)]),
    ],
)
def test_temporal_order_definition(func, windows, T):
    n = 2000
    x, y = func(T, n, seed=T + len(windows), dtype=np.float64)
    assert set(np.unique(x).tolist()) == {0.0, 1.0}
    sym = _order_symbols(x)
    relevant = sym >= 4
    assert np.all(relevant.sum(axis=0) == len(windows))
    # classes enumerate X/Y strings in lexicographic order with X < Y
    classes = {"".join(s): k for k, s in enumerate(itertools.product("XY", repeat=len(windows)))}
    expected = np.empty(n, dtype=int)
    for i in range(n):
        steps = np.flatnonzero(relevant[:, i])
        for (lo, hi), t in zip(windows, steps):
            assert int(np.floor(T * lo / 100)) <= t <= int(np.floor(T * hi / 100))
        expected[i] = classes["".join("XY"[sym[t, i] - 4] for t in steps)]
    np.testing.assert_array_equal(np.argmax(y, axis=1), expected)
    # every window is fully used, and all classes occur
    for k, (lo, hi) in enumerate(windows):
        steps_k = np.array([np.flatnonzero(relevant[:, i])[k] for i in range(n)])
        assert steps_k.min() == T * lo // 100 and steps_k.max() == T * hi // 100
    assert set(expected.tolist()) == set(range(2 ** len(windows)))
    # distractors are the 4 symbols a-d, all present
    assert set(sym[~relevant].tolist()) == {0, 1, 2, 3}


def test_random_permutation_definition():
    T, n = 30, 500
    x, y = random_permutation(T, n, seed=0, dtype=np.float64)
    sym = np.argmax(x, axis=-1)
    assert set(sym[0].tolist()) == {0, 1}
    assert sym[1:].min() == 2 and sym[1:].max() == 99
    assert len(np.unique(sym[1:])) == 98
    np.testing.assert_array_equal(np.argmax(y, axis=1), sym[0])
    assert abs(np.mean(sym[0]) - 0.5) < 0.1


@pytest.mark.parametrize("T", [11, 12, 40])
def test_noiseless_memorization_layout(T):
    n = 64
    x, y = noiseless_memorization(T, n, seed=7, dtype=np.float64)
    sym = np.argmax(x, axis=-1)
    np.testing.assert_array_equal(x.sum(axis=-1), 1)
    for i in range(n):
        bits = [int(b) for b in sym[:5, i]]
        assert set(bits) <= {0, 1}
        expected = bits + [2] * (T - 11) + [3] + [2] * 5  # bits, blanks, cue, blank recall steps
        assert sym[:, i].tolist() == expected
        assert np.argmax(y[:, i], axis=-1).tolist() == bits
    patterns = [int("".join(str(b) for b in sym[:5, i]), 2) for i in range(n)]
    counts = np.bincount(patterns, minlength=32)
    np.testing.assert_array_equal(counts, 2)  # n = 64: every pattern exactly twice


def test_noiseless_memorization_32_cover_all_patterns():
    _, y = noiseless_memorization(11, 32, seed=1, dtype=np.float64)
    pats = sorted(int("".join(str(b) for b in np.argmax(y[:, i], -1)), 2) for i in range(32))
    assert pats == list(range(32))


# ---------------------------------------------------------------------------
# success scorers on hand-made predictions


@pytest.mark.parametrize("name", ["addition", "multiplication"])
def test_regression_success_rule(name):
    task = get_task(name)
    _, y = task.generate(20, 1000, seed=0, dtype=np.float64)
    r = task.success(y.copy(), y)
    assert r == (0.0, 0, 1000, True)
    near = y + 0.03  # every case within 0.04
    assert task.success(near, y).solved
    off = y.copy()
    off[:20] += 0.05  # 2% wrong
    r = task.success(off, y)
    assert (r.n_wrong, r.wrong_fraction, r.solved) == (20, 0.02, False)
    off = y.copy()
    off[:5] -= 0.05  # 0.5% wrong
    r = task.success(off, y)
    assert (r.n_wrong, r.solved) == (5, True)
    off = y.copy()
    off[:10] += 0.05  # exactly 1% is not "< 1%"
    assert not task.success(off, y).solved
    nan = y.copy()
    nan[0] = np.nan
    assert task.success(nan, y).n_wrong == 1


def test_xor_success_rule():
    task = get_task("xor")
    _, y = task.generate(20, 1000, seed=0, dtype=np.float64)
    pred = np.where(y > 0.5, 0.7, 0.3)
    assert task.success(pred, y).solved
    pred[:20] = 1 - pred[:20]
    r = task.success(pred, y)
    assert (r.n_wrong, r.solved) == (20, False)
    pred[5:20] = 1 - pred[5:20]
    assert task.success(pred, y) == (0.005, 5, 1000, True)


@pytest.mark.parametrize("name", ["temporal_order", "temporal_order_3bit", "random_permutation"])
def test_class_success_rule(name):
    task = get_task(name)
    _, y = task.generate(20, 1000, seed=0, dtype=np.float64)
    pred = 0.5 * y + 0.5 / task.n_out  # soft but right
    assert task.success(pred, y).solved
    wrong = pred.copy()
    wrong[:20] = np.roll(wrong[:20], 1, axis=1)  # arg-max moves: 2% wrong
    r = task.success(wrong, y)
    assert (r.n_wrong, r.solved) == (20, False)
    wrong[5:20] = pred[5:20]
    assert task.success(wrong, y) == (0.005, 5, 1000, True)


def test_noiseless_memorization_success_rule():
    task = get_task("noiseless_memorization")
    _, y = task.generate(15, 64, seed=0, dtype=np.float64)
    pred = 0.8 * y + 0.1
    assert task.success(pred, y) == (0.0, 0, 64, True)
    bad = pred.copy()
    bad[3, 10] = bad[3, 10, ::-1]  # one bit of one sequence wrong
    assert task.success(bad, y) == (1 / 64, 1, 64, False)
    # right on a set missing some patterns is not "all patterns right"
    assert not task.success(pred[:, :20], y[:, :20]).solved
    with pytest.raises(DatasetError, match="shape"):
        task.success(pred[:, :, :1], y)


def test_scorers_reject_mismatched_shapes():
    with pytest.raises(DatasetError, match="shape"):
        get_task("addition").success(np.zeros((5, 1)), np.zeros((4, 1)))


# ---------------------------------------------------------------------------
# CURVES-like images


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_curves_shapes_range_determinism(dtype):
    a = curves(300, seed=1, dtype=dtype)
    assert a.shape == (300, 784) and a.dtype == dtype
    assert a.min() >= 0 and a.max() <= 1
    assert a.max() == 1  # stroke centres saturate
    ink = (a > 0.5).sum(axis=1)
    assert ink.min() > 0  # every image has a stroke
    assert 0.02 < a.mean() < 0.25  # thin strokes on a dark background
    np.testing.assert_array_equal(a, curves(300, seed=1, dtype=dtype))
    assert not np.array_equal(a, curves(300, seed=2, dtype=dtype))


def test_curves_points_and_stroke_geometry():
    sigma = 0.9
    n = 16
    images, points = curves(n, seed=3, dtype=np.float64, stroke_sigma=sigma, return_points=True)
    assert points.shape == (n, 3, 2)
    assert points.min() >= 2.0 and points.max() <= 26.0
    ends = np.linalg.norm(points[:, 0] - points[:, 2], axis=1)
    assert np.all(ends >= np.linalg.norm(points[:, 0] - points[:, 1], axis=1))
    assert np.all(ends >= np.linalg.norm(points[:, 1] - points[:, 2], axis=1))
    centres = np.stack(np.meshgrid(np.arange(28) + 0.5, np.arange(28) + 0.5), axis=-1).reshape(-1, 2)  # (x, y)
    for img, p in zip(images, points):
        # Independent curve: least-squares quadratic (exact through 3 nodes) with chord-length nodes.
        d01, d12 = np.linalg.norm(p[1] - p[0]), np.linalg.norm(p[2] - p[1])
        tm = min(max(d01 / (d01 + d12), 0.1), 0.9)
        nodes = np.array([0.0, tm, 1.0])
        coef = np.polyfit(nodes, p, 2)  # (3, 2)
        tt = np.linspace(0, 1, 801)
        dense = np.stack([np.polyval(coef[:, 0], tt), np.polyval(coef[:, 1], tt)], axis=1)
        np.testing.assert_allclose(dense[[0, -1]], p[[0, 2]], atol=1e-9)
        dist = np.min(np.linalg.norm(centres[:, None, :] - dense[None, :, :], axis=2), axis=1)
        end_dist = np.min(np.linalg.norm(centres[:, None, :] - p[[0, 2]][None], axis=2), axis=1)
        assert np.all(img[dist > 4.5 * sigma] < 2e-4)
        on_stroke = (dist < 0.3) & (end_dist > 3 * sigma)
        if on_stroke.any():
            assert img[on_stroke].min() > 0.8


def test_render_straight_line_profile():
    from scipy.special import ndtr  # standard normal CDF

    sigma = 0.9
    # horizontal segment at y = 14.2 from x = 3 to x = 25, middle point off-centre
    img = render_curves([[[3.0, 14.2], [10.0, 14.2], [25.0, 14.2]]], stroke_sigma=sigma)[0]
    rows = np.arange(28)[:, None] + 0.5
    cols = np.arange(28)[None, :] + 0.5
    # Line integral of the unit-peak Gaussian profile along the segment, in closed form.
    expected = np.exp(-0.5 * ((rows - 14.2) / sigma) ** 2) * (ndtr((25 - cols) / sigma) - ndtr((3 - cols) / sigma))
    # trapezoid quadrature with samples at most sigma/2 apart: errors of a few 1e-3 near the ends
    np.testing.assert_allclose(img, expected, atol=5e-3)
    np.testing.assert_allclose(img[:, 6:22], expected[:, 6:22], atol=1e-4)


def test_render_rejects_bad_points():
    with pytest.raises(DatasetError, match="shape"):
        render_curves(np.zeros((2, 2, 2)))
    with pytest.raises(DatasetError, match="non-finite"):
        render_curves(np.full((1, 3, 2), np.nan))


@pytest.mark.parametrize("kwargs", [dict(margin="x"), dict(margin=14), dict(stroke_sigma=0), dict(size=0)])
def test_curves_bad_arguments(kwargs):
    with pytest.raises(DatasetError, match=next(iter(kwargs))):
        curves(3, **kwargs)


def test_curves_data_sizes():
    d = curves_data(n_train=30, n_test=10, seed=0, dtype=np.float32)
    assert d.train.shape == (30, 784) and d.test.shape == (10, 784)
    assert not np.array_equal(d.train[:10], d.test)


# ---------------------------------------------------------------------------
# IDX


def test_idx_header_bytes_by_hand(tmp_path):
    p = tmp_path / "v-idx1-ubyte"
    write_idx(p, np.array([1, 2, 3], dtype=np.uint8))
    assert p.read_bytes() == b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"
    q = tmp_path / "m-idx2-short"
    q.write_bytes(b"\x00\x00\x0b\x02\x00\x00\x00\x01\x00\x00\x00\x02\xff\xfe\x01\x00")
    arr = read_idx(q)
    assert arr.dtype == np.int16 and arr.tolist() == [[-2, 256]]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64, ">f8", "<i4"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    p = tmp_path / ("a" + suffix)
    write_idx(p, arr)
    back = read_idx(p)
    assert back.shape == arr.shape
    assert back.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(back, arr)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_idx_gzip_detected_by_content_and_deterministic(tmp_path):
    arr = np.arange(10, dtype=np.int32)
    p, q = tmp_path / "x", tmp_path / "y"
    write_idx(p, arr, compress=True)
    write_idx(q, arr, compress=True)
    assert p.read_bytes() == q.read_bytes()
    np.testing.assert_array_equal(read_idx(p), arr)


def _valid_bytes():
    return b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x02\x01\x02\x03\x04"


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x01" + _valid_bytes()[1:], "magic"),
        (b"\x00\x00\x07" + _valid_bytes()[3:], "type code"),
        (_valid_bytes()[:-1], "truncated"),
        (_valid_bytes() + b"\x00", "too long"),
        (_valid_bytes()[:6], "truncated"),
        (b"\x00\x00", "4-byte"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_corrupt_files_raise(tmp_path, raw, match, gz):
    p = tmp_path / "bad"
    p.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DatasetError, match=match):
        read_idx(p)


def test_idx_truncated_gzip_raises(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(_valid_bytes() * 50)[:-12])
    with pytest.raises(DatasetError, match="gzip"):
        read_idx(p)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError):
        read_idx(tmp_path / "nothing")


@pytest.mark.parametrize("arr", [np.zeros(3, dtype=np.int64), np.zeros(3, dtype=bool), np.zeros(2, dtype=complex)])
def test_idx_writer_rejects_unsupported_dtypes(tmp_path, arr):
    with pytest.raises(DatasetError, match="dtype"):
        write_idx(tmp_path / "x", arr)


# ---------------------------------------------------------------------------
# Fashion-MNIST loader and the shipped sample


def _write_fake_fashion(directory, split, n, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_load_fashion_mnist_from_directory(tmp_path, gz, split, dtype):
    images, labels = _write_fake_fashion(tmp_path, split, 7, gz=gz)
    d = load_fashion_mnist(split, path=tmp_path, dtype=dtype)
    assert d.images.shape == (7, 784) and d.images.dtype == dtype
    assert d.labels.dtype == np.int64
    np.testing.assert_array_equal(d.labels, labels)
    np.testing.assert_allclose(d.images, images.reshape(7, -1) / 255.0, rtol=np.finfo(dtype).eps)
    assert d.images.min() >= 0 and d.images.max() <= 1


def test_load_fashion_mnist_uses_environment_variable(tmp_path, monkeypatch):
    _, labels = _write_fake_fashion(tmp_path, "test", 4)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    np.testing.assert_array_equal(load_fashion_mnist("test", dtype=np.float64).labels, labels)


def test_missing_fashion_mnist_names_paths_and_install_hint(tmp_path):
    _write_fake_fashion(tmp_path, "train", 3)  # only the train files exist
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist("test", path=tmp_path)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in message
    assert isinstance(info.value, FileNotFoundError)


def test_fashion_mnist_bad_split():
    with pytest.raises(DatasetError, match="split"):
        load_fashion_mnist("validation")


def test_idx_image_pair_validation(tmp_path):
    write_idx(tmp_path / "i", np.zeros((3, 2, 2), dtype=np.uint8))
    write_idx(tmp_path / "l", np.array([0, 1], dtype=np.uint8))
    with pytest.raises(DatasetError, match="equal counts"):
        load_idx_images(tmp_path / "i", tmp_path / "l")
    write_idx(tmp_path / "l", np.array([0, 1, 12], dtype=np.uint8))
    with pytest.raises(DatasetError, match="12"):
        load_idx_images(tmp_path / "i", tmp_path / "l", n_classes=10)
    write_idx(tmp_path / "f", np.zeros((3, 2, 2), dtype=np.float32))
    with pytest.raises(DatasetError, match="uint8"):
        load_idx_images(tmp_path / "f", tmp_path / "l")


def test_shipped_sample_matches_its_writer(tmp_path):
    shipped = load_sample(dtype=np.float64)
    assert shipped.images.shape == (5, 784)
    assert shipped.labels.tolist() == [0, 1, 2, 3, 4]
    assert shipped.images.min() == 0 and shipped.images.max() == 1
    images_path, labels_path = write_sample(tmp_path)
    fresh = load_idx_images(images_path, labels_path, dtype=np.float64)
    np.testing.assert_array_equal(shipped.images, fresh.images)
    np.testing.assert_array_equal(shipped.labels, fresh.labels)
    raw = read_idx(images_path)
    assert raw.dtype == np.uint8 and raw.shape == (5, 28, 28)
    # disc image: centre pixel is ink, corner pixel is background
    assert raw[0, 14, 14] > 0 and raw[0, 0, 0] == 0


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz")),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist():
    test = load_fashion_mnist("test", dtype=np.float32)
    assert test.images.shape == (10000, 784) and test.images.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(test.labels), 1000)  # balanced: 1,000 per class
    train = load_fashion_mnist("train", dtype=np.float32)
    assert train.images.shape == (60000, 784)
    np.testing.assert_array_equal(np.bincount(train.labels), 6000)
    assert train.images.min() == 0 and train.images.max() == 1


# ---------------------------------------------------------------------------
# docstring examples


@pytest.mark.parametrize(
    "module", ["task", "memorization", "pathological", "curves", "idx", "fashion_mnist"]
)
def test_docstring_examples(module):
    mod = sys.modules[f"hf_symbolic.datasets.{module}"]
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_public_names_are_exported():
    for name in hds.__all__:
        assert hasattr(hds, name), name


# -- confidence bound of a wrong fraction (Clopper-Pearson) ---------------------------------


def _brute_force_upper_bound(k, n, confidence):
    """The p at which P(X <= k; n, p) = 1 - confidence, by bisection on the binomial CDF summed with math.comb."""
    import math

    def cdf(p):
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))

    lo, hi = 0.0, 1.0  # cdf falls from 1 at p = 0 to 0 at p = 1 (k < n)
    for _ in range(200):
        mid = (lo + hi) / 2
        if cdf(mid) > 1 - confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@pytest.mark.parametrize("k, n", [(0, 1), (0, 7), (3, 7), (6, 7), (0, 300), (2, 300), (11, 1000), (114, 1000)])
@pytest.mark.parametrize("confidence", [0.5, 0.95, 0.999])
def test_wrong_upper_bound_matches_binomial_cdf(k, n, confidence):
    from hf_symbolic.datasets import SuccessResult

    bound = SuccessResult(k / n, k, n, False).wrong_upper_bound(confidence)
    assert bound == pytest.approx(_brute_force_upper_bound(k, n, confidence), rel=1e-9, abs=1e-14)
    assert k / n < bound <= 1


def test_wrong_upper_bound_edge_cases():
    from hf_symbolic.datasets import SuccessResult

    assert SuccessResult(1.0, 5, 5, False).wrong_upper_bound(0.95) == 1.0  # all wrong
    assert SuccessResult(1.0, 1, 1, False).wrong_upper_bound(0.5) == 1.0
    assert SuccessResult(0.0, 0, 1, True).wrong_upper_bound(0.95) == pytest.approx(0.95, rel=1e-12)
    # nothing wrong: 1 - (1 - c)^(1/n), accurate where it is tiny
    assert SuccessResult(0.0, 0, 10 ** 9, True).wrong_upper_bound(0.95) == pytest.approx(-np.log(0.05) / 1e9,
                                                                                          rel=1e-6)
    # more confidence, wider bound; more sequences, narrower bound
    r = SuccessResult(0.01, 10, 1000, True)
    assert r.wrong_upper_bound(0.9) < r.wrong_upper_bound(0.95) < r.wrong_upper_bound(0.99)
    assert SuccessResult(0.01, 100, 10000, True).wrong_upper_bound(0.95) < r.wrong_upper_bound(0.95)


@pytest.mark.parametrize("bad", [0, 1, 0.0, 1.0, -0.5, 95, float("nan"), "0.95", None, True])
def test_wrong_upper_bound_rejects_bad_confidence(bad):
    from hf_symbolic.datasets import SuccessResult

    with pytest.raises(DatasetError, match=r"confidence=.*expected a probability strictly between 0 and 1"):
        SuccessResult(0.0, 0, 100, True).wrong_upper_bound(bad)
    with pytest.raises(DatasetError, match="confidence="):
        SuccessResult(0.0, 0, 100, True).confidently_solved(bad)


@pytest.mark.parametrize("k, n", [(-1, 10), (11, 10), (0, 0), (1.5, 10)])
def test_wrong_upper_bound_rejects_impossible_counts(k, n):
    from hf_symbolic.datasets import SuccessResult

    with pytest.raises(DatasetError, match=r"expected integers with 0 <= n_wrong <= n_cases"):
        SuccessResult(0.0, k, n, False).wrong_upper_bound(0.95)


def test_confidently_solved_rule():
    from hf_symbolic.datasets import SuccessResult

    # the multiplication run of issue 16: 114 of 10000 test sequences wrong
    assert not SuccessResult(0.0114, 114, 10000, False).confidently_solved(0.95)
    # largest k out of 10000 whose 95 % bound is below 1 %, found by the brute-force reference
    assert _brute_force_upper_bound(83, 10000, 0.95) < 0.01 < _brute_force_upper_bound(84, 10000, 0.95)
    assert SuccessResult(0.0083, 83, 10000, True).confidently_solved(0.95)
    assert not SuccessResult(0.0084, 84, 10000, True).confidently_solved(0.95)
    # 9 of 1000 passes the task's rule but not the bound (its 95 % bound is 1.56 %)
    assert not SuccessResult(0.009, 9, 1000, True).confidently_solved(0.95)
    # an unsolved record never counts (e.g. noiseless memorization with a pattern missing), bound or not
    assert not SuccessResult(0.0, 0, 10000, False).confidently_solved(0.95)
    # all right needs enough sequences: ln(0.05)/ln(0.99) = 298.07
    assert not SuccessResult(0.0, 0, 298, True).confidently_solved(0.95)
    assert SuccessResult(0.0, 0, 299, True).confidently_solved(0.95)
    assert SuccessResult(0.0, 0, 1000, True).confidently_solved(0.95, max_wrong_fraction=0.003)
    assert not SuccessResult(0.0, 0, 1000, True).confidently_solved(0.95, max_wrong_fraction=0.002)
    for bad in (0, -0.1, 1.5, "1%"):
        with pytest.raises(DatasetError, match=r"max_wrong_fraction=.*expected a number in \(0, 1\]"):
            SuccessResult(0.0, 0, 1000, True).confidently_solved(0.95, max_wrong_fraction=bad)
