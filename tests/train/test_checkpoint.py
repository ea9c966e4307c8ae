"""Tests of hf_symbolic.train.checkpoint: round trip, tamper/corruption detection, atomic writes, lock."""

import errno
import io
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import hf_symbolic.train.checkpoint as ckpt
from hf_symbolic.train.checkpoint import FORMAT_VERSION, CheckpointLock, load_checkpoint, save_checkpoint
from hf_symbolic.errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointLockedError,
    CheckpointVersionError,
    CheckpointWriteError,
)

REPO_ROOT = Path(ckpt.__file__).resolve().parents[2]


def _sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "w32": rng.standard_normal((3, 4)).astype(np.float32),
        "w64": rng.standard_normal(7),
        "steps": np.array([2**62, -(2**62), 5], dtype=np.int64),
        "scalar": np.array(3.25),
        "empty": np.zeros((0, 5)),
        "flags": np.array([True, False]),
        "z": np.array([1 + 2j, -0.5j], dtype=np.complex128),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "bigendian": np.arange(4, dtype=">f8"),
        "u8": np.arange(250, 256, dtype=np.uint8),
    }


def _sample_meta():
    return {
        "step": 12,
        "rng": {"state": 2**127 + 12345, "inc": 3**80, "neg": -(2**100)},
        "floats": [0.1, 1 / 3, 5e-324, 1.7976931348623157e308, -0.0, 2.0**-1074 * 3],
        "nested": {"name": "lambda", "values": (1, 2.5, None, True)},
        "text": "λ = 0.7 ✓",
        "np_scalars": [np.float32(0.1), np.int64(-7), np.bool_(True)],
        "nonfinite": [float("inf"), float("-inf"), float("nan")],
    }


def _read_members(path):
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info.filename) for info in zf.infolist()}


