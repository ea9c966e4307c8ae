"""Hostile and damaged checkpoints are refused with a named error; nothing is ever unpickled.

* Pickle bombs (an object array whose unpickling would run code) as a member,
  as the header, as a lone ``.npy`` file and as a raw pickle: refused, and the
  code never runs, while ``numpy.load(allow_pickle=True)`` on the same file
  shows that it would have.
* Files whose digest was recomputed after a change (the digest is not a
  signature): every field of the training state set to a wrong type, range,
  shape or dtype, non-finite parameters, a malformed history, another model, a
  future format version.  Refused before anything is restored: the file, the
  model's parameters and the datasets' positions stay as they were.
* Damage: the file truncated at every byte, every single byte flipped, npy
  headers that numpy cannot parse, a compressed member, an absurd declared
  shape.  Each is a :class:`CheckpointCorruptError` or, for a flip that only
  touches bytes nobody reads (zip timestamps, padding), a load of exactly the
  original content.
* The lock: a run that is paused in the middle of writing its checkpoint holds
  it; a second run on the same path refuses with the first one's pid and
  changes nothing, and the first one goes on to the same end as without the
  second.

Single tamperings of ``load_checkpoint`` (a flipped payload byte, an edited
header without a new digest, added or removed members, a future version) are
in ``test_checkpoint.py``; another model and changed options in ``test_training.py``.
"""

import copy
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import crash_worker as worker
from hf_symbolic.train.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from hf_symbolic.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointLockedError,
    CheckpointMismatchError,
    CheckpointVersionError,
)

import pytensor  # noqa: E402,I001  (after hf_symbolic, which links OpenBLAS)

N_UPDATES = 4
WORKER = Path(worker.__file__).resolve()
REPO = WORKER.parent.parent


@pytest.fixture(scope="module")
def model():
    return worker.build_optimizer()


@pytest.fixture(scope="module")
def trained(model, tmp_path_factory):
    """A genuine checkpoint after 3 updates, its bytes, and the uninterrupted result of N_UPDATES."""
    opt, theta0 = model
    d = tmp_path_factory.mktemp("trained")
    worker.run(opt, theta0, 3, d / "run.ckpt")
    straight = worker.run(opt, theta0, N_UPDATES, d / "straight.ckpt")
    return {"path": d / "run.ckpt", "bytes": (d / "run.ckpt").read_bytes(), "x": straight.x.copy()}


@pytest.fixture
def no_pickle(monkeypatch):
    """Any use of pickle fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle must never be used to read a checkpoint")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info.filename) for info in zf.infolist()}


def _write_members(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=allow_pickle)
    return buf.getvalue()


def _attempt_resume(opt, theta0, path):
    """Try to resume from ``path`` with fresh datasets; return (error, datasets) with the error raised."""
    grad, cg, valid = worker.make_datasets()
    opt.set_flat(theta0 + 0.5)
    with pytest.raises(CheckpointError) as info:
        opt.train(grad, cg, num_updates=N_UPDATES, validation=valid, save_progress=path, **worker.TRAIN_OPTIONS)
    return info.value, (grad, cg, valid)


def _assert_nothing_changed(opt, theta0, path, before, datasets):
    assert path.read_bytes() == before
    assert np.array_equal(opt.get_flat(), theta0 + 0.5)
    assert all(d.position == 0 for d in datasets)
    fresh = worker.make_datasets()
    for d, f in zip(datasets, fresh):  # not even the generator state moved
        assert json.dumps(d.state_dict()["json"], sort_keys=True) == json.dumps(f.state_dict()["json"], sort_keys=True)


# ---------------------------------------------------------------------------------------------
# pickle bombs
# ---------------------------------------------------------------------------------------------
class Bomb:
    """Unpickling it creates the directory ``marker`` (``os.mkdir`` is called by the unpickler)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _bomb_files(tmp_path, trained):
    marker = tmp_path / "EXPLODED"
    bomb = np.array([Bomb(marker), 1.0], dtype=object)
    files = {}
    members = _members(trained["path"])
    files["member"] = dict(members, **{"gradient_dataset/order.npy": _npy(bomb, allow_pickle=True)})
    files["header"] = dict(members, **{"__meta__.npy": _npy(bomb, allow_pickle=True)})
    files["extra member"] = dict(members, **{"payload.npy": _npy(bomb, allow_pickle=True)})
    paths = {}
    for name, m in files.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.ckpt"
        _write_members(paths[name], m)
    paths["lone npy"] = tmp_path / "lone.ckpt"
    paths["lone npy"].write_bytes(_npy(bomb, allow_pickle=True))
    paths["raw pickle"] = tmp_path / "raw.ckpt"
    paths["raw pickle"].write_bytes(pickle.dumps({"theta": Bomb(marker)}))
    return marker, paths


