"""Choice of the default PyTensor backend.

Measured on a 2-core x86-64 machine with PyTensor 3.0.7 (``benchmarks/``):
PyTensor's C virtual machine linked to OpenBLAS computes the RNN and
autoencoder curvature products several times faster than its default Numba
backend, whose elementwise loops (``tanh``, ``sigmoid``) are not vectorized and
whose first compile fills a cache for minutes. The C backend needs a BLAS to
link against: on Debian/Ubuntu ``apt-get install libopenblas-dev``. pip's
PyTensor does not configure one, so when ``blas__ldflags`` is empty and
``libopenblas.so`` is present, :func:`default_mode` sets
``pytensor.config.blas__ldflags = "-lopenblas"`` (once, logged). Without a
linkable BLAS it falls back to PyTensor's own default mode.

Set ``HF_SYMBOLIC_MODE`` (e.g. ``NUMBA``, ``JAX``, ``CVM``) to override the
default for every optimizer that is built with ``mode=None``.
"""

from __future__ import annotations

import glob
import logging
import os

__all__ = ["default_mode", "openblas_available"]

log = logging.getLogger(__name__)

_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def openblas_available() -> bool:
    """True when ``-lopenblas`` can be linked (the development symlink ``libopenblas.so`` exists)."""
    return any(glob.glob(os.path.join(d, "libopenblas.so")) for d in _LIB_DIRS)


def default_mode():
    """The mode used when ``mode=None``: ``$HF_SYMBOLIC_MODE``, else C VM + OpenBLAS when linkable, else PyTensor's default."""
    import pytensor
    from pytensor.compile.mode import get_mode

    env = os.environ.get("HF_SYMBOLIC_MODE")
    if env:
        return env
    if pytensor.config.blas__ldflags:
        return "CVM" if pytensor.config.cxx else None
    if pytensor.config.cxx and openblas_available():
        pytensor.config.blas__ldflags = "-lopenblas"
        log.info("linked PyTensor's C backend to OpenBLAS (blas__ldflags=-lopenblas)")
        return "CVM"
    log.info("no BLAS to link the C backend to (apt-get install libopenblas-dev); using PyTensor's default mode %s",
             get_mode(None).linker)
    return None
