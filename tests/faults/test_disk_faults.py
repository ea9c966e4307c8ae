"""Checkpoint writes that fail: full disk, permission denied, read-only file system, directory gone.

Faults are injected with monkeypatch (the tests run as root, for whom
``chmod`` forbids nothing; a real ``chmod`` test runs for other users): the disk
fills at a chosen byte of the archive, creating the temporary file is denied,
``fsync`` or the rename fails, or the directory disappears between two
updates.  Each time the write raises :class:`CheckpointWriteError` naming the
path and the cause, the previous checkpoint is left exactly as it was, no
temporary file remains, the lock is released, and once the fault is gone the
run resumes and ends bit-identical to an uninterrupted run.

``test_checkpoint.py`` covers single faults of ``save_checkpoint`` itself
(rename denied, ``fsync`` out of space, a failing array write, interrupts).
"""

import builtins
import errno
import logging
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

import crash_worker as worker
import hf_symbolic.train.checkpoint as ckpt
from hf_symbolic.train.checkpoint import CheckpointLock, load_checkpoint, remove_stale_temporaries, save_checkpoint
from hf_symbolic.errors import CheckpointLockedError, CheckpointWriteError

N_UPDATES, FAIL_AT = 5, 3


def _oserror(code):
    return OSError(code, os.strerror(code))


class FillingFile:
    """A file on a disk that is full after ``budget`` bytes: the write crossing it writes what fits, then fails."""

    def __init__(self, f, budget):
        self.f, self.budget = f, budget

    def write(self, data):
        data = memoryview(data).cast("B")
        room = max(0, self.budget - self.f.tell())
        if len(data) > room:
            self.f.write(data[:room])
            raise _oserror(errno.ENOSPC)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.f.close()


def _is_temporary(path):
    name = os.path.basename(os.fspath(path))
    return name.startswith(".") and name.endswith(".tmp")


