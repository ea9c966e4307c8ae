"""Preconditioned conjugate gradient with Martens' termination rule, and backtracking.

The HF driver approximately minimizes the local quadratic model

    q(p) = 1/2 p^T B p + g^T p

with linear conjugate gradient (CG), where ``B v`` is available only as a
product. :func:`conjugate_gradient` minimizes the equivalent quadratic
``phi(x) = 1/2 x^T A x - b^T x`` (so ``A = B`` and ``b = -g`` give
``phi = q``) and adds what HF needs on top of textbook PCG:

* Martens' relative-progress termination rule (Martens 2010, sec. 4.4;
  Martens & Sutskever 2012, sec. 20.4), see :func:`martens_should_stop`;
* a geometric grid of iterates kept for backtracking (sec. 20.8.7), see
  :func:`iterate_grid` and :func:`backtrack`;
* a clean stop, never a NaN result, on negative curvature (exact Hessian
  products can be indefinite) or on non-finite curvature products.

Vectors keep the dtype of ``b`` (float32 stays float32), while every inner
product, step length and value of ``phi`` is accumulated in float64.

This module depends on numpy only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Callable, Optional, Sequence, Union

import numpy as np

from hf_symbolic.errors import ArgumentError, VectorSizeError

__all__ = [
    "CGResult",
    "conjugate_gradient",
    "martens_window",
    "martens_should_stop",
    "iterate_grid",
]

logger = logging.getLogger(__name__)

#: Every value ``CGResult.status`` can take.
STATUSES = ("martens", "maxiter", "converged", "negative_curvature", "nonfinite", "callback")


# --------------------------------------------------------------------------- helpers
def _ceil(value: float) -> int:
    """``ceil(value)``, treating values within 1e-9 (relative) of an integer as that integer.

    ``0.07 * 100`` is ``7.000000000000001`` and ``100 * 1.1`` is
    ``110.00000000000001`` in binary floating point; a plain ``math.ceil``
    would turn the intended 7 and 110 into 8 and 111. The window size and the
    iterate grid are meant in exact arithmetic, so this guard restores it.
    """
    nearest = round(value)
    if abs(value - nearest) <= 1e-9 * max(1.0, abs(value)):
        return int(nearest)
    return math.ceil(value)


def _dot64(a: np.ndarray, c: np.ndarray) -> float:
    """Inner product accumulated in float64, returned as a Python float.

    For float64 inputs this is BLAS ``ddot``. For narrower inputs ``einsum``
    with ``dtype=float64`` converts the operands to float64 in buffered
    chunks before multiplying: the products are exact and the sum is a
    float64 sum, as accurate as ``np.dot(a.astype(float64), c.astype(float64))``
    but without two full-length copies (about 8x faster at 3e6 entries).
    """
    if a.dtype == np.float64 and c.dtype == np.float64:
        return float(np.dot(a, c))
    return float(np.einsum("i,i->", a, c, dtype=np.float64))


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value, *, low: float, low_open: bool = False, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    bad_low = value <= low if low_open else value < low
    if math.isnan(value) or bad_low or (math.isinf(value) and not allow_inf):
        relation = ">" if low_open else ">="
        finite = "" if allow_inf else "finite "
        raise ArgumentError(f"{name} must be a {finite}number {relation} {low}, got {value!r}")
    return value


def _as_vector(name: str, value, size: Optional[int], dtype) -> np.ndarray:
    """Return ``value`` as a finite 1-D array of ``dtype`` (a copy), or raise VectorSizeError."""
    arr = np.asarray(value)
    if arr.ndim != 1 or (size is not None and arr.shape[0] != size) or arr.shape[0] == 0:
        expected = f"a 1-D vector of length {size}" if size is not None else "a non-empty 1-D vector"
        raise VectorSizeError(f"{name} must be {expected}, got an array of shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise VectorSizeError(f"{name} must be a real numeric vector, got dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float64)
    arr = np.array(arr, dtype=dtype, copy=True)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise VectorSizeError(f"{name} must be finite, got {float(arr[bad])!r} at index {bad}")
    return arr


def _product(fn: Callable, v: np.ndarray, what: str) -> np.ndarray:
    """Call ``fn(v)`` and return a 1-D array of ``v``'s dtype, checking the shape."""
    out = np.asarray(fn(v))
    if out.shape != v.shape:
        raise VectorSizeError(f"{what} returned an array of shape {out.shape}, expected {v.shape}")
    return out.astype(v.dtype, copy=False)


