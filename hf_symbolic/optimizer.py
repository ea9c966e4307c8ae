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
    cache_forward : bool
        Compute the direction-independent part of the Gauss-Newton product
        (the forward pass on the CG batch) once per CG run and reuse it for
        every product (see :mod:`hf_symbolic.linearize`). Same results, fewer
        operations; False compiles the plain product.
    case_axes : int, None or list, optional
        For each input, the axis that indexes cases (None: the whole array is
        one case). Used only to split a batch into single cases for the
        preconditioner's per-case gradients. Default: axis 1 for 3-D inputs
        (``(time, cases, features)`` sequences), axis 0 otherwise.

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

    def __init__(self, p, inputs, s, costs, h=None, ha=None, *, curvature="gauss-newton", mode=None, case_axes=None,
                 cache_forward=True):
        self._spec = check_model(p, inputs, s, costs, h, ha, curvature)
        self.case_axes = self._check_case_axes(case_axes)
        self.cache_forward = bool(cache_forward)
        if mode is None:
            from .backend import default_mode

            mode = default_mode()
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
        else:  # pragma: no cover - internal
            raise KeyError(name)
        from .backend import compile_flags

        t0 = time.perf_counter()
        with compile_flags(self._mode if self._mode is not None else pytensor.config.mode):
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
        batch = self._batch(batch)
        sizes = {a.shape[ax] for a, ax in zip(batch, self.case_axes) if ax is not None}
        if len(sizes) > 1:
            from .errors import BatchError

            raise BatchError(f"inputs disagree on the number of cases along case_axes {self.case_axes}: {sorted(sizes)}")
        n = sizes.pop() if sizes else 1
        static = any(ax is not None and x.type.shape[ax] not in (None, 1) for x, ax in zip(self.inputs, self.case_axes))
        fn = self._function("gradient_one_case" if static else "gradient")
        acc = np.zeros(self.layout.size, dtype=np.float64)
        for i in range(n):
            one = [a if ax is None else np.take(a, [i], axis=ax) for a, ax in zip(batch, self.case_axes)]
            g = np.asarray(fn(*one)[0], dtype=np.float64)
            acc += g * g
        return (acc / n).astype(self.layout.dtype)

    # -- training -----------------------------------------------------------
    def train(
        self,
        gradient_dataset,
        cg_dataset,
        initial_lambda=0.1,
        mu=0.03,
        global_backtracking=False,
        preconditioner=False,
        max_cg_iterations=250,
        num_updates=100,
        validation=None,
        validation_frequency=1,
        patience=np.inf,
        save_progress=None,
        *,
        callback=None,
        history_file=None,
        blas_threads=1,
        workers=1,
        client=None,
        reuse_memory=True,
        **options,
    ):
        """Train with Hessian-free optimization (the 2012 signature, plus keyword-only options).

        Parameters
        ----------
        gradient_dataset : dataset
            Yields the batches of the gradient (and of the objective used by
            backtracking, the reduction ratio and the line search):
            ``iterate(update=True)`` must give new batches each update.
        cg_dataset : dataset
            Yields the batches of the curvature products; held fixed during one
            CG run (``iterate(update=False)``), advanced after it.
        initial_lambda : float
            Initial Tikhonov damping λ.
        mu : float
            Structural damping coefficient: the structural term is weighted λ·μ
            (needs ``h`` in the constructor).
        global_backtracking : bool
            Choose the best kept CG iterate overall instead of Martens' walk back.
        preconditioner : bool
            Martens' diagonal preconditioner ``(diag(mean_i g_i²) + λ)^α`` from
            per-case gradients on the CG batch (Martens 2010 §4.7). The squared
            gradients are averaged over cases rather than summed, so that they
            are on the scale of a cost averaged over cases, like ``G`` and ``λ``.
        max_cg_iterations : int
        num_updates : int
            Total number of updates (a resumed run counts its earlier ones).
        validation : dataset, callable or None
            A dataset whose batches are averaged, or a callable returning a list
            of costs; the first is used for early stopping and best parameters.
        validation_frequency : int
        patience : int or numpy.inf
            Stop after this many updates without a better validation cost.
        save_progress : str or path, optional
            Checkpoint file written atomically after every update; calling
            ``train`` again with the same arguments resumes exactly.
        callback : callable, optional
            ``callback(stats)`` with the :class:`~hf_symbolic.stats.UpdateStats`
            of each update; raising ``StopIteration`` stops training cleanly.
        history_file : str or path, optional
            JSON-lines file with one record per update.
        blas_threads : int or None
            BLAS threads while training (threadpoolctl); None leaves them as they are.
        workers : int
            Split every batch into this many shards of cases (along
            :attr:`case_axes`) and evaluate them in parallel: this process and
            ``workers - 1`` forked worker processes (:mod:`hf_symbolic.parallel`).
            Assumes the costs are means over cases. Results equal one process's
            up to floating-point rounding.
        client : dask.distributed.Client, optional
            Evaluate on the workers of a Dask cluster instead, one shard of
            cases per worker (:mod:`hf_symbolic.distributed`; needs
            ``pip install 'hf_symbolic[dask]'``). Excludes ``workers > 1``;
            ``blas_threads`` applies on the workers too. Without a client Dask
            is not imported.
        reuse_memory : bool
            Keep freed memory in this process for reuse while training (glibc's
            ``mallopt``; :mod:`hf_symbolic.memory`): the large temporaries of
            each product then skip the kernel's page zeroing. Restored, and the
            memory given back, when ``train`` returns. Changes no value.
        **options
            Any field of :class:`~hf_symbolic.training.TrainOptions`:
            ``cg_decay`` (0.95), ``min_cg_iterations``, ``cg_epsilon`` (5e-4),
            ``cg_window_min`` (10), ``cg_window_frac`` (0.1), ``cg_grid_gamma``
            (1.3), ``cg_grid_start`` (1; Martens' code uses 5), ``backtracking``,
            ``line_search``, ``armijo_c`` (1e-2), ``line_search_shrink`` (0.8),
            ``line_search_tries`` (60), ``preconditioner_exponent`` (0.75),
            ``damping`` (a :class:`~hf_symbolic.damping.DampingRule`),
            ``max_failures`` (5), ``time_budget`` (seconds), ``verbose``: like
            scipy's ``disp``, one line per update (update, costs, validation,
            lambda, CG iterations, seconds) on stderr, by default (None) only
            when the caller configured no logging (:mod:`hf_symbolic.train.progress`);
            False never, True always.

        Returns
        -------
        list of ndarray
            The best parameters (lowest validation cost, or the final ones
            without validation), also set on ``p``. The full record is in
            :attr:`result` (a :class:`~hf_symbolic.stats.TrainResult`).
        """
        from .training import TrainOptions, train

        try:
            opts = TrainOptions(
                initial_lambda=initial_lambda, mu=mu, global_backtracking=global_backtracking,
                preconditioner=preconditioner, max_cg_iterations=max_cg_iterations, num_updates=num_updates,
                validation_frequency=validation_frequency, patience=patience, **options,
            )
        except TypeError as exc:
            from .errors import ArgumentError

            known = sorted(TrainOptions.__dataclass_fields__)
            raise ArgumentError(f"unknown training option in {sorted(options)}: expected some of {known}") from exc
        result = train(self, gradient_dataset, cg_dataset, opts, validation=validation, save_progress=save_progress,
                       callback=callback, history_file=history_file, blas_threads=blas_threads, workers=workers,
                       client=client, reuse_memory=reuse_memory)
        return result.params

    def _cached_gv_functions(self):
        """``(residuals_fn, product_fn)`` of the partially evaluated Gauss-Newton product, or None."""
        key = "gauss_newton_cached"
        if key in self._functions:
            return self._functions[key]
        import pytensor

        from .backend import compile_flags
        from .linearize import partial_eval

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
