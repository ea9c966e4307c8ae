"""Re-signed but wrong SGD checkpoints are refused before anything is restored.

The digest of a checkpoint only shows that the file is as it was written; a
file written by other means, with its digest recomputed, is read like a genuine
one.  :meth:`sgd_optimizer.train` must then refuse, with a
:class:`CheckpointCorruptError` or :class:`CheckpointMismatchError` naming the
field and the path, every state it could not continue from (counters of the
wrong type or range, a malformed history, non-finite or mistyped parameter and
momentum vectors, bad dataset states, another model or configuration), and
must refuse before it touches anything: the file, the model's parameters and
the datasets' positions and generators stay as they were.  The control: the
same file re-signed unchanged resumes to the result of an uninterrupted run,
bit for bit.

The HF counterpart of these cases is ``test_hostile_checkpoints.py``.
"""

import copy
import json

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from hf_symbolic import BatchDataset, hf_optimizer
from hf_symbolic.train.checkpoint import load_checkpoint, save_checkpoint
from hf_symbolic.errors import CheckpointCorruptError, CheckpointError, CheckpointMismatchError
from hf_symbolic.optimizer import sgd_optimizer

MODE = "FAST_COMPILE"
N_CASES, N_FEATURES = 200, 5
N_PARAMS = N_FEATURES + 1
THETA0 = np.zeros(N_PARAMS)
SETTINGS = dict(learning_rate=0.2, momentum=0.9)
N_UPDATES, N_SAVED = 5, 3


def _data(seed, n):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    Y = (X @ np.linspace(-1.0, 1.0, N_FEATURES) + 0.5 * rng.normal(size=n) > 0).astype(np.float64)
    return X, Y


def make_datasets():
    """Fresh gradient and validation datasets (4 minibatches of 50 cases; one batch of 100)."""
    return BatchDataset(list(_data(0, N_CASES)), 50, seed=1), BatchDataset(list(_data(5, 100)), 100, seed=3)


def _model(cls):
    w = pytensor.shared(np.zeros(N_FEATURES), name="w")
    b = pytensor.shared(np.float64(0.0), name="b")
    x, y = pt.matrix("x", dtype="float64"), pt.vector("y", dtype="float64")
    z = pt.dot(x, w) + b
    cost = pt.mean(pt.softplus(z) - y * z)
    error = pt.mean(pt.neq(pt.gt(z, 0), pt.gt(y, 0.5)))
    return cls([w, b], [x, y], z, [cost, error], mode=MODE)


@pytest.fixture(scope="module")
def sgd():
    return _model(sgd_optimizer)


def train(opt, num_updates, path, theta=THETA0, datasets=None):
    grad, valid = datasets or make_datasets()
    opt.set_flat(theta)
    opt.train(grad, num_updates=num_updates, validation=valid, save_progress=path, **SETTINGS)
    return opt.result


def _history_without_clock(history):
    out = []
    for s in history:
        d = s.to_json()
        d.pop("seconds")
        d.pop("timings")
        out.append(json.dumps(d, sort_keys=True))
    return out


@pytest.fixture(scope="module")
def trained(sgd, tmp_path_factory):
    """A genuine checkpoint after N_SAVED updates and the uninterrupted result of N_UPDATES."""
    d = tmp_path_factory.mktemp("sgd_trained")
    train(sgd, N_SAVED, d / "run.ckpt")
    straight = train(sgd, N_UPDATES, d / "straight.ckpt")
    arrays, meta = load_checkpoint(d / "run.ckpt")
    # the tampering below must hit a state worth restoring
    assert meta["update"] == N_SAVED and meta["best_validation"] is not None
    assert np.any(arrays["velocity"] != 0) and not np.array_equal(arrays["theta"], THETA0)
    return {"path": d / "run.ckpt", "x": straight.x.copy(), "history": _history_without_clock(straight.history)}


def _attempt_resume(opt, path):
    """Try to resume from ``path`` with fresh datasets; return (the CheckpointError raised, the datasets)."""
    datasets = make_datasets()
    with pytest.raises(CheckpointError) as info:
        train(opt, N_UPDATES, path, theta=THETA0 + 0.5, datasets=datasets)
    return info.value, datasets


def _assert_nothing_changed(opt, path, before, datasets):
    assert path.read_bytes() == before
    assert np.array_equal(opt.get_flat(), THETA0 + 0.5)
    assert all(d.position == 0 for d in datasets)
    for d, f in zip(datasets, make_datasets()):  # neither the order nor the generator state moved
        mine, fresh = d.state_dict(), f.state_dict()
        assert json.dumps(mine["json"], sort_keys=True) == json.dumps(fresh["json"], sort_keys=True)
        assert sorted(mine["arrays"]) == sorted(fresh["arrays"])
        assert all(np.array_equal(mine["arrays"][k], fresh["arrays"][k]) for k in mine["arrays"])


