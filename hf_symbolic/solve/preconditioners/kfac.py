"""A Kronecker-factored (K-FAC) block preconditioner for CG (Martens & Grosse 2015).

Each dense layer's block of the Gauss-Newton matrix is approximated by
``A ⊗ S`` (see :mod:`hf_symbolic.model.kronecker` for the factors), and
damped with factored Tikhonov damping (Martens & Grosse 2015, §6.3):

    M_layer = (A + π √λ I) ⊗ (S + √λ / π I),   π = sqrt((tr A / dim A) / (tr S / dim S)),

so that ``M_layer ≈ A ⊗ S + λ I`` while staying a Kronecker product, whose
inverse is applied to a layer's block ``V`` (rows: inputs, plus the bias row;
columns: outputs) as ``(A + π√λ I)⁻¹ V (S + √λ/π I)⁻¹``. Every other
parameter gets the diagonal ``diag(G) + λ`` from the statistic's estimate.
``M`` is block-diagonal and positive definite for ``λ > 0``; CG receives
``M⁻¹`` as a callable. The inverses are computed once per update (float64
eigendecompositions, negative eigenvalues of the estimates clipped to 0).

The statistic's layout (one flat vector, as evaluators average it): the
diagonal of the other parameters (in the order of their flat indices), then
for each layer ``A`` and ``S`` row-major.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_symbolic.errors import ArgumentError

__all__ = ["KroneckerFactored"]


def _damped_inverse(m, shift):
    """``(m + shift I)⁻¹`` of a symmetric PSD estimate (negative eigenvalues clipped to 0)."""
    w, q = np.linalg.eigh(m)
    return (q / (np.maximum(w, 0.0) + shift)) @ q.T


@dataclass(frozen=True)
class KroneckerFactored:
    """Block preconditioner: Kronecker factors for dense layers, a diagonal for every other parameter.

    Parameters
    ----------
    blocks : tuple of (int, int, int, int or None)
        Per dense layer ``(w_offset, n_in, n_out, b_offset)``: where the
        row-major ``(n_in, n_out)`` weight and the optional ``(n_out,)`` bias
        start in the flat vector (from ``Model.kronecker_structure()``).
    other : array of int
        Flat indices of every other parameter entry.

    Examples
    --------
    One layer with 2 inputs, 1 output and a bias (flat: W[0], W[1], b):

    >>> import numpy as np
    >>> pc = KroneckerFactored(blocks=((0, 2, 1, 2),), other=np.zeros(0, int))
    >>> A = np.diag([1.0, 4.0, 1.0]); S = np.array([[2.0]])
    >>> stat = np.concatenate([A.ravel(), S.ravel()])
    >>> apply = pc.inverse(stat, 1e-16)
    >>> np.round(apply(np.array([2.0, 8.0, 2.0])), 6).tolist()   # (A ⊗ S)⁻¹ r
    [1.0, 1.0, 1.0]
    """

    blocks: tuple = ()
    other: np.ndarray = None
    statistic: str = "kronecker_factors"
    needs_structure = True

    @classmethod
    def from_options(cls, **_):
        return cls()

    def with_structure(self, blocks, other):
        """This preconditioner for a model's layout (``Model.kronecker_structure()``)."""
        return KroneckerFactored(blocks=tuple(blocks), other=np.asarray(other, dtype=np.int64), statistic=self.statistic)

    @property
    def statistic_size(self) -> int:
        other = 0 if self.other is None else len(self.other)
        return other + sum((n_in + (b is not None)) ** 2 + n_out ** 2 for _, n_in, n_out, b in self.blocks)

    def factors(self, statistic):
        """``(other_diagonal, [(A, S), ...])`` unpacked from the flat statistic."""
        stat = np.asarray(statistic, dtype=np.float64)
        if stat.ndim != 1 or stat.shape[0] != self.statistic_size:
            raise ArgumentError(f"Kronecker statistic of shape {stat.shape} does not match the structure: expected "
                                f"({self.statistic_size},) for {len(self.blocks)} layers and "
                                f"{0 if self.other is None else len(self.other)} other entries")
        k = 0 if self.other is None else len(self.other)
        diag, pairs = stat[:k], []
        for _, n_in, n_out, b in self.blocks:
            m = n_in + (b is not None)
            a = stat[k:k + m * m].reshape(m, m)
            k += m * m
            s = stat[k:k + n_out * n_out].reshape(n_out, n_out)
            k += n_out * n_out
            pairs.append(((a + a.T) / 2, (s + s.T) / 2))
        return diag, pairs

    def inverse(self, statistic, damping):
        """The callable ``r -> M⁻¹ r`` for damping ``λ = damping > 0``."""
        if self.other is None:
            raise ArgumentError("KroneckerFactored needs with_structure(...) before use (the model's dense layers)")
        lam = float(damping)
        if not lam > 0:
            raise ArgumentError(f"damping={damping!r} is invalid for the Kronecker-factored preconditioner: "
                                "expected a positive number")
        gamma = np.sqrt(lam)
        diag, pairs = self.factors(statistic)
        inv_diag = 1.0 / (np.maximum(diag, 0.0) + lam)
        inverses = []
        for a, s in pairs:
            ta, ts = np.trace(a) / len(a), np.trace(s) / len(s)
            pi = np.sqrt(ta / ts) if ta > 0 and ts > 0 else 1.0
            inverses.append((_damped_inverse(a, pi * gamma), _damped_inverse(s, gamma / pi)))
        blocks, other = self.blocks, self.other
        cast = {}

        def apply(r):
            r = np.asarray(r)
            if r.dtype not in cast:  # the inverses in the vectors' dtype, converted once
                cast[r.dtype] = (inv_diag.astype(r.dtype), [(a.astype(r.dtype), s.astype(r.dtype)) for a, s in inverses])
            d, invs = cast[r.dtype]
            out = np.empty_like(r)
            out[other] = r[other] * d
            for (w0, n_in, n_out, b0), (ai, si) in zip(blocks, invs):
                v = r[w0:w0 + n_in * n_out].reshape(n_in, n_out)
                if b0 is not None:
                    v = np.vstack([v, r[b0:b0 + n_out][None, :]])
                x = ai @ v @ si
                out[w0:w0 + n_in * n_out] = x[:n_in].ravel()
                if b0 is not None:
                    out[b0:b0 + n_out] = x[n_in]
            return out

        return apply