def test_pickle_bombs_are_refused_and_never_go_off(model, trained, tmp_path, monkeypatch):
    opt, theta0 = model
    marker, paths = _bomb_files(tmp_path, trained)
    with monkeypatch.context() as m:
        for name in ("load", "loads", "Unpickler"):
            m.setattr(pickle, name, lambda *a, **k: pytest.fail("pickle used"))
        for name, path in paths.items():
            before = path.read_bytes()
            with pytest.raises(CheckpointCorruptError) as info:
                load_checkpoint(path)
            assert str(path) in str(info.value), name
            if name in ("member", "header", "extra member"):
                assert "object (pickled) array" in str(info.value) and "refusing to unpickle" in str(info.value)
            error, datasets = _attempt_resume(opt, theta0, path)
            assert isinstance(error, CheckpointCorruptError), name
            _assert_nothing_changed(opt, theta0, path, before, datasets)
            assert not marker.exists(), name
    # control: the bombs are live, numpy with allow_pickle=True sets them off
    with np.load(paths["member"], allow_pickle=True) as z:
        z["gradient_dataset/order"]
    assert marker.is_dir()


# ---------------------------------------------------------------------------------------------
# a consistent digest over wrong content
# ---------------------------------------------------------------------------------------------
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


TAMPERED = {
    # the counters and lambda
    "update as str": (_set("update", "3"), CheckpointCorruptError, "'update' is '3'"),
    "update as float": (_set("update", 3.0), CheckpointCorruptError, "'update' is 3.0"),
    "update negative": (_set("update", -1), CheckpointCorruptError, "expected an int >= 0"),
    "update missing": (_drop("update"), CheckpointCorruptError, "'update' is None"),
    "update beyond history": (_set("update", 10**30), CheckpointCorruptError, "3 update records"),
    "best_update after update": (_set("best_update", 4), CheckpointCorruptError, "'best_update' is 4"),
    "failures negative": (_set("failures", -2), CheckpointCorruptError, "'failures' is -2"),
    "failures as bool": (_set("failures", True), CheckpointCorruptError, "'failures' is True"),
    "lambda negative": (_set("lambda", -0.5), CheckpointCorruptError, "'lambda' is -0.5"),
    "lambda zero": (_set("lambda", 0.0), CheckpointCorruptError, "a finite number > 0"),
    "lambda NaN": (_set("lambda", float("nan")), CheckpointCorruptError, "'lambda' is nan"),
    "lambda inf": (_set("lambda", float("inf")), CheckpointCorruptError, "'lambda' is inf"),
    "lambda as str": (_set("lambda", "0.1"), CheckpointCorruptError, "'lambda' is '0.1'"),
    "best_validation as str": (_set("best_validation", "low"), CheckpointCorruptError, "'best_validation'"),
    "best_validation empty": (_set("best_validation", []), CheckpointCorruptError, "'best_validation'"),
    "best_validation NaN": (_set("best_validation", [float("nan"), 0.1]), CheckpointCorruptError, "'best_validation'"),
    # history and datasets
    "history truncated": (lambda a, m: m["history"].pop(), CheckpointCorruptError, "2 update records"),
    "history record malformed": (lambda a, m: m["history"][1].pop("costs"), CheckpointCorruptError,
                                 "malformed update record"),
    "history renumbered": (lambda a, m: m["history"][0].__setitem__("update", 7), CheckpointCorruptError,
                           "update numbering"),
    "history as dict": (_set("history", {"1": {}}), CheckpointCorruptError, "'history'"),
    "datasets missing": (_drop("datasets"), CheckpointCorruptError, "'datasets'"),
    "dataset position out of range": (lambda a, m: m["datasets"]["cg_dataset"].__setitem__("position", 99),
                                      CheckpointCorruptError, "position 99"),
    "dataset order not a permutation": (_array("cg_dataset/order", lambda o: np.zeros_like(o)),
                                        CheckpointCorruptError, "permutation"),
    "dataset order wrong shape": (_array("gradient_dataset/order", lambda o: o[:5]), CheckpointCorruptError,
                                  "shape (5,)"),
    "dataset of another size": (lambda a, m: m["datasets"]["validation"]["config"].__setitem__("num_cases", 99),
                                CheckpointMismatchError, "num_cases"),
    "options as list": (_set("options", [1, 2]), CheckpointCorruptError, "'options'"),
    # the parameter vectors
    "theta wrong length": (_array("theta", lambda t: np.r_[t, 0.0]), CheckpointMismatchError, "'theta'"),
    "theta 2-d": (_array("theta", lambda t: t[None, :]), CheckpointMismatchError, "'theta'"),
    "theta 0-d": (_array("theta", lambda t: t[0]), CheckpointMismatchError, "'theta'"),
    "theta missing": (lambda a, m: a.pop("theta"), CheckpointMismatchError, "'theta'"),
    "theta float32": (_array("theta", lambda t: t.astype(np.float32)), CheckpointCorruptError, "float32"),
    "theta int": (_array("theta", lambda t: t.astype(np.int64)), CheckpointCorruptError, "int64"),
    "theta complex": (_array("theta", lambda t: t.astype(np.complex128)), CheckpointCorruptError, "complex128"),
    "theta NaN": (_array("theta", _nan_at_0), CheckpointCorruptError, "non-finite"),
    "best_theta NaN": (_array("best_theta", _nan_at_0), CheckpointCorruptError, "'best_theta' holds 1 non-finite"),
    "cg_x inf": (_array("cg_x", lambda x: x + np.inf), CheckpointCorruptError, "'cg_x' holds 21 non-finite"),
    # another model, another configuration
    "another model": (lambda a, m: m["signature"][0].__setitem__(1, [3, 5]), CheckpointMismatchError,
                      "another model"),
    "another curvature": (_set("curvature", "hessian"), CheckpointMismatchError, "curvature"),
    "other options": (lambda a, m: m["options"].__setitem__("cg_decay", 0.5), CheckpointMismatchError, "cg_decay"),
    "another CG cap growth": (lambda a, m: m["options"].__setitem__("max_cg_exponent", 1.0), CheckpointMismatchError,
                              "max_cg_exponent=1.0 (now 0.0)"),
    "first CG batches zero": (_set("first_cg_batches", 0), CheckpointCorruptError,
                              "'first_cg_batches' is 0; expected an int >= 1"),
    "first CG batches as str": (_set("first_cg_batches", "1"), CheckpointCorruptError, "'first_cg_batches' is '1'"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_re_signed_checkpoint_with_wrong_content_is_refused_before_anything_changes(model, trained, tmp_path,
                                                                                      no_pickle, case):
    opt, theta0 = model
    mutate, error_type, fragment = TAMPERED[case]
    arrays, meta = load_checkpoint(trained["path"])
    arrays, meta = {k: v.copy() for k, v in arrays.items()}, copy.deepcopy(meta)
    mutate(arrays, meta)
    path = tmp_path / "tampered.ckpt"
    save_checkpoint(path, arrays, meta)  # a valid digest over the new content
    before = path.read_bytes()
    for _ in range(2):  # the second attempt shows the lock was released
        error, datasets = _attempt_resume(opt, theta0, path)
        assert type(error) is error_type, error
        assert fragment in str(error) and str(path) in str(error), str(error)
        _assert_nothing_changed(opt, theta0, path, before, datasets)


def test_the_untampered_checkpoint_resumes_to_the_straight_result(model, trained, tmp_path):
    """The control for the cases above: the same file re-signed unchanged resumes and matches."""
    opt, theta0 = model
    arrays, meta = load_checkpoint(trained["path"])
    path = tmp_path / "resigned.ckpt"
    save_checkpoint(path, arrays, meta)
    result = worker.run(opt, theta0 + 0.5, N_UPDATES, path)
    assert result.x.tobytes() == trained["x"].tobytes()


def test_a_future_format_version_is_refused_by_training(model, trained, tmp_path):
    opt, theta0 = model
    members = _members(trained["path"])
    header = json.loads(np.lib.format.read_array(io.BytesIO(members["__meta__.npy"])).tobytes())
    header["format_version"] = FORMAT_VERSION + 1
    members["__meta__.npy"] = _npy(np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    path = tmp_path / "future.ckpt"
    _write_members(path, members)
    before = path.read_bytes()
    error, datasets = _attempt_resume(opt, theta0, path)
    assert isinstance(error, CheckpointVersionError)
    assert f"format_version {FORMAT_VERSION + 1}" in str(error) and "upgrade hf_symbolic" in str(error)
    _assert_nothing_changed(opt, theta0, path, before, datasets)


# ---------------------------------------------------------------------------------------------
# damage
# ---------------------------------------------------------------------------------------------
def _small_checkpoint(path):
    save_checkpoint(path, {"theta": np.linspace(-1.0, 1.0, 21), "order": np.arange(12), "flag": np.array(True)},
                    {"update": 3, "lambda": 0.5, "history": [{"costs": [0.25, 0.5]}]})
    return load_checkpoint(path)


def _assert_same_content(loaded, original):
    (arrays, meta), (arrays0, meta0) = loaded, original
    assert sorted(arrays) == sorted(arrays0) and meta == meta0
    assert all(arrays[k].dtype == arrays0[k].dtype and arrays[k].tobytes() == arrays0[k].tobytes() for k in arrays)


def test_truncated_at_every_byte(tmp_path, no_pickle):
    path = tmp_path / "small.ckpt"
    _small_checkpoint(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.ckpt"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointCorruptError):
            load_checkpoint(cut)


def test_truncated_training_checkpoint_at_random_bytes(trained, tmp_path, no_pickle):
    data = trained["bytes"]
    cut = tmp_path / "cut.ckpt"
    for n in np.random.default_rng(3).choice(len(data), size=200, replace=False):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointCorruptError):
            load_checkpoint(cut)


def test_every_single_byte_flipped(tmp_path, no_pickle):
    path = tmp_path / "small.ckpt"
    original = _small_checkpoint(path)
    data = path.read_bytes()
    flipped = tmp_path / "flipped.ckpt"
    refused = 0
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0xFF
        flipped.write_bytes(bytes(damaged))
        try:
            loaded = load_checkpoint(flipped)
        except CheckpointCorruptError:
            refused += 1
        else:  # only bytes that nothing reads (zip timestamps, header padding, ...) may change
            _assert_same_content(loaded, original)
    assert refused > 0.7 * len(data)


def test_training_checkpoint_bytes_flipped_at_random(trained, tmp_path, no_pickle):
    original = load_checkpoint(trained["path"])
    data = trained["bytes"]
    flipped = tmp_path / "flipped.ckpt"
    rng = np.random.default_rng(4)
    for i in rng.choice(len(data), size=300, replace=False):
        damaged = bytearray(data)
        damaged[i] ^= int(rng.integers(1, 256))
        flipped.write_bytes(bytes(damaged))
        try:
            loaded = load_checkpoint(flipped)
        except CheckpointCorruptError:
            continue
        _assert_same_content(loaded, original)


@pytest.mark.parametrize("header_change, fragment", [
    ((b"(21,), } ", b"((21,), }"), "TokenError"),  # numpy's tokenizer fallback on an unbalanced bracket
    ((b"(21,), }" + b" " * 21, b"(99999999999999999999999,), }"), "OverflowError"),
    ((b"(21,), }", b"(-2,), }"), "negative dimensions"),
    ((b"'<f8'", b"'<f9'"), "dtype descriptor"),
    ((b"'<f8'", b"'|O8'"), "object (pickled) array"),
    ((b"(21,), }" + b" " * 13, b"(10**12,), }" + b" " * 9), "unreadable"),
])
def test_npy_headers_numpy_cannot_parse(tmp_path, no_pickle, header_change, fragment):
    path = tmp_path / "small.ckpt"
    _small_checkpoint(path)
    members = _members(path)
    old, new = header_change
    assert len(old) == len(new) and old in members["theta.npy"][:128]
    members["theta.npy"] = members["theta.npy"].replace(old, new, 1)
    _write_members(path, members)
    with pytest.raises(CheckpointCorruptError, match="member 'theta'") as info:
        load_checkpoint(path)
    assert fragment in str(info.value)


def test_an_absurd_declared_shape_is_refused_without_allocating(tmp_path, no_pickle):
    path = tmp_path / "small.ckpt"
    _small_checkpoint(path)
    members = _members(path)
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}  # 8 TB
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    members["theta.npy"] = buf.getvalue() + b"\0" * 168
    _write_members(path, members)
    with pytest.raises(CheckpointCorruptError, match="member 'theta'"):
        load_checkpoint(path)


def test_a_compressed_member_is_refused_before_it_is_inflated(tmp_path, no_pickle):
    """A deflated member could expand to any size before the digest is checked (a zip bomb)."""
    path = tmp_path / "bomb.ckpt"
    _small_checkpoint(path)
    members = _members(path)
    members["theta.npy"] = _npy(np.zeros(4_000_000))  # 32 MB of zeros deflate to ~30 kB
    _write_members(path, members, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointCorruptError, match="compressed member"):
        load_checkpoint(path)


def test_deeply_nested_or_undecodable_json_headers(tmp_path, no_pickle):
    path = tmp_path / "small.ckpt"
    _small_checkpoint(path)
    members = _members(path)
    for text, fragment in [(b"[" * 200_000 + b"]" * 200_000, "JSON"), (b"\xff\xfe{}", "JSON"),
                           (b'{"format": "hf_symbolic-checkpoint", "format_version": 1.5}', "format_version 1.5"),
                           (b'{"format": "hf_symbolic-checkpoint", "format_version": 1, "meta": [], '
                            b'"digest": "00"}', "meta"),
                           (b"null", "type NoneType")]:
        members["__meta__.npy"] = _npy(np.frombuffer(text, dtype=np.uint8))
        _write_members(path, members)
        with pytest.raises(CheckpointCorruptError, match="small.ckpt") as info:
            load_checkpoint(path)
        assert fragment in str(info.value)


# ---------------------------------------------------------------------------------------------
# two runs, one path
# ---------------------------------------------------------------------------------------------
def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    flags = env.get("PYTENSOR_FLAGS", "")
    if "blas__ldflags" not in flags:
        env["PYTENSOR_FLAGS"] = ",".join(f for f in (flags, f"blas__ldflags={pytensor.config.blas__ldflags}") if f)
    return env


def test_a_second_run_on_the_same_path_is_refused_while_the_first_writes(model, trained, tmp_path):
    opt, theta0 = model
    path = tmp_path / "run.ckpt"
    cmd = [sys.executable, str(WORKER), "--checkpoint", str(path), "--num-updates", str(N_UPDATES),
           "--out", str(tmp_path / "out.json"), "--probe", "pause"]
    with open(tmp_path / "stderr.txt", "wb") as err:
        first = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=_env())
        try:
            # let the first run go until it is half-way through writing the checkpoint of update 2
            members = 0
            while True:
                line = first.stdout.readline().decode()
                assert line.startswith("@"), (tmp_path / "stderr.txt").read_text()[-3000:]
                _, phase, update = line.split()
                members += phase == "write_member" and update == "2"
                if members == 2:
                    break
                first.stdin.write(b"\n")
                first.stdin.flush()
            before = path.read_bytes()
            temporaries = sorted(f for f in os.listdir(tmp_path) if f.endswith(".tmp"))
            assert len(temporaries) == 1

            # the second run, in this process, is refused and changes nothing
            error, datasets = _attempt_resume(opt, theta0, path)
            assert isinstance(error, CheckpointLockedError)
            assert f"is locked by process {first.pid}" in str(error) and str(path) in str(error)
            _assert_nothing_changed(opt, theta0, path, before, datasets)
            assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".tmp")) == temporaries  # its write is intact

            # the first run goes on undisturbed, to the end of the straight run
            while True:
                first.stdin.write(b"\n")
                first.stdin.flush()
                if not first.stdout.readline():
                    break
            assert first.wait(timeout=60) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=60)
            first.stdin.close()
            first.stdout.close()
    with open(tmp_path / "out.json", encoding="utf-8") as f:
        out = json.load(f)
    assert out["status"] == "num_updates" and out["updates"] == N_UPDATES
    assert worker.from_exact_floats(out["x"]).tobytes() == trained["x"].tobytes()
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".tmp")) == []
