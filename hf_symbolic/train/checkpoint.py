"""Checkpoint files: named numeric arrays plus JSON metadata, never pickle.

A checkpoint is one uncompressed ``.npz`` archive (the zip-of-``.npy`` layout
written by :func:`numpy.savez` and read by :func:`numpy.load`).  Every member is
a plain numeric array; the member ``__meta__`` is a 1-D ``uint8`` array holding
UTF-8 JSON text of the form::

    {"digest": "<sha256 hex>",
     "format": "hf_symbolic-checkpoint",
     "format_version": 1,
     "meta": {...caller's metadata...}}

The caller's metadata lives under ``"meta"`` so it can never collide with the
bookkeeping keys, and :func:`load_checkpoint` returns only that inner dict.
The SHA-256 digest covers every array (name, dtype, shape and raw bytes) and the
canonical JSON of the rest of the header, so any change to the content, an added
or a removed member is detected on loading.  The digest is an integrity check,
not a signature: someone who can write the file can also recompute it.

Writes are atomic: the archive goes to a uniquely named temporary file in the
target directory, is flushed and ``fsync``-ed, then renamed onto the target with
:func:`os.replace`, and the directory is ``fsync``-ed.  A failed or interrupted
write removes the temporary file and leaves any previous checkpoint untouched.
A writer killed before the rename (``SIGKILL``, power loss) leaves its
temporary file behind; :func:`remove_stale_temporaries` deletes those of dead
writers, and :class:`CheckpointLock` calls it whenever it is acquired.

:class:`CheckpointLock` is an advisory, non-blocking, exclusive lock that keeps
two runs from writing the same checkpoint.  It uses :func:`fcntl.flock`, so the
kernel drops it when the holding process dies, even by ``SIGKILL``.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

from hf_symbolic.errors import (
    CheckpointCorruptError,
    CheckpointVersionError,
    CheckpointWriteError,
)

from hf_symbolic.train.checkpoint_lock import CheckpointLock, remove_stale_temporaries  # noqa: F401  (re-exported)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "META_MEMBER",
    "CheckpointLock",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

_log = logging.getLogger(__name__)

FORMAT_NAME = "hf_symbolic-checkpoint"
"""Value of the ``"format"`` key of every checkpoint header."""

FORMAT_VERSION = 1
"""Current (and highest readable) checkpoint format version."""

META_MEMBER = "__meta__"
"""Name of the archive member that holds the JSON header."""

# Array dtype kinds a checkpoint may hold: bool, signed/unsigned int, float, complex.
_ALLOWED_KINDS = frozenset("biufc")


# ---------------------------------------------------------------------------
# JSON helpers
# ---------------------------------------------------------------------------


def _canonical_json(obj) -> str:
    """Deterministic JSON text of ``obj`` (sorted keys, no spaces, NaN allowed)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def _to_json_value(value, where: str):
    """Return a JSON-ready copy of ``value``; raise ``TypeError`` naming ``where`` otherwise.

    Python and numpy scalars become ``bool``/``int``/``float``/``str``/``None``,
    tuples become lists, and dict keys must be strings, so that the value
    round-trips through JSON text unchanged.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has key {key!r} of type {type(key).__name__}; metadata dict keys must be str"
                )
            out[key] = _to_json_value(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"{where} = {value!r:.80} has type {type(value).__name__}; metadata must be JSON data "
        "(dict with str keys, list, tuple, str, int, float, bool, None); store arrays as arrays"
    )


# ---------------------------------------------------------------------------
# Digest
# ---------------------------------------------------------------------------


def _update_framed(h, data) -> None:
    h.update(memoryview(data).nbytes.to_bytes(8, "little"))
    h.update(data)


def _digest(arrays: Mapping[str, np.ndarray], header_without_digest: Mapping) -> str:
    """SHA-256 over every array's name, dtype, shape and C-order bytes, then the header JSON."""
    h = hashlib.sha256()
    _update_framed(h, FORMAT_NAME.encode("ascii"))
    for name in sorted(arrays):
        arr = arrays[name]
        _update_framed(h, name.encode("utf-8"))
        _update_framed(h, arr.dtype.str.encode("ascii"))
        _update_framed(h, _canonical_json(list(arr.shape)).encode("ascii"))
        # Raw C-order bytes, hashed through a uint8 view (no copy for contiguous arrays).
        _update_framed(h, np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    _update_framed(h, _canonical_json(header_without_digest).encode("utf-8"))
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------


def _check_arrays(arrays) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays must be a mapping of name -> ndarray, got {type(arrays).__name__}")
    checked = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"array name {name!r} is invalid; expected a non-empty str")
        if name == META_MEMBER:
            raise ValueError(f"array name {name!r} is reserved for the checkpoint header")
        if "\x00" in name:
            raise ValueError(f"array name {name!r} contains a NUL character")
        arr = np.asarray(value)
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(
                f"array {name!r} has dtype {arr.dtype}; expected a bool, integer, float or complex dtype"
            )
        checked[name] = arr
    return checked