def _set(key, value):
    return lambda arrays, meta: meta.__setitem__(key, value)


def _drop(key):
    return lambda arrays, meta: meta.pop(key)


def _array(key, fn):
    return lambda arrays, meta: arrays.__setitem__(key, fn(arrays[key]))


def _nan_at_0(a):
    a = a.copy()
    a[0] = np.nan
    return a


def _hf_options(arrays, meta):
    meta["options"] = {"initial_lambda": 0.1, "mu": 0.03, "cg_decay": 0.95}


TAMPERED = {
    # the counters
    "update as str": (_set("update", "3"), CheckpointCorruptError, "'update' is '3'"),
    "update as float": (_set("update", 3.0), CheckpointCorruptError, "'update' is 3.0"),
    "update fractional": (_set("update", 2.7), CheckpointCorruptError, "'update' is 2.7"),
    "update negative": (_set("update", -4), CheckpointCorruptError, "'update' is -4; expected an int >= 0"),
    "update as bool": (_set("update", True), CheckpointCorruptError, "'update' is True"),
    "update missing": (_drop("update"), CheckpointCorruptError, "'update' is None"),
    "update beyond history": (_set("update", 10**30), CheckpointCorruptError, "3 update records"),
    "best_update after update": (_set("best_update", 4), CheckpointCorruptError, "'best_update' is 4"),
    "best_update negative": (_set("best_update", -1), CheckpointCorruptError, "'best_update' is -1"),
    "best_update missing": (_drop("best_update"), CheckpointCorruptError, "'best_update' is None"),
    "failures negative": (_set("failures", -2), CheckpointCorruptError, "'failures' is -2"),
    "failures as bool": (_set("failures", True), CheckpointCorruptError, "'failures' is True"),
    "failures missing": (_drop("failures"), CheckpointCorruptError, "'failures' is None"),
    "best_validation as str": (_set("best_validation", "low"), CheckpointCorruptError, "'best_validation'"),
    "best_validation empty": (_set("best_validation", []), CheckpointCorruptError, "'best_validation'"),
    "best_validation NaN": (_set("best_validation", [float("nan"), 0.1]), CheckpointCorruptError, "'best_validation'"),
    "best_validation of str": (_set("best_validation", ["0.5"]), CheckpointCorruptError, "'best_validation'"),
    # history and datasets
    "history truncated": (lambda a, m: m["history"].pop(), CheckpointCorruptError, "2 update records"),
    "history record malformed": (lambda a, m: m["history"][1].pop("costs"), CheckpointCorruptError,
                                 "malformed update record"),
    "history record not an object": (lambda a, m: m["history"].__setitem__(0, 7), CheckpointCorruptError,
                                     "malformed update record"),
    "history renumbered": (lambda a, m: m["history"][0].__setitem__("update", 7), CheckpointCorruptError,
                           "update numbering"),
    "history as dict": (_set("history", {"1": {}}), CheckpointCorruptError, "'history'"),
    "history missing": (_drop("history"), CheckpointCorruptError, "'history' is None"),
    "datasets missing": (_drop("datasets"), CheckpointCorruptError, "'datasets'"),
    "datasets as list": (_set("datasets", []), CheckpointCorruptError, "'datasets'"),
    "dataset position out of range": (lambda a, m: m["datasets"]["gradient_dataset"].__setitem__("position", 99),
                                      CheckpointCorruptError, "gradient_dataset: BatchDataset state has position 99"),
    "dataset order not a permutation": (_array("gradient_dataset/order", np.zeros_like), CheckpointCorruptError,
                                        "permutation"),
    "dataset order wrong shape": (_array("gradient_dataset/order", lambda o: o[:2]), CheckpointCorruptError,
                                  "shape (2,)"),
    # refused by the last dataset after the first one was restored: that one is put back
    "validation dataset of another size": (
        lambda a, m: m["datasets"]["validation"]["config"].__setitem__("num_cases", 99),
        CheckpointMismatchError, "validation: BatchDataset state does not match"),
    # the parameter and momentum vectors
    "theta wrong length": (_array("theta", lambda t: np.r_[t, 0.0]), CheckpointMismatchError, "'theta'"),
    "theta 2-d": (_array("theta", lambda t: t[None, :]), CheckpointMismatchError, "'theta'"),
    "theta 0-d": (_array("theta", lambda t: t[0]), CheckpointMismatchError, "'theta'"),
    "theta missing": (lambda a, m: a.pop("theta"), CheckpointMismatchError, "'theta'"),
    "theta float32": (_array("theta", lambda t: t.astype(np.float32)), CheckpointCorruptError, "float32"),
    "theta int": (_array("theta", lambda t: t.astype(np.int64)), CheckpointCorruptError, "int64"),
    "theta complex": (_array("theta", lambda t: t.astype(np.complex128)), CheckpointCorruptError, "complex128"),
    "theta NaN": (_array("theta", _nan_at_0), CheckpointCorruptError, "'theta' holds 1 non-finite"),
    "best_theta NaN": (_array("best_theta", _nan_at_0), CheckpointCorruptError, "'best_theta' holds 1 non-finite"),
    "best_theta missing": (lambda a, m: a.pop("best_theta"), CheckpointMismatchError, "'best_theta'"),
    "velocity inf": (_array("velocity", lambda v: v + np.inf), CheckpointCorruptError,
                     f"'velocity' holds {N_PARAMS} non-finite"),
    "velocity missing": (lambda a, m: a.pop("velocity"), CheckpointMismatchError, "'velocity'"),
    "velocity wrong length": (_array("velocity", lambda v: v[:-1]), CheckpointMismatchError, "'velocity'"),
    "velocity float32": (_array("velocity", lambda v: v.astype(np.float32)), CheckpointCorruptError, "float32"),
    # another model, another configuration
    "another model": (lambda a, m: m["signature"][0].__setitem__(1, [3, 5]), CheckpointMismatchError,
                      "another model"),
    "signature missing": (_drop("signature"), CheckpointMismatchError, "another model"),
    "options as list": (_set("options", [1, 2]), CheckpointCorruptError, "'options' is [1, 2]"),
    "options missing": (_drop("options"), CheckpointCorruptError, "'options' is None"),
    "options of HF training": (_hf_options, CheckpointMismatchError, "method=None"),
    "other learning rate": (lambda a, m: m["options"].__setitem__("learning_rate", 0.5), CheckpointMismatchError,
                            "learning_rate=0.5 (now 0.2)"),
    "other momentum": (lambda a, m: m["options"].__setitem__("momentum", 0.0), CheckpointMismatchError,
                       "momentum=0.0 (now 0.9)"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_re_signed_sgd_checkpoint_with_wrong_content_is_refused_before_anything_changes(sgd, trained, tmp_path,
                                                                                          case):
    mutate, error_type, fragment = TAMPERED[case]
    arrays, meta = load_checkpoint(trained["path"])
    arrays, meta = {k: v.copy() for k, v in arrays.items()}, copy.deepcopy(meta)
    mutate(arrays, meta)
    path = tmp_path / "tampered.ckpt"
    save_checkpoint(path, arrays, meta)  # a valid digest over the new content
    before = path.read_bytes()
    for _ in range(2):  # the second attempt shows that the lock was released
        error, datasets = _attempt_resume(sgd, path)
        assert type(error) is error_type, repr(error)
        assert fragment in str(error) and str(path) in str(error), str(error)
        _assert_nothing_changed(sgd, path, before, datasets)


def test_the_untampered_sgd_checkpoint_resumes_to_the_straight_result(sgd, trained, tmp_path):
    """The control for the cases above: the same file re-signed unchanged resumes, bit-identical."""
    arrays, meta = load_checkpoint(trained["path"])
    path = tmp_path / "resigned.ckpt"
    save_checkpoint(path, arrays, meta)
    result = train(sgd, N_UPDATES, path, theta=THETA0 + 0.5)  # the start is ignored: the checkpoint's is loaded
    assert result.updates == N_UPDATES and result.status == "num_updates"
    assert result.x.tobytes() == trained["x"].tobytes()
    assert _history_without_clock(result.history) == trained["history"]


def test_hf_training_refuses_an_sgd_checkpoint(trained, tmp_path):
    """The same model trained by HF: the SGD checkpoint is not taken for an HF one."""
    hf = _model(hf_optimizer)
    path = tmp_path / "sgd.ckpt"
    path.write_bytes(trained["path"].read_bytes())
    before = path.read_bytes()
    grad, valid = make_datasets()
    cg = BatchDataset(list(_data(0, N_CASES)), 50, seed=2)
    hf.set_flat(THETA0 + 0.5)
    with pytest.raises(CheckpointMismatchError) as info:
        hf.train(grad, cg, num_updates=N_UPDATES, validation=valid, save_progress=path)
    assert "curvature=None" in str(info.value) and str(path) in str(info.value)
    _assert_nothing_changed(hf, path, before, (grad, valid))
    assert cg.position == 0