def _write_members(path, members):
    """Write a fresh, internally consistent zip (CRCs recomputed) holding ``members``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def _npy_array(data):
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def _header(path):
    members = _read_members(path)
    return json.loads(_npy_array(members["__meta__.npy"]).tobytes().decode("utf-8"))


def _assert_unchanged(path, before):
    assert Path(path).read_bytes() == before


# ---------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------


def test_round_trip_arrays_and_meta_exact(tmp_path):
    path = tmp_path / "run.ckpt"
    arrays = _sample_arrays()
    meta = _sample_meta()
    save_checkpoint(path, arrays, meta)

    # Exactly the requested name: no ".npz" appended, no temp file left.
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]

    loaded, loaded_meta = load_checkpoint(path)
    assert set(loaded) == set(arrays)
    for name, arr in arrays.items():
        got = loaded[name]
        assert got.dtype == arr.dtype, name
        assert got.shape == arr.shape, name
        assert got.tobytes() == np.ascontiguousarray(arr).tobytes(), name

    assert loaded_meta["step"] == 12
    assert loaded_meta["rng"] == {"state": 2**127 + 12345, "inc": 3**80, "neg": -(2**100)}
    assert type(loaded_meta["rng"]["inc"]) is int
    expected_floats = [0.1, 1 / 3, 5e-324, 1.7976931348623157e308, -0.0, 2.0**-1074 * 3]
    for got, want in zip(loaded_meta["floats"], expected_floats):
        assert got.hex() == want.hex()  # bit-exact, including the sign of -0.0
    assert loaded_meta["nested"] == {"name": "lambda", "values": [1, 2.5, None, True]}
    assert loaded_meta["text"] == "λ = 0.7 ✓"
    assert loaded_meta["np_scalars"] == [float(np.float32(0.1)), -7, True]
    assert type(loaded_meta["np_scalars"][1]) is int
    inf, ninf, nan = loaded_meta["nonfinite"]
    assert inf == math.inf and ninf == -math.inf and math.isnan(nan)
    # Bookkeeping keys are not returned.
    assert not {"format", "format_version", "digest"} & set(loaded_meta)


def test_file_is_standard_npz_with_json_header(tmp_path):
    path = tmp_path / "c"
    save_checkpoint(str(path), {"a": np.arange(3)}, {"k": 1})
    # An independent reader (numpy itself, no pickle) sees the members.
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["__meta__", "a"]
        np.testing.assert_array_equal(z["a"], np.arange(3))
        assert z["__meta__"].dtype == np.uint8
    header = _header(path)
    assert header["format"] == "hf_symbolic-checkpoint"
    assert header["format_version"] == FORMAT_VERSION == 1
    assert header["meta"] == {"k": 1}
    assert len(header["digest"]) == 64
    # Uncompressed.
    with zipfile.ZipFile(path) as zf:
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_STORED}


def test_overwrite_replaces_previous_and_honours_umask(tmp_path):
    path = tmp_path / "c"
    save_checkpoint(path, {"a": np.zeros(2)}, {"v": 1})
    save_checkpoint(path, {"b": np.ones(3)}, {"v": 2})
    arrays, meta = load_checkpoint(path)
    assert list(arrays) == ["b"] and meta == {"v": 2}
    old = os.umask(0)
    os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~old


# ---------------------------------------------------------------------------
# Corruption and tampering
# ---------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.ckpt"
    save_checkpoint(path, {"theta": np.linspace(-1.0, 1.0, 32), "step": np.array(5)}, {"step": 5, "lr": 0.25})
    return path


def test_flipped_byte_in_array_data_is_detected(good):
    data = bytearray(good.read_bytes())
    payload = np.linspace(-1.0, 1.0, 32).tobytes()
    at = bytes(data).find(payload)
    assert at > 0
    data[at + 100] ^= 0x01
    good.write_bytes(bytes(data))
    before = good.read_bytes()
    with pytest.raises(CheckpointCorruptError, match="good.ckpt"):
        load_checkpoint(good)
    _assert_unchanged(good, before)


def test_repacked_archive_with_modified_array_fails_digest(good):
    members = _read_members(good)
    theta = _npy_array(members["theta.npy"])
    theta[3] += 1e-12
    members["theta.npy"] = _npy_bytes(theta)
    _write_members(good, members)  # CRCs are valid, only the digest can tell
    with pytest.raises(CheckpointCorruptError, match="digest") as info:
        load_checkpoint(good)
    assert str(good) in str(info.value)


def test_edited_json_meta_fails_digest(good):
    members = _read_members(good)
    header = json.loads(_npy_array(members["__meta__.npy"]).tobytes())
    header["meta"]["lr"] = 0.5
    text = json.dumps(header).encode("utf-8")
    members["__meta__.npy"] = _npy_bytes(np.frombuffer(text, dtype=np.uint8))
    _write_members(good, members)
    with pytest.raises(CheckpointCorruptError, match="digest"):
        load_checkpoint(good)


@pytest.mark.parametrize("change", ["add", "remove", "rename"])
def test_added_removed_or_renamed_member_fails_digest(good, change):
    members = _read_members(good)
    if change == "add":
        members["extra.npy"] = _npy_bytes(np.zeros(1))
    elif change == "remove":
        del members["step.npy"]
    else:
        members["stepX.npy"] = members.pop("step.npy")
    _write_members(good, members)
    with pytest.raises(CheckpointCorruptError, match="digest"):
        load_checkpoint(good)


def test_changed_dtype_with_same_bytes_fails_digest(good):
    members = _read_members(good)
    theta = _npy_array(members["theta.npy"])
    members["theta.npy"] = _npy_bytes(theta.view(np.int64))  # identical bytes, other dtype
    _write_members(good, members)
    with pytest.raises(CheckpointCorruptError, match="digest"):
        load_checkpoint(good)


@pytest.mark.parametrize("keep", ["half", "ten", "none"])
def test_truncated_file_is_corrupt(good, keep):
    data = good.read_bytes()
    cut = {"half": len(data) // 2, "ten": 10, "none": 0}[keep]
    good.write_bytes(data[:cut])
    before = good.read_bytes()
    with pytest.raises(CheckpointCorruptError, match="good.ckpt"):
        load_checkpoint(good)
    _assert_unchanged(good, before)


def test_not_an_archive(tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("this is not a checkpoint\n" * 20)
    with pytest.raises(CheckpointCorruptError, match="notes.txt"):
        load_checkpoint(text_file)
    npy = tmp_path / "single.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(CheckpointCorruptError, match="single .npy"):
        load_checkpoint(npy)


def test_object_array_is_refused_without_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "evil.ckpt"
    header = {"format": "hf_symbolic-checkpoint", "format_version": 1, "meta": {}, "digest": "0" * 64}
    with open(path, "wb") as f:
        np.savez(
            f,
            payload=np.array([{"x": 1}, None], dtype=object),
            __meta__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            allow_pickle=True,
        )
    before = path.read_bytes()

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle must never be called by load_checkpoint")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    with pytest.raises(CheckpointCorruptError, match="object") as info:
        load_checkpoint(path)
    assert "payload" in str(info.value) and "evil.ckpt" in str(info.value)
    _assert_unchanged(path, before)


def _write_raw(path, header_obj=None, header_text=None, **arrays):
    text = header_text if header_text is not None else json.dumps(header_obj)
    members = {f"{k}.npy": _npy_bytes(v) for k, v in arrays.items()}
    if text is not ...:
        members["__meta__.npy"] = _npy_bytes(np.frombuffer(text.encode("utf-8"), dtype=np.uint8))
    _write_members(path, members)


def test_missing_meta_member(tmp_path):
    path = tmp_path / "nometa"
    _write_raw(path, header_text=..., a=np.zeros(2))
    with pytest.raises(CheckpointCorruptError, match="__meta__") as info:
        load_checkpoint(path)
    assert "nometa" in str(info.value)


def test_invalid_json_header(tmp_path):
    path = tmp_path / "badjson"
    _write_raw(path, header_text='{"format": "hf_symbolic-checkpoint", ', a=np.zeros(2))
    with pytest.raises(CheckpointCorruptError, match="JSON"):
        load_checkpoint(path)


def test_wrong_format_name(tmp_path):
    path = tmp_path / "other"
    _write_raw(path, {"format": "somebody-else", "format_version": 1, "meta": {}, "digest": "0" * 64})
    with pytest.raises(CheckpointCorruptError, match="somebody-else"):
        load_checkpoint(path)


def test_future_version_is_refused(tmp_path):
    path = tmp_path / "future"
    _write_raw(path, {"format": "hf_symbolic-checkpoint", "format_version": FORMAT_VERSION + 1,
                      "meta": {}, "digest": "0" * 64, "new_field": [1]})
    with pytest.raises(CheckpointVersionError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert f"format_version {FORMAT_VERSION + 1}" in msg
    assert f"<= {FORMAT_VERSION}" in msg
    assert "future" in msg


def test_missing_file_is_plain_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint(tmp_path / "absent.ckpt")
    assert not isinstance(info.value, CheckpointError)
    assert "absent.ckpt" in str(info.value)


# ---------------------------------------------------------------------------
# Write failures
# ---------------------------------------------------------------------------


@pytest.fixture
def previous(tmp_path):
    path = tmp_path / "state.ckpt"
    save_checkpoint(path, {"x": np.arange(10.0)}, {"step": 1})
    return path, path.read_bytes()


def _assert_previous_intact(path, before):
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary file left
    arrays, meta = load_checkpoint(path)
    np.testing.assert_array_equal(arrays["x"], np.arange(10.0))
    assert meta == {"step": 1}


def test_replace_permission_denied(previous, monkeypatch):
    path, before = previous

    def deny(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", deny)
    with pytest.raises(CheckpointWriteError, match="state.ckpt") as info:
        save_checkpoint(path, {"x": np.zeros(3)}, {"step": 2})
    assert isinstance(info.value.__cause__, PermissionError)
    assert isinstance(info.value, OSError)
    monkeypatch.undo()
    _assert_previous_intact(path, before)


def test_fsync_no_space(previous, monkeypatch):
    path, before = previous

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointWriteError, match="No space left") as info:
        save_checkpoint(path, {"x": np.zeros(3)}, {"step": 2})
    assert info.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    _assert_previous_intact(path, before)


def _failing_write_array(exc_factory, monkeypatch):
    """Let the first member be written, then fail part-way through the second."""
    real = np.lib.format.write_array
    calls = []

    def write_array(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"\x93NUMPY partial")
            raise exc_factory()
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_array)
    return calls


def test_disk_full_while_writing_arrays(previous, monkeypatch):
    path, before = previous
    calls = _failing_write_array(lambda: OSError(errno.ENOSPC, "No space left on device"), monkeypatch)
    with pytest.raises(CheckpointWriteError, match="state.ckpt"):
        save_checkpoint(path, {"x": np.zeros(3), "y": np.ones(4)}, {"step": 2})
    assert len(calls) == 2
    monkeypatch.undo()
    _assert_previous_intact(path, before)


def test_keyboard_interrupt_while_writing(previous, monkeypatch):
    path, before = previous
    _failing_write_array(KeyboardInterrupt, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"x": np.zeros(3), "y": np.ones(4)}, {"step": 2})
    monkeypatch.undo()
    _assert_previous_intact(path, before)


def test_keyboard_interrupt_at_fsync(previous, monkeypatch):
    path, before = previous

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"x": np.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    _assert_previous_intact(path, before)


def test_directory_missing_or_removed(tmp_path):
    with pytest.raises(CheckpointWriteError, match="nowhere") as info:
        save_checkpoint(tmp_path / "nowhere" / "c.ckpt", {"a": np.zeros(1)}, {})
    assert isinstance(info.value.__cause__, FileNotFoundError)
    gone = tmp_path / "gone"
    gone.mkdir()
    gone.rmdir()
    with pytest.raises(CheckpointWriteError, match="gone"):
        save_checkpoint(gone / "c.ckpt", {"a": np.zeros(1)}, {})
    assert sorted(os.listdir(tmp_path)) == []


def test_target_is_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(CheckpointWriteError, match="'.*d'"):
        save_checkpoint(tmp_path / "d", {"a": np.zeros(1)}, {})
    assert sorted(os.listdir(tmp_path)) == ["d"]


@pytest.mark.parametrize(
    "arrays, meta, fragment",
    [
        ({"a": np.array([object()], dtype=object)}, {}, "dtype object"),
        ({"a": np.array(["s"])}, {}, "dtype <U1"),
        ({"__meta__": np.zeros(1)}, {}, "reserved"),
        ({"": np.zeros(1)}, {}, "non-empty str"),
        ({"a": np.zeros(1)}, {"w": np.zeros(2)}, "meta['w']"),
        ({"a": np.zeros(1)}, {"d": {1: "x"}}, "key 1 of type int"),
        ({"a": np.zeros(1)}, {"s": {1, 2}}, "type set"),
        ({"a": np.zeros(1)}, [("k", 1)], "meta must be a mapping"),
    ],
)
def test_invalid_content_is_refused_before_writing(previous, arrays, meta, fragment):
    path, before = previous
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, arrays, meta)
    assert fragment in str(info.value)
    assert "state.ckpt" in str(info.value)
    _assert_previous_intact(path, before)


# ---------------------------------------------------------------------------
# Lock
# ---------------------------------------------------------------------------


def test_lock_same_process_two_objects(tmp_path):
    path = tmp_path / "c.ckpt"
    first = CheckpointLock(path)
    with first:
        assert first.locked
        assert (tmp_path / "c.ckpt.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(CheckpointLockedError) as info:
            CheckpointLock(path).acquire()
        assert str(path) in str(info.value) and str(os.getpid()) in str(info.value)
        with pytest.raises(CheckpointLockedError, match="already locked by this"):
            first.acquire()
    assert not first.locked
    second = CheckpointLock(path).acquire()
    second.release()
    second.release()  # idempotent


_HOLDER = """
import sys
from hf_symbolic.train.checkpoint import CheckpointLock
lock = CheckpointLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_held_by_other_process_then_sigkill(tmp_path):
    path = tmp_path / "shared.ckpt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "locked", proc.stderr.read()
        with pytest.raises(CheckpointLockedError) as info:
            CheckpointLock(path).acquire()
        msg = str(info.value)
        assert str(path) in msg
        assert f"process {proc.pid}" in msg
        proc.kill()  # SIGKILL: no clean-up code runs in the holder
        assert proc.wait(timeout=20) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
    # The lock file still names the dead holder, but the kernel released the lock.
    assert (tmp_path / "shared.ckpt.lock").read_text().strip() == str(proc.pid)
    with CheckpointLock(path) as lock:
        assert lock.locked
        assert (tmp_path / "shared.ckpt.lock").read_text().strip() == str(os.getpid())
