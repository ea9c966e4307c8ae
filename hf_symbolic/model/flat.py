"""Flat parameter-space vectors.

HF works on one vector holding every parameter. :class:`FlatLayout` maps that
vector to the list of parameter arrays, both symbolically (inside compiled
graphs, so no Python-side concatenation happens per product) and in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_symbolic.errors import VectorSizeError

__all__ = ["FlatLayout"]


@dataclass(frozen=True)
class FlatLayout:
    """Shapes and offsets of the parameters inside a flat vector.

    Parameters
    ----------
    shapes : tuple of tuple of int
        Shape of each parameter, in the order of ``p``.
    dtype : numpy.dtype
        The dtype of flat vectors (the common dtype of the parameters).

    Examples
    --------
    >>> layout = FlatLayout(((2, 3), (3,)), np.dtype("float64"))
    >>> layout.size
    9
    >>> [a.shape for a in layout.unflatten(np.arange(9.0))]
    [(2, 3), (3,)]
    """

    shapes: tuple
    dtype: np.dtype

    @property
    def sizes(self) -> tuple:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def offsets(self) -> tuple:
        return tuple(int(o) for o in np.concatenate([[0], np.cumsum(self.sizes)]))

    @property
    def size(self) -> int:
        return int(sum(self.sizes))

    # numpy side -----------------------------------------------------------
    def check(self, v, name: str = "v") -> np.ndarray:
        """Return ``v`` as a 1-D array of this layout's dtype, or raise :class:`VectorSizeError`."""
        v = np.asarray(v)
        if v.ndim != 1 or v.shape[0] != self.size:
            raise VectorSizeError(
                f"{name} must be a flat 1-D vector of length {self.size} (all parameters, in the "
                f"order of p), got an array of shape {v.shape}"
            )
        if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
            raise VectorSizeError(f"{name} must be a real numeric vector, got dtype {v.dtype}")
        if v.dtype != self.dtype:
            v = v.astype(self.dtype)
        return v

    def unflatten(self, v) -> list:
        """Split a flat vector into views shaped like the parameters."""
        v = self.check(v)
        offs = self.offsets
        return [v[offs[i]:offs[i + 1]].reshape(shape) for i, shape in enumerate(self.shapes)]

    def flatten(self, arrays) -> np.ndarray:
        """Concatenate parameter-shaped arrays into one flat vector of this layout's dtype."""
        arrays = list(arrays)
        if len(arrays) != len(self.shapes):
            raise VectorSizeError(f"expected {len(self.shapes)} arrays (one per parameter), got {len(arrays)}")
        out = np.empty(self.size, dtype=self.dtype)
        offs = self.offsets
        for i, (a, shape) in enumerate(zip(arrays, self.shapes)):
            a = np.asarray(a)
            if a.shape != tuple(shape):
                raise VectorSizeError(f"array {i} has shape {a.shape}, expected {tuple(shape)}")
            out[offs[i]:offs[i + 1]] = a.ravel()
        return out

    # symbolic side --------------------------------------------------------
    def symbolic_split(self, v, ndims=None) -> list:
        """Slice and reshape a symbolic flat vector into parameter-shaped pieces."""
        offs = self.offsets
        pieces = []
        for i, shape in enumerate(self.shapes):
            piece = v[offs[i]:offs[i + 1]]
            pieces.append(piece.reshape(shape, ndim=len(shape)))
        return pieces

    @staticmethod
    def symbolic_concat(parts):
        """Flatten and join symbolic parameter-shaped pieces into one vector."""
        import pytensor.tensor as pt

        flat = [pt.flatten(x, ndim=1) for x in parts]
        return flat[0] if len(flat) == 1 else pt.concatenate(flat)