def inject(monkeypatch, fault):
    """Make every following checkpoint write fail with ``fault``; returns the expected error text."""
    if fault.startswith("enospc@"):
        budget = int(fault.split("@")[1])

        def filling_open(file, mode="r", *args, **kwargs):
            f = builtins.open(file, mode, *args, **kwargs)
            return FillingFile(f, budget) if "w" in mode else f

        monkeypatch.setattr(ckpt, "open", filling_open, raising=False)
        return os.strerror(errno.ENOSPC)
    code = {"eacces": errno.EACCES, "erofs": errno.EROFS, "edquot": errno.EDQUOT, "eio": errno.EIO}[fault.split("_")[0]]
    where = fault.split("_")[1]
    if where == "create":  # a directory that became read-only, a file system remounted read-only
        real = os.open

        def failing_open(path, flags, *args, **kwargs):
            if _is_temporary(path):
                raise OSError(code, os.strerror(code), os.fspath(path))
            return real(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", failing_open)
    elif where == "fsync":
        real = os.fsync

        def failing_fsync(fd):
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise _oserror(code)
            return real(fd)

        monkeypatch.setattr(os, "fsync", failing_fsync)
    elif where == "rename":
        def failing_replace(src, dst, *args, **kwargs):
            raise _oserror(code)

        monkeypatch.setattr(os, "replace", failing_replace)
    return os.strerror(code)


@pytest.fixture(scope="module")
def model():
    return worker.build_optimizer()


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    """An uninterrupted checkpointed run, with a copy of its checkpoint after update FAIL_AT - 1."""
    opt, theta0 = model
    d = tmp_path_factory.mktemp("reference")

    def keep(stats):
        if stats.update == FAIL_AT - 1:
            shutil.copyfile(d / "run.ckpt", d / "before.ckpt")

    result = worker.run(opt, theta0, N_UPDATES, d / "run.ckpt", callback=keep)
    assert result.status == "num_updates" and sum(s.accepted for s in result.history) >= N_UPDATES - 1
    return {"x": result.x.copy(), "final": d / "run.ckpt", "before": d / "before.ckpt"}


# ---------------------------------------------------------------------------------------------
# save_checkpoint alone
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def previous(tmp_path):
    path = tmp_path / "state.ckpt"
    save_checkpoint(path, {"x": np.arange(10.0)}, {"step": 1})
    return path, path.read_bytes()


def _new_content():
    rng = np.random.default_rng(1)
    return {"a": rng.normal(size=300), "b": np.arange(50), "c": np.ones((4, 5), dtype=np.float32)}, {"step": 2}


def test_the_disk_fills_at_any_byte_of_the_archive(previous, tmp_path, monkeypatch):
    path, before = previous
    arrays, meta = _new_content()
    probe = tmp_path / "sized.ckpt"
    save_checkpoint(probe, arrays, meta)
    size = probe.stat().st_size
    probe.unlink()
    budgets = sorted({0, 1, 63, 64, 200, size // 3, size // 2, size - 100, size - 22, size - 1})
    for budget in budgets:
        text = inject(monkeypatch, f"enospc@{budget}")
        with pytest.raises(CheckpointWriteError) as info:
            save_checkpoint(path, arrays, meta)
        assert text in str(info.value) and "state.ckpt" in str(info.value), budget
        assert info.value.__cause__.errno == errno.ENOSPC
        monkeypatch.undo()
        assert path.read_bytes() == before, budget
        assert sorted(os.listdir(tmp_path)) == ["state.ckpt"], budget
    # exactly enough room: the same fake disk lets the write through (so the failures above are the disk's)
    inject(monkeypatch, f"enospc@{size}")
    save_checkpoint(path, arrays, meta)
    monkeypatch.undo()
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta and all(np.array_equal(loaded[k], v) for k, v in arrays.items())


@pytest.mark.parametrize("fault", ["eacces_create", "erofs_create", "edquot_fsync", "eio_rename"])
def test_each_write_fault_leaves_the_previous_checkpoint(previous, tmp_path, monkeypatch, fault):
    path, before = previous
    text = inject(monkeypatch, fault)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, *_new_content())
    msg = str(info.value)
    assert text in msg and "state.ckpt" in msg and "previous checkpoint at that path is unchanged" in msg
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["state.ckpt"]
    assert load_checkpoint(path)[1] == {"step": 1}


def test_a_failed_directory_fsync_is_a_warning_and_the_checkpoint_is_complete(previous, monkeypatch, caplog):
    path, _ = previous
    real = os.fsync

    def failing_directory_fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise _oserror(errno.EIO)
        return real(fd)

    monkeypatch.setattr(os, "fsync", failing_directory_fsync)
    with caplog.at_level(logging.WARNING, logger="hf_symbolic.train.checkpoint"):
        save_checkpoint(path, *_new_content())
    monkeypatch.undo()
    assert any("fsync of directory" in r.getMessage() and os.strerror(errno.EIO) in r.getMessage()
               for r in caplog.records)
    assert load_checkpoint(path)[1] == {"step": 2}


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_read_only_directory_for_real(previous, tmp_path):  # pragma: no cover - runs for non-root users
    path, before = previous
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(CheckpointWriteError, match="Permission denied"):
            save_checkpoint(path, *_new_content())
    finally:
        os.chmod(tmp_path, 0o755)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["state.ckpt"]


def test_a_lock_whose_pid_cannot_be_written_still_locks(tmp_path, monkeypatch, caplog):
    path = tmp_path / "run.ckpt"

    def full(fd, data):
        raise _oserror(errno.ENOSPC)

    monkeypatch.setattr(os, "write", full)
    with caplog.at_level(logging.WARNING, logger="hf_symbolic.train.checkpoint"):
        lock = CheckpointLock(path).acquire()
    monkeypatch.undo()
    try:
        assert any("could not write pid" in r.getMessage() for r in caplog.records)
        with pytest.raises(CheckpointLockedError, match="pid unknown"):
            CheckpointLock(path).acquire()
    finally:
        lock.release()


def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_stale_temporaries_of_dead_writers_are_removed_and_nothing_else(tmp_path):
    path = tmp_path / "run.ckpt"
    dead, live = _dead_pid(), os.getppid()
    names = {
        f".run.ckpt.{dead}.0123456789ab.tmp": False,  # a dead writer's: removed
        f".run.ckpt.{live}.0123456789ab.tmp": True,  # a live process's: kept
        f".run.ckpt.{os.getpid()}.0123456789ab.tmp": True,  # this process's: kept
        f".other.ckpt.{dead}.0123456789ab.tmp": True,  # another checkpoint's
        f".run.ckpt.{dead}.0123456789.tmp": True,  # not the pattern
        f".run.ckpt.x{dead}.0123456789ab.tmp": True,
        f".run.ckpt.1.{dead}.0123456789ab.tmp": True,
        "run.ckpt": True,
        "notes.tmp": True,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
    removed = remove_stale_temporaries(path)
    assert removed == [str(tmp_path / f".run.ckpt.{dead}.0123456789ab.tmp")]
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, kept in names.items() if kept)
    # taking the lock does the same
    (tmp_path / f".run.ckpt.{dead}.ba9876543210.tmp").write_bytes(b"partial")
    with CheckpointLock(path):
        assert f".run.ckpt.{dead}.ba9876543210.tmp" not in os.listdir(tmp_path)


# ---------------------------------------------------------------------------------------------
# during training
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["enospc@0", "enospc@700", "eacces_create", "erofs_create", "edquot_fsync",
                                   "eio_rename"])
def test_a_write_fault_during_training_loses_nothing_and_the_run_resumes_identically(
        model, reference, tmp_path, monkeypatch, fault):
    opt, theta0 = model
    path = tmp_path / "run.ckpt"
    expected = []

    def fault_after_the_previous_write(stats):
        if stats.update == FAIL_AT - 1:
            expected.append(inject(monkeypatch, fault))

    with pytest.raises(CheckpointWriteError) as info:
        worker.run(opt, theta0, N_UPDATES, path, callback=fault_after_the_previous_write)
    monkeypatch.undo()
    msg = str(info.value)
    assert expected[0] in msg and str(path) in msg and "previous checkpoint at that path is unchanged" in msg
    worker.assert_same_checkpoint(path, reference["before"])
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt", "run.ckpt.lock"]
    with CheckpointLock(path):  # the failed run released it
        pass
    opt.set_flat(theta0 + 1.0)  # whatever the failed run left in memory, the checkpoint decides
    result = worker.run(opt, theta0, N_UPDATES, path)
    assert result.status == "num_updates" and result.x.tobytes() == reference["x"].tobytes()
    worker.assert_same_checkpoint(path, reference["final"])


def test_the_checkpoint_directory_removed_during_training(model, reference, tmp_path):
    opt, theta0 = model
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    path = directory / "run.ckpt"

    def remove_directory(stats):
        if stats.update == FAIL_AT - 1:
            shutil.rmtree(directory)

    with pytest.raises(CheckpointWriteError) as info:
        worker.run(opt, theta0, N_UPDATES, path, callback=remove_directory)
    assert str(path) in str(info.value) and isinstance(info.value.__cause__, FileNotFoundError)
    assert not directory.exists()
    # with the directory back, a new run starts from the beginning and ends like the reference
    directory.mkdir()
    result = worker.run(opt, theta0, N_UPDATES, path)
    assert result.x.tobytes() == reference["x"].tobytes()


def test_a_missing_checkpoint_directory_is_refused_before_training(model, tmp_path):
    opt, theta0 = model
    path = tmp_path / "absent" / "run.ckpt"
    grad, cg, valid = worker.make_datasets()
    opt.set_flat(theta0)
    with pytest.raises(CheckpointWriteError) as info:
        opt.train(grad, cg, num_updates=2, validation=valid, save_progress=path, **worker.TRAIN_OPTIONS)
    msg = str(info.value)
    assert str(path) in msg and "must exist and be writable" in msg and os.strerror(errno.ENOENT) in msg
    assert np.array_equal(opt.get_flat(), theta0) and grad.position == 0 and cg.position == 0
    assert not (tmp_path / "absent").exists()
