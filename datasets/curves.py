"""A synthetic CURVES-like image set: smooth strokes through three random points.

Hinton & Salakhutdinov (2006) and Martens (2010) trained deep autoencoders on
"CURVES", 28x28 images of curves drawn through three random 2-D points (six
degrees of freedom).  The renderer behind that data set (spline type, stroke
width, blur) is not published, so **this module is our own stand-in, not the
original data**: numbers obtained on it are comparable with each other, not
with the published CURVES errors.

Rendering, per image:

1. three points uniform on ``[margin, size - margin]^2`` (pixel units, origin
   at the image's top-left corner, ``x`` = column); the two points farthest
   apart become the curve's ends ``p0, p2`` and the third its middle point
   ``p1`` (so the curve sweeps across rather than folding back on itself);
2. the curve is the quadratic through ``p0`` at ``t = 0``, ``p1`` at
   ``t = t1`` and ``p2`` at ``t = 1`` (Lagrange interpolation, ``t in [0, 1]``),
   with chord-length parametrisation ``t1 = |p1 - p0| / (|p1 - p0| + |p2 - p1|)``
   clipped to ``[0.1, 0.9]``; parts leaving the frame are cut off;
3. the stroke is the line integral of an isotropic Gaussian of standard
   deviation ``stroke_sigma`` along the curve, normalised so that a straight
   stroke has value 1 on its centre line and a Gaussian cross-section
   (anti-aliased, soft edges), evaluated at pixel centres ``(j + 0.5, i + 0.5)``
   and clipped to ``[0, 1]`` where strokes overlap.

The integral is a quadrature over samples of ``t`` whose spacing along the
curve is at most ``stroke_sigma / 2``; the Gaussian is separable, so each
image is one small matrix product.  Images are flattened row-major to 784
values.
"""

import math
from typing import NamedTuple

import numpy as np

from ._common import FLOATX, check_int, make_rng, resolve_dtype
from ..errors import DatasetError

__all__ = ["curves", "curves_data", "CurvesData", "render_curves"]

_CHUNK = 1024
_T_MID_MIN = 0.1


def _lagrange(t, t_mid, derivative):
    """Quadratic Lagrange basis on nodes ``0, t_mid, 1`` (or its derivative in ``t``).

    ``t`` has shape (c, s) and ``t_mid`` shape (c,); returns (c, 3, s).
    """
    m = t_mid[:, None]
    if derivative:
        rows = [(2 * t - m - 1) / m, (2 * t - 1) / (m * (m - 1)), (2 * t - m) / (1 - m)]
    else:
        rows = [(t - m) * (t - 1) / m, t * (t - 1) / (m * (m - 1)), t * (t - m) / (1 - m)]
    return np.stack(rows, axis=1)


