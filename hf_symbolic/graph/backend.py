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

Vectorized transcendental functions. PyTensor's C elementwise loops call the
scalar ``tanhf``/``tanh`` of the C library for every element: about 28 ns per
element here, 60x numpy's vectorized ``tanh``, and the largest single cost of
a tanh RNN's forward pass (1000 sequences x 100 steps x 100 units). GCC turns
such loops into calls of glibc's vector math library (libmvec, e.g.
``_ZGVeN16v_tanhf``) when the glibc headers declare its SIMD variants, which
they do when ``__FAST_MATH__`` is defined. :func:`compile_flags` defines that
macro (and nothing of ``-ffast-math`` itself: no reassociation, no
finite-math assumptions) for the functions hf_symbolic compiles, so the user's
other PyTensor functions are untouched; the cache key of a compiled module
includes its flags. Measured: ``tanh`` of 100,000 float32 values 2.8 ms ->
0.11 ms; results within 1 ulp of numpy in float32 and 2 ulp in float64, with
NaN, +-inf and signed zeros preserved (``tests/graph/test_vector_math.py``). Only
loops with unit strides vectorize: PyTensor's own flat loop (single input,
or equal static shapes) and the row loop of :mod:`hf_symbolic.graph.rewrites.row_loops`, which
:func:`compile_flags` also switches on (``tanh(x + b)`` with a bias ``b`` on
a 1000x100 float32 batch: 4.1 ms -> 0.2 ms). Set
``HF_SYMBOLIC_VECTOR_MATH=0`` to compile without the vector math,
``HF_SYMBOLIC_ROW_LOOPS=0`` to keep PyTensor's loops (it switches off every
rewrite of :mod:`hf_symbolic.graph.rewrites`).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os

from hf_symbolic._env import env_flag

__all__ = ["default_mode", "openblas_available", "configure_blas_before_import", "blas_threads", "compile_flags",
           "mode_kind"]

VECTOR_MATH_FLAG = "-D__FAST_MATH__"

log = logging.getLogger(__name__)

_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def openblas_available() -> bool:
    """True when ``-lopenblas`` can be linked (the development symlink ``libopenblas.so`` exists)."""
    return any(glob.glob(os.path.join(d, "libopenblas.so")) for d in _LIB_DIRS)


def configure_blas_before_import() -> None:
    """Ask PyTensor to link OpenBLAS, through ``PYTENSOR_FLAGS``, if PyTensor is not imported yet.

    Called when :mod:`hf_symbolic` is imported. Only acts when PyTensor has not
    been imported, the user set no ``blas__ldflags`` and ``libopenblas.so`` is
    installed; this avoids PyTensor's "could not link to a BLAS" warning and its
    slow fallback. When PyTensor was imported first, :func:`default_mode` sets
    the same flag at run time instead.
    """
    import sys

    flags = os.environ.get("PYTENSOR_FLAGS", "")
    if "pytensor" in sys.modules or "blas__ldflags" in flags or "HF_SYMBOLIC_NO_BLAS_SETUP" in os.environ:
        return
    if openblas_available():
        os.environ["PYTENSOR_FLAGS"] = (flags + "," if flags else "") + "blas__ldflags=-lopenblas"


class blas_threads:
    """Context manager limiting BLAS threads (OpenBLAS, MKL, BLIS) to ``n`` while it is active.

    One thread is the default of :meth:`hf_optimizer.train`: on the products HF
    makes (e.g. 1000x100 by 100x100 per RNN step) a second OpenBLAS thread was
    no faster, and sometimes many times slower, on a 2-core machine
    (``benchmarks/README.md``). ``n=None`` leaves the libraries as they are.
    """

    def __init__(self, n):
        self.n = n
        self._ctx = None

    def __enter__(self):
        if self.n is not None:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - threadpoolctl is a dependency
                log.warning("threadpoolctl is not installed: BLAS threads are not limited")
                return self
            self._ctx = threadpool_limits(limits=int(self.n), user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.restore_original_limits()
            self._ctx = None
        return False


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


def _runs_c(mode) -> bool:
    """Whether ``mode`` (a name, a Mode, or None for "assume C") executes PyTensor's C code."""
    return mode_kind(mode) == "c"


def mode_kind(mode) -> str:
    """The kind of ``mode`` (a name, a Mode, or None for "assume C") that the rewrite gate tells apart.

    ``"c"`` when it runs PyTensor's C code (the C VM, the C linkers),
    ``"python"`` when it runs PyTensor's Python thunks (FAST_COMPILE, the
    Python VM, the perform linker, or the C VM without a C compiler),
    ``"other"`` for the rest (Numba, JAX) and for a name PyTensor does not know.

    Examples
    --------
    >>> mode_kind("FAST_COMPILE"), mode_kind("NUMBA")
    ('python', 'other')
    """
    if mode is None:
        return "c"
    import pytensor
    from pytensor.compile.mode import get_mode
    from pytensor.link.basic import PerformLinker
    from pytensor.link.c.basic import CLinker, OpWiseCLinker
    from pytensor.link.vm import VMLinker

    try:
        linker = get_mode(mode).linker
    except Exception:  # an unknown mode: pytensor.function will say so
        return "other"
    if isinstance(linker, VMLinker):
        c = bool(getattr(linker, "c_thunks", True)) and bool(pytensor.config.cxx)
        return "c" if c else "python"
    if isinstance(linker, (CLinker, OpWiseCLinker)):
        return "c"
    if type(linker) is PerformLinker:  # exactly: the Numba and JAX linkers derive from it
        return "python"
    return "other"


@contextlib.contextmanager
def compile_flags(mode=None):
    """Context in which hf_symbolic compiles its functions: C code with vectorized math (see the module notes).

    A context that appends ``-D__FAST_MATH__`` to ``gcc__cxxflags``
    (unless ``HF_SYMBOLIC_VECTOR_MATH=0``, no C compiler is configured, or the
    flag is already there) and opens the gate of hf_symbolic's own rewrites
    (the table of :mod:`hf_symbolic.graph.rewrites`) for the functions
    compiled inside it. Backends that do not compile C code ignore the flag;
    each rewrite applies to the kinds of mode (:func:`mode_kind` of ``mode``,
    None taken as C) its table entry names: all but one to C code only (JAX,
    for one, needs the constant reshape lengths they may replace), the
    two-operand chains to Python thunks only.

    Examples
    --------
    >>> import pytensor, pytensor.tensor as pt
    >>> x = pt.vector("x")
    >>> with compile_flags():
    ...     f = pytensor.function([x], pt.tanh(x))
    >>> float(f([0.0])[0])
    0.0
    """
    # Imported here, not at the top: this module runs before PyTensor is
    # imported (configure_blas_before_import), and these import PyTensor.
    import pytensor

    from . import rewrites  # registers the rewrite table on first import

    with contextlib.ExitStack() as stack:
        stack.enter_context(rewrites.active(mode_kind(mode)))
        flags = pytensor.config.gcc__cxxflags or ""
        if (env_flag("HF_SYMBOLIC_VECTOR_MATH")
                and pytensor.config.cxx and VECTOR_MATH_FLAG not in flags.split()):
            stack.enter_context(pytensor.config.change_flags(gcc__cxxflags=(flags + " " + VECTOR_MATH_FLAG).strip()))
        yield
