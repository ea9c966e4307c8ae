"""The :class:`hf_optimizer`: compiled gradient and curvature products of a PyTensor model."""

from __future__ import annotations

import logging
import time

import numpy as np

from .curvature import build_curvature_graphs
from .errors import ModelSpecError
from .flat import FlatLayout
from .validation import check_batch, check_mode, check_model

__all__ = ["hf_optimizer", "CurvatureOperator"]

log = logging.getLogger(__name__)


class CurvatureOperator:
    """The damped curvature matrix ``B = G + damping·I`` on one minibatch, as an operator.

    Parameters do not change while it lives (one CG run), which lets a fast
    implementation reuse forward quantities between products.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    matvecs : int
        How many products were computed.
    """

    def __init__(self, product, size, dtype, damping=0.0):
        self._product = product
        self.shape = (size, size)
        self.dtype = np.dtype(dtype)
        self.damping = float(damping)
        self.matvecs = 0

    def matvec(self, v):
        """Return ``(G + damping·I) v``."""
        self.matvecs += 1
        out = self._product(v)
        if self.damping:
            out = out + np.asarray(self.damping, dtype=out.dtype) * v
        return out

    __call__ = matvec

    def todense(self):
        """The matrix, one column per unit vector (for tests on small models only)."""
        n = self.shape[0]
        cols = [self.matvec(np.eye(1, n, j, dtype=self.dtype)[0]) for j in range(n)]
        return np.stack(cols, axis=1)


