"""Argument checks shared by the generators and loaders of ``hf_symbolic.datasets``.

Nothing here is public API; the helpers turn loose user arguments (a dtype
name, a seed, a count) into validated values and raise
:class:`hf_symbolic.errors.DatasetError` with a message that names the bad
value and what was expected.
"""

import numbers
import sys

import numpy as np

from ..errors import DatasetError

#: Sentinel dtype meaning "PyTensor's ``config.floatX`` if PyTensor is importable, else float64".
FLOATX = "floatX"


def resolve_dtype(dtype):
    """Return the numpy floating dtype meant by ``dtype``.

    ``"floatX"`` is looked up lazily in ``pytensor.config.floatX`` (so the
    datasets package itself never requires PyTensor); when PyTensor cannot be
    imported it means ``float64``.  Anything else must name a numpy floating
    dtype (``numpy.float32``, ``"float64"``, ...).
    """
    if isinstance(dtype, str) and dtype == FLOATX:
        pytensor = sys.modules.get("pytensor")
        if pytensor is None:
            try:
                import pytensor
            except ImportError:
                return np.dtype(np.float64)
        return np.dtype(pytensor.config.floatX)
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise DatasetError(
            f"dtype={dtype!r} is not a numpy dtype; expected a floating dtype such as "
            f"numpy.float32, numpy.float64 or the string {FLOATX!r}"
        ) from exc
    if not np.issubdtype(resolved, np.floating):
        raise DatasetError(
            f"dtype={dtype!r} resolves to {resolved}, which is not a floating dtype; expected "
            f"e.g. numpy.float32, numpy.float64 or the string {FLOATX!r}"
        )
    return resolved


def make_rng(seed):
    """Return a :class:`numpy.random.Generator` for ``seed``.

    ``seed`` may be a non-negative int, a :class:`numpy.random.SeedSequence`,
    ``None`` (fresh operating-system entropy) or an existing Generator, which
    is used (and advanced) as is.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)):
        if seed < 0:
            raise DatasetError(f"seed={seed!r} is negative; expected an int >= 0 or a numpy Generator")
        return np.random.default_rng(int(seed))
    raise DatasetError(
        f"seed={seed!r} of type {type(seed).__name__} is not usable; expected an int >= 0, "
        "a numpy.random.Generator, a numpy.random.SeedSequence or None"
    )


def check_int(name, value, minimum):
    """Return ``value`` as an int after checking it is an integer ``>= minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise DatasetError(f"{name}={value!r} is not an integer; expected an int >= {minimum}")
    if value < minimum:
        raise DatasetError(f"{name}={value!r} is too small; expected an int >= {minimum}")
    return int(value)


def one_hot(indices, n_classes, dtype):
    """Return ``indices`` (any shape, ints in ``[0, n_classes)``) one-hot encoded on a new last axis."""
    out = np.zeros(indices.shape + (n_classes,), dtype=dtype)
    np.put_along_axis(out, indices[..., None], 1, axis=-1)
    return out


def as_float_array(name, value):
    """Return ``value`` as a float64 array, with a named error for non-numeric input."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{name} could not be read as a float array: {exc}") from exc
    return arr