def _check_positive_float(name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{name}={value!r} is not a number; expected a positive float") from None
    if not (value > 0 and math.isfinite(value)):
        raise DatasetError(f"{name}={value!r}; expected a positive finite float")
    return value


def _ends_farthest_apart(points):
    """Reorder each triple so that points 0 and 2 are the pair farthest apart."""
    pairs = np.array([[0, 1], [1, 2], [0, 2]])
    middle_of = np.array([2, 0, 1])  # the point not in each pair
    dist = np.linalg.norm(points[:, pairs[:, 0]] - points[:, pairs[:, 1]], axis=2)  # (n, 3)
    best = np.argmax(dist, axis=1)
    order = np.stack([pairs[best, 0], middle_of[best], pairs[best, 1]], axis=1)
    return np.take_along_axis(points, order[:, :, None], axis=1)


def render_curves(points, size=28, stroke_sigma=0.9):
    """Render quadratic curves through given point triples to grey images.

    Parameters
    ----------
    points : array_like, shape (n, 3, 2)
        ``points[i, k] = (x, y)`` in pixel units (``x`` = column, ``y`` = row,
        origin at the top-left corner); the quadratic curve passes through
        ``points[i, 0]`` (t = 0), ``points[i, 1]`` (chord-length ``t``, clipped
        to [0.1, 0.9]) and ``points[i, 2]`` (t = 1), in that order.
    size : int, default 28
        Images are ``size x size``.
    stroke_sigma : float, default 0.9
        Standard deviation of the Gaussian stroke profile, in pixels.

    Returns
    -------
    ndarray, shape (n, size, size), float64
        Values in ``[0, 1]``.

    Examples
    --------
    >>> img = render_curves([[[4.5, 14.5], [14.5, 14.5], [24.5, 14.5]]])  # horizontal line
    >>> round(float(img[0, 14, 14]), 3), round(float(img[0, 3, 14]), 3)
    (1.0, 0.0)
    """
    size = check_int("size", size, 1)
    sigma = _check_positive_float("stroke_sigma", stroke_sigma)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (3, 2):
        raise DatasetError(f"points has shape {points.shape}; expected (n, 3, 2)")
    if not np.all(np.isfinite(points)):
        raise DatasetError("points contains non-finite values; expected finite coordinates")
    n = points.shape[0]
    out = np.empty((n, size, size))
    if n == 0:
        return out
    p0, p1, p2 = points[:, 0], points[:, 1], points[:, 2]
    d01 = np.linalg.norm(p1 - p0, axis=1)
    d12 = np.linalg.norm(p2 - p1, axis=1)
    total = d01 + d12
    t_mid = np.clip(np.divide(d01, total, out=np.full(n, 0.5), where=total > 0), _T_MID_MIN, 1 - _T_MID_MIN)
    # |P'(t)| is the norm of a vector linear in t, so its maximum is at an end.
    end_speeds = [np.linalg.norm(np.einsum("ck,ckd->cd", _lagrange(np.full((n, 1), t), t_mid, 1)[..., 0], points),
                                 axis=1) for t in (0.0, 1.0)]
    max_speed = np.maximum(*end_speeds)
    n_samples = np.maximum(np.ceil(max_speed / (0.5 * sigma)).astype(np.int64) + 1, 3)
    # Group images needing similar sample counts so that each chunk uses few samples.
    order = np.argsort(n_samples, kind="stable")
    centres = np.arange(size) + 0.5
    scale = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    for start in range(0, n, _CHUNK):
        idx = order[start:start + _CHUNK]
        s = int(n_samples[idx].max())
        t = np.broadcast_to(np.linspace(0.0, 1.0, s), (idx.size, s))
        pts = points[idx]  # (c, 3, 2)
        curve = np.einsum("cks,ckd->csd", _lagrange(t, t_mid[idx], 0), pts)  # (c, s, 2)
        speed = np.linalg.norm(np.einsum("cks,ckd->csd", _lagrange(t, t_mid[idx], 1), pts), axis=2)  # (c, s)
        weights = speed / (s - 1)
        weights[:, 0] *= 0.5
        weights[:, -1] *= 0.5
        gx = np.exp(-0.5 * ((centres[None, None, :] - curve[:, :, 0:1]) / sigma) ** 2)  # (c, s, cols)
        gy = np.exp(-0.5 * ((centres[None, None, :] - curve[:, :, 1:2]) / sigma) ** 2)  # (c, s, rows)
        gy *= (weights * scale)[:, :, None]
        out[idx] = np.matmul(gy.transpose(0, 2, 1), gx)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def curves(n, seed=0, dtype=FLOATX, *, size=28, stroke_sigma=0.9, margin=2.0, return_points=False):
    """Generate CURVES-like images (our stand-in, not the original CURVES data).

    Parameters
    ----------
    n : int
        Number of images (>= 1).
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source; the same int gives identical images.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of the images.
    size : int, default 28
        Image side; images are flattened to ``size * size`` values.
    stroke_sigma : float, default 0.9
        Standard deviation of the stroke's Gaussian profile, in pixels.
    margin : float, default 2.0
        The three points are uniform on ``[margin, size - margin]^2``.
    return_points : bool, default False
        Also return the ``(n, 3, 2)`` points the curves pass through, in curve
        order (ends first and last).

    Returns
    -------
    images : ndarray, shape (n, size * size)
        Row-major flattened images with values in ``[0, 1]``.
    points : ndarray, shape (n, 3, 2), float64
        Only with ``return_points=True``.

    Examples
    --------
    >>> x = curves(5, seed=0, dtype="float32")
    >>> x.shape, x.dtype, bool(x.min() >= 0 and x.max() <= 1)
    ((5, 784), dtype('float32'), True)
    """
    n = check_int("n", n, 1)
    size = check_int("size", size, 1)
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        raise DatasetError(f"margin={margin!r} is not a number; expected 0 <= margin < size/2") from None
    if not (0 <= margin < size / 2):
        raise DatasetError(f"margin={margin!r}; expected 0 <= margin < size/2 = {size / 2}")
    dtype = resolve_dtype(dtype)
    rng = make_rng(seed)
    points = _ends_farthest_apart(rng.uniform(margin, size - margin, size=(n, 3, 2)))
    images = render_curves(points, size=size, stroke_sigma=stroke_sigma).reshape(n, size * size).astype(dtype)
    if return_points:
        return images, points
    return images


class CurvesData(NamedTuple):
    """Train/test split of the CURVES-like images (see :func:`curves_data`)."""

    train: np.ndarray
    test: np.ndarray


def curves_data(n_train=20_000, n_test=10_000, seed=0, dtype=FLOATX):
    """Training and test sets of CURVES-like images in Martens' (2010) sizes.

    Both sets come from one generator seeded by ``seed`` (training first).
    This is our synthetic stand-in for CURVES (see the module docstring), not
    the original data set.

    Parameters
    ----------
    n_train, n_test : int, default 20000 and 10000
        Numbers of images.
    seed : int, numpy.random.Generator, SeedSequence or None, default 0
        Randomness source.
    dtype : numpy floating dtype or "floatX", default "floatX"
        Float type of the images.

    Returns
    -------
    CurvesData
        ``train (n_train, 784)`` and ``test (n_test, 784)``.

    Examples
    --------
    >>> d = curves_data(n_train=8, n_test=4, seed=1, dtype="float64")
    >>> d.train.shape, d.test.shape
    ((8, 784), (4, 784))
    """
    rng = make_rng(seed)
    return CurvesData(curves(n_train, rng, dtype), curves(n_test, rng, dtype))