# --------------------------------------------------------------------------- Martens' rule
def martens_window(i: int, window_min: int = 10, window_frac: float = 0.1) -> int:
    """Window length ``k = max(window_min, ceil(window_frac * i))`` of Martens' rule.

    Parameters
    ----------
    i : int
        Number of CG iterations completed.
    window_min : int, optional
        Smallest window (10 in Martens' code).
    window_frac : float, optional
        Window as a fraction of ``i`` (0.1 in Martens' code).

    Returns
    -------
    int
        The window ``k``; the ceiling is meant in exact arithmetic, so
        ``martens_window(100, 1, 0.07) == 7`` although ``0.07 * 100 > 7`` in
        floating point.

    Examples
    --------
    >>> martens_window(50), martens_window(100), martens_window(101)
    (10, 10, 11)
    """
    return max(int(window_min), _ceil(window_frac * i))


def martens_should_stop(phi_history: Sequence[float], i: int, eps: float = 5e-4,
                        window_min: int = 10, window_frac: float = 0.1) -> bool:
    """Martens' relative-progress termination test for CG.

    With ``k = max(window_min, ceil(window_frac * i))``, stop after iteration
    ``i`` when ``i > k``, ``phi_i < 0`` and the reduction of ``phi`` over the
    last ``k`` iterations, relative to ``|phi_i|``, is below ``k * eps``::

        (phi_{i-k} - phi_i) / (-phi_i) < k * eps

    which is Martens' ``(phi_i - phi_{i-k}) / phi_i < k * eps`` written with
    both numerator and denominator non-negative (``phi`` decreases and is
    negative). Martens 2010, sec. 4.4; Martens & Sutskever 2012, sec. 20.4.

    Parameters
    ----------
    phi_history : sequence of float
        ``phi_history[j]`` is the quadratic's value after ``j`` iterations
        (``phi_history[0]`` at the starting point); needs ``len > i``.
    i : int
        Number of iterations completed.
    eps : float, optional
        Tolerance on the average relative progress per iteration; 0 switches
        the rule off (it then never stops, even where rounding makes ``phi``
        creep up near convergence).
    window_min, window_frac : optional
        See :func:`martens_window`.

    Returns
    -------
    bool
        ``True`` when CG should stop. Non-finite values never stop it (the
        caller handles them).

    Examples
    --------
    >>> phi = [-(1.0 - 0.5 ** j) for j in range(30)]   # progress halves each iteration
    >>> martens_should_stop(phi, 17), martens_should_stop(phi, 18)
    (False, True)
    """
    k = martens_window(i, window_min, window_frac)
    if i <= k or eps <= 0.0:
        return False
    if len(phi_history) <= i:
        raise ArgumentError(f"phi_history must hold at least i + 1 = {i + 1} values, got {len(phi_history)}")
    phi_i = float(phi_history[i])
    phi_old = float(phi_history[i - k])
    if not (phi_i < 0.0 and math.isfinite(phi_old)):
        return False
    relative_progress = (phi_old - phi_i) / (-phi_i)
    return relative_progress < k * eps


def iterate_grid(maxiter: int, gamma: float = 1.3, start: float = 1.0) -> tuple:
    """Iteration numbers ``ceil(start * gamma**j)``, ``j = 0, 1, ...``, that are ``<= maxiter``.

    These are the CG iterates kept for backtracking (Martens & Sutskever 2012,
    sec. 20.8.7): the 2012 Theano code used ``gamma = 1.3`` from 1, Martens'
    code ``ceil(5 * 1.3**j)``.

    Parameters
    ----------
    maxiter : int
        Largest iteration number wanted (>= 0).
    gamma : float, optional
        Growth factor, > 1.
    start : float, optional
        First grid value before the ceiling, > 0.

    Returns
    -------
    tuple of int
        Sorted, without duplicates (``ceil(1.3**j)`` repeats small values).

    Examples
    --------
    >>> iterate_grid(15)
    (1, 2, 3, 4, 5, 7, 9, 11, 14)
    >>> iterate_grid(20, start=5)
    (5, 7, 9, 11, 15, 19)
    """
    maxiter = _check_int("maxiter", maxiter, 0)
    gamma = _check_real("gamma", gamma, low=1.0, low_open=True)
    start = _check_real("start", start, low=0.0, low_open=True)
    grid = []
    j = 0
    while True:
        value = _ceil(start * gamma ** j)
        if value > maxiter:
            break
        if not grid or value != grid[-1]:
            grid.append(value)
        j += 1
    return tuple(grid)


