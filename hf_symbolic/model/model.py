"""The compiled model: gradient, costs and curvature products of a PyTensor graph on one minibatch."""

from __future__ import annotations

import logging
import time

import numpy as np

from hf_symbolic.graph.backend import compile_flags, default_mode
from hf_symbolic.graph.partial_eval import partial_eval
from hf_symbolic.model.curvature import build_curvature_graphs
from hf_symbolic.errors import ArgumentError, ModelSpecError
from hf_symbolic.model.flat import FlatLayout
from hf_symbolic.model.kinds import KINDS
from hf_symbolic.model.checks import check_batch, check_mode, check_model

__all__ = ["Model", "CurvatureOperator", "STATISTICS"]

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


class Model:
    """A PyTensor model compiled for Hessian-free training: gradient, costs, curvature products.

    :class:`~hf_symbolic.hf_optimizer` is this class plus ``train``; evaluators and
    workers use the model alone, and rebuild it from :meth:`config`.

    The parameters are those of :class:`~hf_symbolic.hf_optimizer` (documented
    there). Evaluators and workers rebuild a model from :meth:`config`; its
    :meth:`config`, :meth:`with_inputs`, :meth:`statistic` and
    :meth:`compile_needed` are what they use.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt
    >>> W = pytensor.shared(np.zeros((3, 1)), name="W")
    >>> x, y = pt.matrix("x"), pt.matrix("y")
    >>> s = pt.dot(x, W)
    >>> cost = pt.mean((s - y) ** 2)
    >>> model = Model([W], [x, y], s, [cost], mode="FAST_COMPILE")
    >>> copy = Model.from_config(model.config())  # what a worker process does
    >>> batch = [np.eye(3), np.ones((3, 1))]
    >>> np.round(copy.plain_product(np.ones(3), batch), 3).tolist()
    [0.667, 0.667, 0.667]
    >>> copy.functions_needed()
    ('gradient', 'cost', 'gauss_newton_cached')
    """

    def __init__(self, p, inputs, s, costs, h=None, ha=None, *, curvature="gauss-newton", mode=None, case_axes=None,
                 cache_forward=True):
        self._spec = check_model(p, inputs, s, costs, h, ha, curvature)
        self.case_axes = self._check_case_axes(case_axes)
        self.cache_forward = bool(cache_forward)
        if mode is None:
            mode = default_mode()
        self._mode = check_mode(mode)
        self.mode = mode
        self.p = list(self._spec.p)
        self.inputs = list(self._spec.inputs)
        self.costs = list(self._spec.costs)
        self.curvature = curvature
        self.kind = KINDS[curvature]
        # every constructor argument (mode as resolved here), for rebuilding the model in another process
        spec = self._spec
        self._config = dict(p=list(spec.p), inputs=list(spec.inputs), s=spec.s, costs=list(spec.costs), h=spec.h,
                            ha=spec.ha, curvature=curvature,
                            mode=mode, case_axes=case_axes, cache_forward=cache_forward)
        dtype = np.result_type(*[np.dtype(x.dtype) for x in self.p])
        self.layout = FlatLayout(tuple(tuple(x.get_value(borrow=True).shape) for x in self.p), np.dtype(dtype))
        self._graphs = build_curvature_graphs(self._spec, self.layout)
        self._functions = {}
        self._cached_product_ran = False
        self.compile_seconds = 0.0
        self.result = None

    def _check_case_axes(self, case_axes):
        inputs = self._spec.inputs
        if case_axes is None:
            return tuple(1 if x.ndim == 3 else (0 if x.ndim >= 1 else None) for x in inputs)
        if isinstance(case_axes, (int, np.integer)):
            case_axes = [case_axes] * len(inputs)
        case_axes = list(case_axes)
        if len(case_axes) != len(inputs):
            raise ModelSpecError(f"case_axes has {len(case_axes)} entries, expected one per input ({len(inputs)})")
        for i, (ax, x) in enumerate(zip(case_axes, inputs)):
            if ax is not None and not (isinstance(ax, (int, np.integer)) and -x.ndim <= ax < x.ndim):
                raise ModelSpecError(f"case_axes[{i}]={ax!r} is not an axis of input {i} (ndim {x.ndim})")
        return tuple(None if ax is None else int(ax) % inputs[i].ndim for i, ax in enumerate(case_axes))

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
        elif name == "gradient_one_case":  # inputs with a static case dimension, narrowed to one case
            from pytensor.graph.replace import clone_replace

            ins = [self._one_case_input(x, ax) for x, ax in zip(self.inputs, self.case_axes)]
            outs = clone_replace([g.gradient], replace=dict(zip(self.inputs, ins)), rebuild_strict=False)
        elif name in ("gauss_newton_diagonal", "gauss_newton_hutchinson", "split_shape"):
            from hf_symbolic.model.statistics import statistic_graph

            ins, outs = statistic_graph(self, name)
        elif name == "kronecker_factors":
            from hf_symbolic.model.kronecker import kronecker_graph

            ins, outs = kronecker_graph(self)
        elif name == "dense_rows":
            from hf_symbolic.model.per_case import rows_graph

            ins, outs = rows_graph(self)
        elif name.startswith("gauss_newton_per_case:"):  # the dense layers treated per case follow the colon
            from hf_symbolic.model.per_case import parse_name, per_case_graph

            ins, outs = per_case_graph(self, parse_name(name))
        else:  # pragma: no cover - internal
            raise KeyError(name)

        t0 = time.perf_counter()
        with compile_flags(self._mode if self._mode is not None else pytensor.config.mode):
            fn = pytensor.function(ins, outs, mode=self._mode, on_unused_input="ignore", name=f"hf_{name}")
        dt = time.perf_counter() - t0
        self.compile_seconds += dt
        log.debug("compiled %s in %.2f s", name, dt)
        self._functions[name] = fn
        return fn

    @property
    def compiled_functions(self) -> tuple:
        """Names of the functions compiled so far."""
        return tuple(name for name, fn in self._functions.items() if fn is not None)

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
        batch = self._batch(batch)
        out = self._function("gradient")(*batch)
        return np.asarray(out[0]), [float(c) for c in out[1:]]

    def cost(self, batch):
        """Return the list of costs on one minibatch."""
        batch = self._batch(batch)
        out = self._function("cost")(*batch)
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
        batch = self._batch(batch)
        return np.asarray(self._function("hessian")(v, *batch))

    @staticmethod
    def _one_case_input(x, ax):
        """``x``, or a copy of its type with one case when its case dimension has a static size."""
        if ax is None or x.type.shape[ax] in (None, 1):
            return x
        shape = list(x.type.shape)
        shape[ax] = 1
        return x.type.clone(shape=tuple(shape))(name=x.name)

    def per_case_squared_gradient(self, batch):
        """Mean over cases of the squared per-case gradients, ``(1/N) Σ_i g_i ⊙ g_i``.

        The diagonal of the empirical Fisher matrix, used by Martens' preconditioner
        (Martens 2010 §4.7). Cases are split along :attr:`case_axes`; each case's
        gradient is the gradient of ``costs[0]`` on a one-case batch. Inputs
        whose case dimension has a static size (as JAX needs) get a second
        gradient function compiled for one case.
        """
        from hf_symbolic.model.statistics import _cases, case_count

        batch = self._batch(batch)
        n = case_count(batch, self.case_axes)
        static = any(ax is not None and x.type.shape[ax] not in (None, 1) for x, ax in zip(self.inputs, self.case_axes))
        fn = self._function("gradient_one_case" if static else "gradient")
        acc = np.zeros(self.layout.size, dtype=np.float64)
        for one in _cases(batch, self.case_axes):
            g = np.asarray(fn(*one)[0], dtype=np.float64)
            acc += g * g
        return (acc / n).astype(self.layout.dtype)

    def gauss_newton_diagonal(self, batch):
        """The exact diagonal of the Gauss-Newton matrix of ``costs[0]``: the mean over cases of ``diag(G_i)``.

        See :func:`hf_symbolic.model.statistics.exact_diagonal`.
        """
        from hf_symbolic.model.statistics import exact_diagonal

        return exact_diagonal(self, self._batch(batch))

    def gauss_newton_hutchinson(self, batch, samples=None, seed=None):
        """An unbiased estimate of the Gauss-Newton diagonal from Rademacher draws, all cases at once.

        See :func:`hf_symbolic.model.statistics.hutchinson_diagonal` (seeding and resumed runs).
        """
        from hf_symbolic.model.statistics import hutchinson_diagonal

        return hutchinson_diagonal(self, self._batch(batch), samples=samples, seed=seed)

    def gauss_newton_per_case(self, batch, seed=None):
        """An unbiased estimate of the Gauss-Newton diagonal from one draw, squared case by case in dense layers.

        See :mod:`hf_symbolic.model.per_case` (the estimator, which layers count
        as per case, seeding).
        """
        from hf_symbolic.model.per_case import per_case_diagonal

        return per_case_diagonal(self, self._batch(batch), seed=seed)

    def kronecker_factors(self, batch, seed=None):
        """The Kronecker factors of the dense layers' Gauss-Newton blocks (and the other parameters' diagonal).

        One flat vector; see :mod:`hf_symbolic.model.kronecker` for its layout,
        the estimator and the seeding, and :meth:`kronecker_structure` for the
        layers found.
        """
        from hf_symbolic.model.kronecker import kronecker_factors

        return kronecker_factors(self, self._batch(batch), seed=seed)

    def kronecker_structure(self):
        """``(blocks, other)``: the dense layers' flat offsets and sizes, and the other parameters' flat indices."""
        from hf_symbolic.model.kronecker import kronecker_structure

        return kronecker_structure(self)

    def _cached_gv_functions(self):
        """``(residuals_fn, product_fn)`` of the partially evaluated Gauss-Newton product, or None."""
        key = "gauss_newton_cached"
        if key in self._functions:
            return self._functions[key]
        import pytensor


        g = self._graphs
        varying = [g.v, g.coefficient] if self.has_structural_damping else [g.v]
        t0 = time.perf_counter()
        try:
            pe = partial_eval([g.gauss_newton], varying)
            with compile_flags(self._mode if self._mode is not None else pytensor.config.mode):
                f_res = pytensor.function(self.inputs, list(pe.residuals), mode=self._mode,
                                          on_unused_input="ignore", name="hf_forward_cache")
                f_gv = pytensor.function([*varying, *pe.placeholders], pe.outputs[0], mode=self._mode,
                                         on_unused_input="ignore", name="hf_gauss_newton_cached")
            fns = (f_res, f_gv)
        except Exception as exc:  # any failure of the rewrite falls back to the plain product
            log.warning("cached forward pass unavailable for this graph (%s: %s); using the plain product",
                        type(exc).__name__, exc)
            fns = None
        self.compile_seconds += time.perf_counter() - t0
        self._functions[key] = fns
        return fns

    def _gv_function(self, batch, coefficient):
        cached = self._cached_gv_functions() if self.cache_forward else None
        if cached is not None:
            product = self._cached_product(cached, batch, coefficient)
            if product is not None:
                return product
        fn = self._function("gauss_newton")
        if self.has_structural_damping:
            c = np.asarray(coefficient, dtype=self.layout.dtype)
            return lambda v: np.asarray(fn(v, c, *batch))
        return lambda v: np.asarray(fn(v, *batch))

    def _cached_product(self, cached, batch, coefficient):
        """The cached-forward product on ``batch``, or None when this backend cannot run it.

        Some backends compile the partially evaluated graph but fail when it
        runs (JAX needs static shapes the placeholders lack). Until one product
        has run, a failure switches this optimizer to the plain product for
        good; after that, errors propagate as from any other function.
        """
        f_res, f_gv = cached
        extra = [np.asarray(coefficient, dtype=self.layout.dtype)] if self.has_structural_damping else []

        def fall_back(exc):
            log.warning("cached forward pass failed on this backend (%s: %s); using the plain product",
                        type(exc).__name__, exc)
            self._functions["gauss_newton_cached"] = None

        try:
            # C order for every stored array (a reversed view otherwise sends each product's
            # elementwise ops on it through PyTensor's strided loop); once per update
            residuals = [np.ascontiguousarray(r) if isinstance(r, np.ndarray) and r.ndim > 1 else r
                         for r in f_res(*batch)]
        except Exception as exc:
            if self._cached_product_ran:
                raise
            fall_back(exc)
            return None
        if self._cached_product_ran:
            return lambda v: np.asarray(f_gv(v, *extra, *residuals))
        plain = []  # the plain product, once the first cached one has failed

        def first_product(v):
            if plain:
                return plain[0](v)
            if self._cached_product_ran:
                return np.asarray(f_gv(v, *extra, *residuals))
            try:
                out = np.asarray(f_gv(v, *extra, *residuals))
            except Exception as exc:
                fall_back(exc)
                plain.append(self._gv_function(batch, coefficient))
                return plain[0](v)
            self._cached_product_ran = True
            return out

        return first_product

    def curvature_operator(self, batch, damping=0.0, structural_coefficient=0.0, curvature=None):
        """The damped curvature on one minibatch as a :class:`CurvatureOperator` (for CG)."""
        batch = self._batch(batch)
        kind = self.kind if curvature is None else KINDS[curvature]
        c = self._check_coefficient(structural_coefficient)
        return CurvatureOperator(kind.product(self, batch, c), self.layout.size, self.layout.dtype, damping)

    def plain_product(self, v, batch):
        """The undamped curvature product of this model's kind, without the structural term."""
        return self.kind.plain_product(self, v, batch)

    # -- statistics for preconditioners --------------------------------------
    def statistic(self, name, batch):
        """The per-parameter statistic ``name`` (see :data:`STATISTICS`) on one minibatch."""
        try:
            method = STATISTICS[name]
        except KeyError:
            raise ArgumentError(f"unknown curvature statistic {name!r}: expected one of {sorted(STATISTICS)}") from None
        return getattr(self, method)(batch)

    # -- rebuilding ------------------------------------------------------------
    def config(self) -> dict:
        """Every constructor argument, so that ``type(self)(**self.config())`` (or :meth:`from_config`) rebuilds it.

        Evaluators in other processes rebuild the model from this alone, so a
        constructor argument cannot be forgotten on the way.
        """
        return dict(self._config)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def with_inputs(self, inputs):
        """A model of the same graph with other symbolic ``inputs`` (e.g. narrower static shapes), sharing ``p``."""
        from pytensor.graph.replace import clone_replace

        cfg = self.config()
        spec = self._spec
        structural = [spec.h, spec.ha] if spec.h is not None else []
        outs = clone_replace([spec.s, *spec.costs, *structural], replace=dict(zip(self.inputs, inputs)),
                             rebuild_strict=False)
        k = len(spec.costs)
        h, ha = (outs[1 + k], outs[2 + k]) if structural else (None, None)
        cfg.update(inputs=list(inputs), s=outs[0], costs=outs[1:1 + k], h=h, ha=ha, case_axes=list(self.case_axes))
        return Model.from_config(cfg)

    def functions_needed(self) -> tuple:
        """The functions training compiles up front (for this model's curvature kind)."""
        return self.kind.functions_needed(self)

    def compile_needed(self):
        """Compile :meth:`functions_needed` now (forked workers inherit them; Dask workers call this)."""
        for name in self.functions_needed():
            if name == "gauss_newton_cached":
                self._cached_gv_functions()
            else:
                self._function(name)
        return self


#: Statistic name -> the :class:`Model` method computing it on one minibatch (for preconditioners).
STATISTICS = {
    "squared_gradients": "per_case_squared_gradient",
    "gauss_newton_diagonal": "gauss_newton_diagonal",
    "gauss_newton_hutchinson": "gauss_newton_hutchinson",
    "gauss_newton_per_case": "gauss_newton_per_case",
    "kronecker_factors": "kronecker_factors",
}
