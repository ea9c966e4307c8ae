"""Reading and writing IDX files, the array format of MNIST and Fashion-MNIST.

Format (LeCun et al., MNIST database page): a 4-byte magic number
``00 00 TT NN`` where ``TT`` is the element type code and ``NN`` the number of
dimensions, then ``NN`` big-endian unsigned 32-bit sizes, then the elements in
row-major (C) order, big-endian.  Type codes:

====  ==============  ============
code  element type    numpy dtype
====  ==============  ============
0x08  unsigned byte   ``uint8``
0x09  signed byte     ``int8``
0x0B  short (2 B)     ``>i2``
0x0C  int (4 B)       ``>i4``
0x0D  float (4 B)     ``>f4``
0x0E  double (8 B)    ``>f8``
====  ==============  ============

Files may be gzip-compressed; compression is detected from the gzip magic
bytes, not from the file name.
"""

import gzip
import logging
import os
import zlib

import numpy as np

from ..errors import DataNotFoundError, DatasetError

__all__ = ["read_idx", "write_idx", "IDX_DTYPES"]

logger = logging.getLogger(__name__)

#: IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path):
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"IDX file {os.fspath(path)!r} does not exist") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"IDX file {os.fspath(path)!r} is a corrupt or truncated gzip stream: {exc}") from exc
    return raw


def read_idx(path):
    """Read an IDX file (plain or gzip-compressed) into a numpy array.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.

    Returns
    -------
    ndarray
        Array with the file's shape, in the native-byte-order version of the
        file's element type (e.g. ``uint8`` for images, ``float32`` for 0x0D).

    Raises
    ------
    hf_symbolic.errors.DataNotFoundError
        The file does not exist.
    hf_symbolic.errors.DatasetError
        Bad magic number, unknown type code, truncated header or data,
        trailing bytes, or a corrupt gzip stream.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "a-idx2-ubyte.gz")
    >>> write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(p).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    raw = _read_bytes(path)
    name = os.fspath(path)
    if len(raw) < 4:
        raise DatasetError(f"IDX file {name!r} has {len(raw)} bytes; expected at least a 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise DatasetError(
            f"IDX file {name!r} has bad magic number 0x{raw[:4].hex()}; expected it to start with bytes 00 00"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DatasetError(
            f"IDX file {name!r} has unknown element type code 0x{code:02X}; expected one of "
            + ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(
            f"IDX file {name!r} is truncated: {len(raw)} bytes but the header of a {ndim}-d array needs {header}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "too long"
        raise DatasetError(
            f"IDX file {name!r} is {what}: {len(raw)} bytes, expected {expected} for shape {shape} of {dtype}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    logger.debug("read IDX %s: shape %s, dtype %s", name, shape, dtype)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path, array, compress=None):
    """Write an array to an IDX file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; overwritten if it exists.
    array : array_like
        Data of dtype uint8, int8, int16, int32, float32 or float64 (any byte
        order), with at most 255 dimensions each below 2**32.
    compress : bool, optional
        gzip the file; by default, when ``path`` ends in ``.gz``.  The gzip
        header carries no time stamp, so equal arrays give equal bytes.

    Raises
    ------
    hf_symbolic.errors.DatasetError
        For a dtype with no IDX type code or an out-of-range shape.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "v-idx1-double")
    >>> write_idx(p, np.array([0.5, -2.0]))
    >>> read_idx(p).tolist()
    [0.5, -2.0]
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DatasetError(
            f"cannot write dtype {array.dtype} to IDX; expected one of "
            + ", ".join(str(dt) for dt in codes)
        )
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise DatasetError(f"array shape {array.shape} cannot be stored in IDX (<= 255 dims, each < 2**32)")
    code = codes[native]
    payload = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    )
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    if compress:
        payload = gzip.compress(payload, mtime=0)
    with open(path, "wb") as fh:
        fh.write(payload)