def _fsync_directory(directory: str) -> None:
    """``fsync`` a directory so a rename inside it is durable; best effort."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError as exc:
        _log.warning("could not open directory %r to fsync it: %s", directory, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems do not support fsync on directories (EINVAL).
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            _log.warning("fsync of directory %r failed (rename may not be durable yet): %s", directory, exc)
    finally:
        os.close(fd)


def _open_unique_temp(directory: str, base: str) -> tuple[str, int]:
    """Create a new empty file next to the target; honours the umask like a normal create."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not create a unique temporary file", directory)


def save_checkpoint(path, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
    """Atomically write a checkpoint file (numeric arrays + JSON metadata).

    Parameters
    ----------
    path : str or os.PathLike
        Exact file name to write (no ``.npz`` suffix is added).  Its directory
        must exist.
    arrays : Mapping[str, numpy.ndarray]
        Named arrays of dtype kind bool, int, uint, float or complex (any
        shape, including 0-d and empty).  The name ``"__meta__"`` is reserved.
    meta : Mapping
        JSON data: dicts with ``str`` keys, lists, tuples, ``str``, ``int``
        (any size, stored exactly), ``float`` (stored exactly, by ``repr``),
        ``bool`` and ``None``; numpy scalars are converted to the Python
        equivalents.  Tuples come back as lists.  NaN and +-inf are allowed and
        written as the JSON extensions ``NaN``/``Infinity`` that Python's
        :mod:`json` reads back, so the header is not strict JSON in that case.

    Raises
    ------
    CheckpointWriteError
        On any failure (bad arrays or metadata, no space, permission denied,
        directory missing, ...), with the original exception as ``__cause__``.
        The temporary file is removed and a previous file at ``path`` is left
        untouched.  ``KeyboardInterrupt`` and ``SystemExit`` raised during the
        write get the same clean-up but propagate unchanged, so an interrupt
        still stops the program.

    Notes
    -----
    A failure of the final ``fsync`` of the directory, which happens after the
    new file has already replaced the old one, is only logged as a warning:
    the checkpoint is complete, its rename may just not be durable yet.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> d = tempfile.mkdtemp()
    >>> p = os.path.join(d, "run.ckpt")
    >>> save_checkpoint(p, {"theta": np.arange(3.0)}, {"step": 7, "seed": 2**70})
    >>> arrays, meta = load_checkpoint(p)
    >>> arrays["theta"], meta["step"], meta["seed"] == 2**70
    (array([0., 1., 2.]), 7, True)
    """
    path = os.fspath(path)
    try:
        checked = _check_arrays(arrays)
        if not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
        header = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "meta": _to_json_value(meta, "meta"),
        }
        header["digest"] = _digest(checked, header)
        text = _canonical_json(header)
    except Exception as exc:
        raise CheckpointWriteError(f"cannot write checkpoint {path!r}: {exc}") from exc
    header_bytes = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        tmp, fd = _open_unique_temp(directory, os.path.basename(path))
        with open(fd, "wb") as fobj:
            with zipfile.ZipFile(fobj, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, arr in list(checked.items()) + [(META_MEMBER, header_bytes)]:
                    with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr, allow_pickle=False)
            fobj.flush()
            os.fsync(fobj.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError as unlink_exc:
                _log.warning("could not remove temporary checkpoint file %r: %s", tmp, unlink_exc)
        if isinstance(exc, Exception):
            raise CheckpointWriteError(
                f"cannot write checkpoint {path!r}: {type(exc).__name__}: {exc}; "
                "any previous checkpoint at that path is unchanged"
            ) from exc
        raise
    _fsync_directory(directory)
    _log.debug("wrote checkpoint %r (%d arrays)", path, len(checked))


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

# Errors that reading a damaged archive/.npy member can raise (numpy falls back to Python's
# tokenizer on a .npy header it cannot parse, hence TokenError).
_READ_ERRORS = (
    ValueError,
    OverflowError,
    tokenize.TokenError,
    EOFError,
    KeyError,
    TypeError,
    SyntaxError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    OSError,
)


def _corrupt(path: str, what: str) -> CheckpointCorruptError:
    return CheckpointCorruptError(f"checkpoint {path!r} {what}")


def _parse_header(path: str, raw: np.ndarray) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _corrupt(path, f"has a {META_MEMBER!r} member of dtype {raw.dtype} and shape {raw.shape}; "
                             "expected 1-D uint8 JSON text")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _corrupt(path, f"has an unreadable JSON header: {exc}") from exc
    if not isinstance(header, dict):
        raise _corrupt(path, f"has a JSON header of type {type(header).__name__}; expected an object")
    fmt = header.get("format")
    if fmt != FORMAT_NAME:
        raise _corrupt(path, f"has format {fmt!r}; expected {FORMAT_NAME!r}")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _corrupt(path, f"has format_version {version!r}; expected a positive int")
    if version > FORMAT_VERSION:
        raise CheckpointVersionError(
            f"checkpoint {path!r} has format_version {version}, but this hf_symbolic "
            f"supports format_version <= {FORMAT_VERSION}; upgrade hf_symbolic to read it"
        )
    missing = {"digest", "meta"} - header.keys()
    if missing:
        raise _corrupt(path, f"header lacks the key(s) {sorted(missing)}")
    if not isinstance(header["digest"], str):
        raise _corrupt(path, f"has digest {header['digest']!r}; expected a hex str")
    if not isinstance(header["meta"], dict):
        raise _corrupt(path, f"has meta of type {type(header['meta']).__name__}; expected an object")
    return header


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.  It is only read, never modified.

    Returns
    -------
    arrays : dict[str, numpy.ndarray]
        Every stored array, by name (the header member excluded).
    meta : dict
        The caller's metadata as given to :func:`save_checkpoint` (tuples come
        back as lists), without the bookkeeping keys ``format``,
        ``format_version`` and ``digest``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (the plain builtin error).
    CheckpointVersionError
        The file has a ``format_version`` newer than :data:`FORMAT_VERSION`.
    CheckpointCorruptError
        The file is not a zip archive, is truncated, holds an object (pickled)
        array or a compressed member, declares an array too large to allocate,
        lacks ``__meta__``, has invalid JSON or a foreign format name, or its
        digest does not match the content (tampered).

    Notes
    -----
    Members are read with ``numpy.load(..., allow_pickle=False)`` only, so no
    pickled data is ever deserialised.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> save_checkpoint(p, {"w": np.eye(2, dtype=np.float32)}, {"lr": 0.1})
    >>> arrays, meta = load_checkpoint(p)
    >>> arrays["w"].dtype, meta
    (dtype('float32'), {'lr': 0.1})
    """
    path = os.fspath(path)
    with open(path, "rb") as fobj:  # FileNotFoundError propagates unchanged.
        try:
            loaded = np.load(fobj, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise _corrupt(path, f"is not a readable checkpoint archive: {type(exc).__name__}: {exc}") from exc
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise _corrupt(path, "is a single .npy array, not a checkpoint archive")
        arrays: dict[str, np.ndarray] = {}
        with loaded:
            # Only stored members: a compressed one could inflate to any size before the digest is checked.
            compressed = [info.filename for info in loaded.zip.infolist() if info.compress_type != zipfile.ZIP_STORED]
            if compressed:
                raise _corrupt(path, f"has compressed member(s) {compressed}; "
                                     "checkpoints hold uncompressed members only")
            names = list(loaded.files)
            if META_MEMBER not in names:
                raise _corrupt(path, f"has no {META_MEMBER!r} member; it is not an hf_symbolic checkpoint")
            for name in names:
                try:
                    value = loaded[name]
                except ValueError as exc:
                    if "allow_pickle" in str(exc):
                        raise _corrupt(
                            path, f"member {name!r} holds an object (pickled) array; refusing to unpickle it"
                        ) from exc
                    raise _corrupt(path, f"member {name!r} is unreadable: {exc}") from exc
                except _READ_ERRORS as exc:
                    raise _corrupt(path, f"member {name!r} is unreadable: {type(exc).__name__}: {exc}") from exc
                except MemoryError as exc:  # a header declaring an absurd shape
                    raise _corrupt(path, f"member {name!r} declares an array too large to allocate: {exc}") from exc
                if not isinstance(value, np.ndarray):
                    raise _corrupt(path, f"member {name!r} is not a .npy array")
                arrays[name] = value
    header = _parse_header(path, arrays.pop(META_MEMBER))
    for name, arr in arrays.items():
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise _corrupt(path, f"member {name!r} has dtype {arr.dtype}; expected a numeric dtype")
    stored = header.pop("digest")
    expected = _digest(arrays, header)
    if not hmac.compare_digest(stored, expected):
        raise _corrupt(path, "fails its SHA-256 digest check: the content was modified after writing")
    return arrays, header["meta"]


# ---------------------------------------------------------------------------
# Lock
# ---------------------------------------------------------------------------
