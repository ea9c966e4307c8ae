"""The single-writer lock of a checkpoint path, and the clean-up of temporaries left by killed writers.

A run that writes checkpoints to a path holds an exclusive ``fcntl`` lock on
``path + ".lock"`` for as long as it trains, so a second run on the same path
stops at once with :class:`~hf_symbolic.errors.CheckpointLockedError` instead
of interleaving its writes with the first.
"""

from __future__ import annotations

import errno
import logging
import os

from hf_symbolic.errors import CheckpointLockedError, CheckpointWriteError

try:  # POSIX only; the lock is unavailable elsewhere.
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None

__all__ = ["CheckpointLock", "remove_stale_temporaries"]

_log = logging.getLogger("hf_symbolic.train.checkpoint")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(path) -> list[str]:
    """Delete the temporary files that dead writers of ``path`` left behind.

    :func:`save_checkpoint` writes ``.<name>.<pid>.<12 hex digits>.tmp`` next
    to the target and renames it; a writer killed before the rename leaves
    that file.  Files of exactly that pattern whose writer process no longer
    exists are removed; files of live processes (and of this one) are kept.
    Failures to list or delete are logged as warnings, never raised.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint path (not a temporary file).

    Returns
    -------
    list of str
        The removed files.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    try:
        names = os.listdir(directory)
    except OSError as exc:
        _log.warning("could not list %r to remove stale temporary checkpoint files: %s", directory, exc)
        return []
    removed = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        parts = name[len(prefix):-len(".tmp")].split(".")
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 12 \
                or not all(c in "0123456789abcdef" for c in parts[1]):
            continue
        pid = int(parts[0])
        if pid == os.getpid() or _process_exists(pid):
            continue
        stale = os.path.join(directory, name)
        try:
            os.unlink(stale)
        except FileNotFoundError:
            continue
        except OSError as exc:
            _log.warning("could not remove stale temporary checkpoint file %r: %s", stale, exc)
            continue
        removed.append(stale)
    if removed:
        _log.warning("removed %d temporary file(s) left by interrupted writes of checkpoint %r", len(removed), path)
    return removed


class CheckpointLock:
    """Exclusive, non-blocking advisory lock guarding one checkpoint path.

    The lock is :func:`fcntl.flock` on the file ``f"{path}.lock"`` (created if
    needed and never deleted, which would race with other processes).  The
    holder writes its pid into that file.  Because ``flock`` locks belong to the
    open file, the kernel releases the lock when the holder exits or is killed
    (``SIGKILL`` included), so an interrupted run can be resumed at once.  Two
    ``CheckpointLock`` objects in the same process also exclude each other.  A
    child created with ``fork`` shares the parent's lock.  Keep a reference to
    the object for as long as the run lasts: a garbage-collected lock object
    closes its file and so releases the lock.  Acquiring the lock also removes
    the temporary files of writers of ``path`` that died mid-write
    (:func:`remove_stale_temporaries`).

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint path being protected (the lock file is ``path + ".lock"``).

    Raises
    ------
    CheckpointLockedError
        From :meth:`acquire` / ``__enter__`` when another holder has the lock;
        the message names the path and, when readable, the holder's pid.
    CheckpointWriteError
        From :meth:`acquire` when the lock file cannot be created (missing
        directory, permission denied, read-only file system).

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> with CheckpointLock(p) as lock:
    ...     lock.locked
    True
    >>> lock.locked
    False
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.lock_path = self.path + ".lock"
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def _holder_pid(self) -> int | None:
        try:
            with open(self.lock_path, "rb") as f:
                text = f.read(64).decode("ascii", "replace").strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> "CheckpointLock":
        """Take the lock without waiting; return ``self``.

        Raises
        ------
        CheckpointLockedError
            If another process (or another lock object) holds it, or this
            object already holds it.
        """
        if fcntl is None:  # pragma: no cover
            raise NotImplementedError("CheckpointLock needs fcntl.flock (POSIX)")
        if self._fd is not None:
            raise CheckpointLockedError(
                f"checkpoint {self.path!r} is already locked by this CheckpointLock object"
            )
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise CheckpointWriteError(
                f"cannot create the lock file {self.lock_path!r} of checkpoint {self.path!r}: "
                f"{type(exc).__name__}: {exc}; the checkpoint's directory must exist and be writable"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                pid = self._holder_pid()
                holder = f"process {pid}" if pid is not None else "another process (pid unknown)"
                raise CheckpointLockedError(
                    f"checkpoint {self.path!r} is locked by {holder} through {self.lock_path!r}; "
                    "another run is using it"
                ) from exc
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        except OSError as exc:  # the lock is held even if the pid cannot be recorded
            _log.warning("could not write pid into lock file %r: %s", self.lock_path, exc)
        self._fd = fd
        _log.debug("locked %r", self.lock_path)
        remove_stale_temporaries(self.path)  # no live writer of this path can own them now
        return self

    def release(self) -> None:
        """Release the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        _log.debug("unlocked %r", self.lock_path)

    def __enter__(self) -> "CheckpointLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        state = "locked" if self.locked else "unlocked"
        return f"CheckpointLock({self.path!r}, {state})"