# --------------------------------------------------------------------------- CG
@dataclass(frozen=True, eq=False)
class CGResult:
    """Outcome of :func:`conjugate_gradient`.

    Attributes
    ----------
    x : numpy.ndarray
        Final iterate, in ``b``'s dtype: the last one computed before
        stopping. On a ``"negative_curvature"`` or ``"nonfinite"`` stop it is
        the last good iterate, computed before the offending direction.
    iterates : tuple of numpy.ndarray
        Iterates kept for backtracking (the grid of :func:`iterate_grid`),
        in increasing iteration order; the last is always ``x``.
    iterate_indices : tuple of int
        Iteration number of each kept iterate (0 is the starting point, kept
        only when no iteration completed).
    phi : numpy.ndarray
        float64; ``phi[i]`` is ``1/2 x_i^T A x_i - b^T x_i`` at iterate ``i``,
        ``i = 0 .. iterations`` (``phi[0]`` is NaN only when the initial
        residual ``b - A x0`` was not finite).
    iterations : int
        CG iterations completed (each produced an iterate).
    matvecs : int
        Calls made to ``matvec``: ``iterations``, plus one for the initial
        residual when ``x0`` is nonzero, plus one when the stop was caused by
        the product of the rejected direction (negative curvature, non-finite).
    status : str
        ``"martens"`` (relative-progress rule), ``"maxiter"``, ``"converged"``
        (residual exactly zero or ``<= tol``), ``"negative_curvature"``,
        ``"nonfinite"`` or ``"callback"`` (the callback raised ``StopIteration``).
    message : str
        Human-readable account of the stop.
    """

    x: np.ndarray = field(repr=False)
    iterates: tuple = field(repr=False)
    iterate_indices: tuple
    phi: np.ndarray = field(repr=False)
    iterations: int
    matvecs: int
    status: str
    message: str

    @property
    def success(self) -> bool:
        """``True`` unless CG stopped on non-finite values."""
        return self.status != "nonfinite"


def _make_preconditioner(M, size: int, dtype) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """Return a function applying ``M^{-1}``, or ``None`` for no preconditioning."""
    if M is None:
        return None
    if callable(M):
        return lambda r: _product(M, r, "the preconditioner M")
    diag = _as_vector("M (the diagonal of the preconditioner)", M, size, dtype)
    if not np.all(diag > 0):
        bad = int(np.flatnonzero(~(diag > 0))[0])
        raise VectorSizeError(
            f"M (the diagonal of the preconditioner) must be positive, got {float(diag[bad])!r} at index {bad}"
        )
    return lambda r: r / diag