class hf_optimizer:  # noqa: N801  (name kept from the 2012 API)
    """Hessian-free optimizer for a PyTensor model.

    Parameters
    ----------
    p : list of shared variables
        The parameters, updated in place by :meth:`train`.
    inputs : list of symbolic variables
        Every symbolic input of the costs (data and targets).
    s : Variable
        The split for Gauss-Newton products: the loss must be a convex function
        of ``s`` (usually the output layer's pre-activation).
    costs : list of scalar Variables
        ``costs[0]`` is optimized; the others are monitored.
    h, ha : Variables, optional
        Hidden units (in (0, 1)) and their pre-activation for structural
        damping; ``ha`` defaults to ``h``.
    curvature : {"gauss-newton", "hessian"}
        The curvature matrix used by :meth:`train`.
    mode : str or pytensor Mode, optional
        Passed to ``pytensor.function``.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt
    >>> W = pytensor.shared(np.zeros((3, 1)), name="W")
    >>> x, y = pt.matrix("x"), pt.matrix("y")
    >>> s = pt.dot(x, W)
    >>> cost = pt.mean((s - y) ** 2)
    >>> opt = hf_optimizer([W], [x, y], s, [cost], mode="FAST_COMPILE")
    >>> batch = [np.eye(3), np.ones((3, 1))]
    >>> g, costs = opt.gradient(batch)
    >>> np.round(g, 3).tolist()
    [-0.667, -0.667, -0.667]
    >>> np.round(opt.gauss_newton_product(np.ones(3), batch), 3).tolist()
    [0.667, 0.667, 0.667]
    """

    def __init__(self, p, inputs, s, costs, h=None, ha=None, *, curvature="gauss-newton", mode=None):
        self._spec = check_model(p, inputs, s, costs, h, ha, curvature)
        self._mode = check_mode(mode)
        self.mode = mode
        self.p = list(self._spec.p)
        self.inputs = list(self._spec.inputs)
        self.costs = list(self._spec.costs)
        self.curvature = curvature
        dtype = np.result_type(*[np.dtype(x.dtype) for x in self.p])
        self.layout = FlatLayout(tuple(tuple(x.get_value(borrow=True).shape) for x in self.p), np.dtype(dtype))
        self._graphs = build_curvature_graphs(self._spec, self.layout)
        self._functions = {}
        self.compile_seconds = 0.0
        self.result = None

    # -- compilation --------------------------------------------------------
    @property
    def has_structural_damping(self) -> bool:
        return self._spec.h is not None

    def _function(self, name):
        fn = self._functions.get(name)
        if fn is not None:
            return fn
        import pytensor

        g = self._graphs
        if name == "gradient":
            ins, outs = self.inputs, [g.gradient, *g.costs]
        elif name == "cost":
            ins, outs = self.inputs, list(g.costs)
        elif name == "gauss_newton":
            extra = [g.coefficient] if self.has_structural_damping else []
            ins, outs = [g.v, *extra, *self.inputs], g.gauss_newton
        elif name == "hessian":
            ins, outs = [g.v, *self.inputs], g.hessian
        elif name == "structural":
            ins, outs = [g.v, *self.inputs], g.structural
        else:  # pragma: no cover - internal
            raise KeyError(name)
        t0 = time.perf_counter()
        fn = pytensor.function(ins, outs, mode=self._mode, on_unused_input="ignore", name=f"hf_{name}")
        dt = time.perf_counter() - t0
        self.compile_seconds += dt
        log.debug("compiled %s in %.2f s", name, dt)
        self._functions[name] = fn
        return fn

    def compile(self, which=("gradient", "cost", "gauss_newton")):
        """Compile the named functions now (otherwise each is compiled on first use)."""
        for name in which:
            self._function(name)
        return self

    # -- parameters ---------------------------------------------------------
    def get_flat(self) -> np.ndarray:
        """All parameters as one flat vector (a copy)."""
        return self.layout.flatten([x.get_value(borrow=True) for x in self.p])

    def set_flat(self, theta) -> None:
        """Set every parameter from one flat vector (values are copied)."""
        theta = self.layout.check(theta, "theta")
        for x, part in zip(self.p, self.layout.unflatten(theta)):
            x.set_value(np.array(part, dtype=x.dtype, copy=True), borrow=True)

    def unflatten(self, v) -> list:
        """Split a flat vector into arrays shaped like the parameters."""
        return [np.array(a) for a in self.layout.unflatten(v)]

    # -- products on one minibatch -----------------------------------------
    def _batch(self, batch):
        return check_batch(self.inputs, batch)

    def gradient(self, batch):
        """Return ``(g, costs)``: the flat gradient of ``costs[0]`` and every cost, on one minibatch."""
        out = self._function("gradient")(*self._batch(batch))
        return np.asarray(out[0]), [float(c) for c in out[1:]]

    def cost(self, batch):
        """Return the list of costs on one minibatch."""
        out = self._function("cost")(*self._batch(batch))
        return [float(c) for c in out]

    def _check_coefficient(self, structural_coefficient):
        c = float(structural_coefficient)
        if not np.isfinite(c) or c < 0:
            raise ModelSpecError(f"structural_coefficient must be a finite number >= 0, got {structural_coefficient!r}")
        if c and not self.has_structural_damping:
            raise ModelSpecError(
                f"structural_coefficient={structural_coefficient!r} needs structural damping: pass h (and ha) to hf_optimizer"
            )
        return c

    def gauss_newton_product(self, v, batch, structural_coefficient=0.0):
        """Return ``G v`` (plus ``structural_coefficient`` times the structural-damping product)."""
        v = self.layout.check(v, "v")
        c = self._check_coefficient(structural_coefficient)
        return self._gv_function(self._batch(batch), c)(v)

    def hessian_product(self, v, batch):
        """Return the exact Hessian product ``H v`` of ``costs[0]`` (Pearlmutter 1994)."""
        v = self.layout.check(v, "v")
        return np.asarray(self._function("hessian")(v, *self._batch(batch)))

    def _gv_function(self, batch, coefficient):
        fn = self._function("gauss_newton")
        if self.has_structural_damping:
            c = np.asarray(coefficient, dtype=self.layout.dtype)
            return lambda v: np.asarray(fn(v, c, *batch))
        return lambda v: np.asarray(fn(v, *batch))

    def curvature_operator(self, batch, damping=0.0, structural_coefficient=0.0, curvature=None):
        """The damped curvature on one minibatch as a :class:`CurvatureOperator` (for CG)."""
        batch = self._batch(batch)
        curvature = curvature or self.curvature
        c = self._check_coefficient(structural_coefficient)
        if curvature == "hessian":
            hv = self._function("hessian")
            if c:
                sd = self._function("structural")
                cc = np.asarray(c, dtype=self.layout.dtype)
                product = lambda v: np.asarray(hv(v, *batch)) + cc * np.asarray(sd(v, *batch))  # noqa: E731
            else:
                product = lambda v: np.asarray(hv(v, *batch))  # noqa: E731
        else:
            product = self._gv_function(batch, c)
        return CurvatureOperator(product, self.layout.size, self.layout.dtype, damping)