def conjugate_gradient(
    matvec: Callable[[np.ndarray], np.ndarray],
    b,
    x0=None,
    *,
    M: Union[None, np.ndarray, Callable[[np.ndarray], np.ndarray]] = None,
    maxiter: int = 250,
    miniter: int = 1,
    eps: float = 5e-4,
    window_min: int = 10,
    window_frac: float = 0.1,
    grid_gamma: float = 1.3,
    grid_start: float = 1.0,
    tol: float = 0.0,
    callback: Optional[Callable[[int, np.ndarray, float], None]] = None,
) -> CGResult:
    """Minimize ``phi(x) = 1/2 x^T A x - b^T x`` by preconditioned CG, the way HF needs it.

    Standard preconditioned CG (Hestenes & Stiefel 1952; Shewchuk 1994,
    "An Introduction to the Conjugate Gradient Method Without the Agonizing
    Pain", sec. B3) with Martens' termination rule, an iterate grid for
    backtracking and clean stops on negative curvature and non-finite values.
    ``phi`` is tracked without extra products as ``phi(x) = -1/2 x^T (b + r)``
    with the maintained residual ``r = b - A x`` (one inner product per
    iteration besides the two of CG itself).

    Parameters
    ----------
    matvec : callable
        ``matvec(v) -> A v`` for a 1-D ``v``. ``A`` should be symmetric
        (positive definite for a full solve). ``v`` is CG's search direction,
        which CG later updates in place (as scipy's ``cg`` does): ``matvec``
        must not keep it nor return it.
    b : array_like, 1-D
        Right-hand side (``-g`` in HF, making ``phi`` Martens' ``q``). Its
        dtype is the dtype of every vector (non-float input becomes float64).
    x0 : array_like, optional
        Starting point (cast to ``b``'s dtype); ``None`` means zeros. An
        all-zero ``x0`` costs no initial product.
    M : None, array_like or callable, optional
        Preconditioner. A 1-D array is the positive diagonal of ``M``
        (``M^{-1} r = r / M``); a callable applies ``M^{-1}`` itself, like
        scipy's ``M``. ``None`` means no preconditioning.
    maxiter : int, optional
        Maximum number of iterations (>= 1).
    miniter : int, optional
        Martens' rule is not applied before this many iterations (>= 1).
    eps : float, optional
        Tolerance of Martens' rule (>= 0; 0 switches the rule off).
    window_min, window_frac : optional
        Window of Martens' rule, see :func:`martens_window`.
    grid_gamma, grid_start : float, optional
        Iterate grid, see :func:`iterate_grid`.
    tol : float, optional
        Stop as ``"converged"`` when ``||r||_2 <= tol`` (>= 0). An exactly
        zero residual always stops as ``"converged"``.
    callback : callable, optional
        ``callback(i, x_i, phi_i)`` after each iteration; raising
        ``StopIteration`` in it stops CG with status ``"callback"``. Do not
        modify ``x_i`` in place.

    Returns
    -------
    CGResult

    Raises
    ------
    VectorSizeError
        ``b``, ``x0`` or the diagonal ``M`` has the wrong shape or non-finite
        values, ``M`` has a non-positive entry, or ``matvec``/``M`` returns a
        wrong shape.
    ArgumentError
        An option is out of range, or a callable preconditioner gives
        ``r^T M^{-1} r < 0`` (it is not positive definite).

    Notes
    -----
    The stop tests run after each iteration in this order: exact/``tol``
    convergence (regardless of ``miniter``), Martens' rule, ``maxiter``.
    Negative curvature means ``d^T A d <= 0`` for the next direction ``d``;
    CG then returns the iterate it had, which is still the best point of the
    Krylov space explored so far. Kept iterates are references to arrays CG
    never modifies afterwards, so only the grid iterates stay in memory.

    Examples
    --------
    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> res = conjugate_gradient(lambda v: A @ v, np.array([1.0, 2.0]), eps=0.0)
    >>> res.status, res.iterations
    ('converged', 2)
    >>> bool(np.allclose(res.x, np.linalg.solve(A, [1.0, 2.0])))
    True
    """
    if not callable(matvec):
        raise ArgumentError(f"matvec must be callable (v -> A v), got {type(matvec).__name__}")
    if callback is not None and not callable(callback):
        raise ArgumentError(f"callback must be callable or None, got {type(callback).__name__}")
    maxiter = _check_int("maxiter", maxiter, 1)
    miniter = _check_int("miniter", miniter, 1)
    window_min = _check_int("window_min", window_min, 1)
    eps = _check_real("eps", eps, low=0.0)
    window_frac = _check_real("window_frac", window_frac, low=0.0)
    tol = _check_real("tol", tol, low=0.0)
    grid = frozenset(iterate_grid(maxiter, grid_gamma, grid_start))

    b = _as_vector("b", b, None, None)
    n, dtype = b.shape[0], b.dtype
    precondition = _make_preconditioner(M, n, dtype)

    matvecs = 0
    if x0 is None:
        x = np.zeros(n, dtype=dtype)
    else:
        x = _as_vector("x0", x0, n, dtype)
    if x.any():
        Ax = _product(matvec, x, "matvec")
        matvecs += 1
        r = b - Ax
    else:
        r = b.copy()

    work = np.empty_like(b)  # scratch: alpha * d, alpha * A d, b + r
    phi = [-0.5 * _dot64(x, np.add(b, r, out=work))]
    kept, kept_at = [], []
    i = 0
    status, message = "", ""

    def finish():
        if not kept_at or kept_at[-1] != i:
            kept.append(x)
            kept_at.append(i)
        logger.debug("CG stopped after %d iterations (%d matvecs): %s", i, matvecs, message)
        return CGResult(x=x, iterates=tuple(kept), iterate_indices=tuple(kept_at),
                        phi=np.asarray(phi, dtype=np.float64), iterations=i, matvecs=matvecs,
                        status=status, message=message)

    if not math.isfinite(phi[0]):
        status, message = "nonfinite", "the initial residual b - A x0 is not finite"
        phi[0] = math.nan
        return finish()

    def residual_small() -> Optional[str]:
        if not r.any():
            return "the residual is exactly zero"
        if tol > 0.0:
            rnorm = math.sqrt(_dot64(r, r))
            if rnorm <= tol:
                return f"residual norm {rnorm:.3e} <= tol = {tol:.3e}"
        return None

    reason = residual_small()
    if reason is not None:
        status, message = "converged", reason + " at the starting point"
        return finish()

    z = r if precondition is None else precondition(r)
    rz = _dot64(r, z)
    d = None
    while True:
        # ---- next search direction from the preconditioned residual z = M^-1 r
        if not math.isfinite(rz):
            status, message = "nonfinite", f"r^T M^-1 r = {rz} after iteration {i}"
            return finish()
        if rz <= 0.0:
            if rz == 0.0:
                status, message = "converged", f"r^T M^-1 r underflowed to 0 after iteration {i}"
                return finish()
            raise ArgumentError(f"the preconditioner is not positive definite: r^T M^-1 r = {rz!r} < 0")
        if d is None:
            d = z.copy()
        else:  # d = z + beta d, in place
            np.multiply(d, rz / rz_old, out=d)
            np.add(z, d, out=d)

        # ---- one CG iteration
        Ad = _product(matvec, d, "matvec")
        matvecs += 1
        curvature = _dot64(d, Ad)
        if not math.isfinite(curvature):
            status, message = "nonfinite", f"d^T A d = {curvature} at iteration {i + 1}"
            return finish()
        if curvature <= 0.0:
            status = "negative_curvature"
            message = f"d^T A d = {curvature:.6g} <= 0 at iteration {i + 1}; kept iterate {i}"
            return finish()
        alpha = rz / curvature
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported through phi
            x_new = x + np.multiply(d, alpha, out=work)  # a new array: kept iterates are never modified
            np.subtract(r, np.multiply(Ad, alpha, out=work), out=r)  # r is private: updated in place
            phi_new = -0.5 * _dot64(x_new, np.add(b, r, out=work))
        if not math.isfinite(phi_new):
            status, message = "nonfinite", f"the iterate or residual of iteration {i + 1} is not finite"
            return finish()
        x = x_new
        i += 1
        phi.append(phi_new)
        if i in grid:
            kept.append(x)
            kept_at.append(i)

        # ---- stop tests
        if callback is not None:
            try:
                callback(i, x, phi_new)
            except StopIteration:
                status, message = "callback", f"the callback stopped CG after iteration {i}"
                return finish()
        reason = residual_small()
        if reason is not None:
            status, message = "converged", f"{reason} after iteration {i}"
            return finish()
        if i >= miniter and martens_should_stop(phi, i, eps, window_min, window_frac):
            k = martens_window(i, window_min, window_frac)
            status = "martens"
            message = (f"relative progress of phi over the last {k} iterations fell below "
                       f"k * eps = {k * eps:.3g} at iteration {i} (phi = {phi_new:.6g})")
            return finish()
        if i >= maxiter:
            status, message = "maxiter", f"reached maxiter = {maxiter} (phi = {phi_new:.6g})"
            return finish()

        rz_old = rz
        z = r if precondition is None else precondition(r)
        rz = _dot64(r, z)
