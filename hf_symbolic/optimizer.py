"""The public optimizers: a compiled :class:`~hf_symbolic.model.Model` plus ``train``.

:class:`hf_optimizer` keeps the 2012 ``hf.py`` interface; :class:`sgd_optimizer`
and :class:`adam_optimizer` take the same constructor arguments and datasets,
so that comparing HF with a first-order baseline is one switch in a script.
All three run the one training loop of :mod:`hf_symbolic.train.loop` with
their own step rule.
"""

from __future__ import annotations

import contextlib

import numpy as np

from hf_symbolic.graph.backend import blas_threads as limit_blas_threads
from hf_symbolic.errors import ArgumentError
from hf_symbolic.evaluate import check_evaluator_name, make_evaluator
from hf_symbolic.model.model import CurvatureOperator, Model
from hf_symbolic.train.first_order import AdamStep, SGDStep
from hf_symbolic.train.hf_step import HFStep
from hf_symbolic.train.loop import LoopSettings, run_training
from hf_symbolic.train.memory import reuse_freed_memory
from hf_symbolic.train.options import TrainOptions
from hf_symbolic.train.state import check_dataset

__all__ = ["hf_optimizer", "sgd_optimizer", "adam_optimizer", "CurvatureOperator"]


def _environment(blas_threads, reuse_memory):
    stack = contextlib.ExitStack()
    stack.enter_context(limit_blas_threads(blas_threads))
    stack.enter_context(reuse_freed_memory(bool(reuse_memory)))
    return stack


class hf_optimizer(Model):  # noqa: N801  (name kept from the 2012 API)
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
        Hidden units (in (0, 1), or tanh units ``tanh(x)``, which are mapped
        to ``(h + 1) / 2``) and their pre-activation for structural damping;
        ``ha`` defaults to ``h``.
    curvature : {"gauss-newton", "hessian"}
        The curvature matrix used by :meth:`train` (:data:`hf_symbolic.model.KINDS`).
    mode : str or pytensor Mode, optional
        Passed to ``pytensor.function``.
    cache_forward : bool
        Compute the direction-independent part of the Gauss-Newton product
        (the forward pass on the CG batch) once per CG run and reuse it for
        every product (see :mod:`hf_symbolic.graph.partial_eval`). Same results,
        fewer operations; False compiles the plain product.
    case_axes : int, None or list, optional
        For each input, the axis that indexes cases (None: the whole array is
        one case). Used to split a batch into single cases for the
        preconditioner's per-case gradients and into shards for parallel
        workers. Default: axis 1 for 3-D inputs (``(time, cases, features)``
        sequences), axis 0 otherwise.

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
        evaluator=None,
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
        preconditioner : bool, str or object
            True (or ``"martens"``): Martens' diagonal preconditioner
            ``(diag(mean_i g_i²) + λ)^α`` from per-case gradients on the CG batch
            (Martens 2010 §4.7). The squared gradients are averaged over cases
            rather than summed, so that they are on the scale of a cost averaged
            over cases, like ``G`` and ``λ``. Other names
            (:data:`hf_symbolic.solve.preconditioners.REGISTRY`):
            ``"gauss_newton_diagonal"``, ``"gauss_newton_hutchinson"``,
            ``"gauss_newton_per_case"`` (the diagonal of ``G``: exact, estimated
            from 8 draws over the batch, or from one draw squared case by case
            in dense layers, the cost of one gradient) and ``"kfac"`` (Kronecker
            factors for every dense layer ``dot(a, W) + b`` on the way to the
            split, a diagonal for the other parameters).
        max_cg_iterations : int
        num_updates : int
            Total number of updates (a resumed run counts its earlier ones).
        validation : dataset, callable or None
            A dataset whose batches are averaged, or a callable returning a list
            of costs; the first is used for early stopping and best parameters.
        validation_frequency : int
            Validate after every this many updates, and after the last update
            of the call when it was not one of them (a time budget or a
            callback can end training between validations), so the last
            updates can still give the returned parameters.
        patience : int or numpy.inf
            Stop after this many updates without a better validation cost.
        save_progress : str or path, optional
            Checkpoint file written atomically after every update; calling
            ``train`` again with the same arguments resumes exactly.
        callback : callable, optional
            ``callback(stats)`` with the :class:`~hf_symbolic.train.stats.UpdateStats`
            of each update; raising ``StopIteration`` stops training cleanly.
        history_file : str or path, optional
            JSON-lines file with one record per update.
        blas_threads : int or None
            BLAS threads while training (threadpoolctl); None leaves them as they are.
        workers : int
            Split every batch into this many shards of cases (along
            :attr:`case_axes`) and evaluate them in parallel: this process and
            ``workers - 1`` forked worker processes (:mod:`hf_symbolic.evaluate.forked`).
            Assumes the costs are means over cases. Results equal one process's
            up to floating-point rounding.
        client : dask.distributed.Client, optional
            Evaluate on the workers of a Dask cluster instead, one shard of
            cases per worker (:mod:`hf_symbolic.evaluate.dask`; needs
            ``pip install 'hf_symbolic[dask]'``). Excludes ``workers > 1``;
            ``blas_threads`` applies on the workers too. Without a client Dask
            is not imported.
        reuse_memory : bool
            Keep freed memory in this process for reuse while training (glibc's
            ``mallopt``; :mod:`hf_symbolic.train.memory`): the large temporaries of
            each product then skip the kernel's page zeroing. Restored, and the
            memory given back, when ``train`` returns. Changes no value.
        evaluator : str, optional
            A name in :data:`hf_symbolic.evaluate.EVALUATORS` (``"serial"``,
            ``"forked"``, ``"dask"`` or one registered there); None picks one
            from ``workers`` and ``client``.
        **options
            Any field of :class:`~hf_symbolic.train.options.TrainOptions`:
            ``max_cg_exponent`` (0: the cap ``max_cg_iterations`` is fixed; e with a
            growing ``cg_dataset``: the cap grows as ``(n / n_1)**e``, n the update's CG
            batches, n_1 the first update's), ``cg_decay`` (0.95),
            ``min_cg_iterations``, ``cg_epsilon`` (5e-4), ``cg_window_min`` (10),
            ``cg_window_frac`` (0.1), ``cg_grid_gamma`` (1.3), ``cg_grid_start``
            (1; Martens' code uses 5), ``backtracking``,
            ``line_search``, ``armijo_c`` (1e-2), ``line_search_shrink`` (0.8),
            ``line_search_tries`` (60), ``preconditioner_exponent`` (0.75),
            ``damping`` (a :class:`~hf_symbolic.solve.damping.DampingRule`),
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
            :attr:`result` (a :class:`~hf_symbolic.train.stats.TrainResult`).
        """
        unknown = sorted(set(options) - set(TrainOptions.__dataclass_fields__))
        if unknown:
            raise ArgumentError(f"unknown training option(s) {unknown}: expected some of "
                                f"{sorted(TrainOptions.__dataclass_fields__)}")
        opts = TrainOptions(
            initial_lambda=initial_lambda, mu=mu, global_backtracking=global_backtracking,
            preconditioner=preconditioner, max_cg_iterations=max_cg_iterations, num_updates=num_updates,
            validation_frequency=validation_frequency, patience=patience, **options,
        )
        if client is not None and workers is not None and workers != 1:
            raise ArgumentError(f"workers={workers!r} and client= were both given: the Dask client's workers "
                                "replace the forked ones, so pass workers=1 with a client")
        if client is not None:
            from hf_symbolic.evaluate.dask import check_client

            check_client(client)
        check_evaluator_name(evaluator)
        rule = HFStep(self, opts, lambda: make_evaluator(self, workers=workers, client=client,
                                                         blas_threads=blas_threads, name=evaluator))
        check_dataset(gradient_dataset, "gradient_dataset")
        check_dataset(cg_dataset, "cg_dataset")
        if validation is not None and not callable(validation):
            check_dataset(validation, "validation")
        if client is None:
            # compile (and so load PyTensor's BLAS) before blas_threads applies: threadpoolctl limits
            # only the libraries already loaded, and a BLAS loaded later would run with its own default
            self.compile_needed()
        result = run_training(self, rule, opts.loop_settings(), gradient_dataset, cg_dataset, validation=validation,
                              save_progress=save_progress, callback=callback, history_file=history_file,
                              environment=_environment(blas_threads, reuse_memory), verbose=opts.verbose)
        return result.params


class _FirstOrderOptimizer(Model):
    def _train(self, rule, gradient_dataset, num_updates, validation, validation_frequency, patience,
               save_progress, callback, history_file, time_budget, max_failures, verbose):
        settings = LoopSettings(num_updates=num_updates, validation_frequency=validation_frequency, patience=patience,
                                time_budget=time_budget, max_failures=max_failures)
        result = run_training(self, rule, settings, gradient_dataset, None, validation=validation,
                              save_progress=save_progress, callback=callback, history_file=history_file,
                              verbose=verbose)
        return result.params


class sgd_optimizer(_FirstOrderOptimizer):  # noqa: N801
    """SGD with classical (heavy-ball) or Nesterov momentum on the same model specification as :class:`hf_optimizer`.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt
    >>> from hf_symbolic import BatchDataset
    >>> w = pytensor.shared(np.zeros(1), name="w")
    >>> x, y = pt.matrix("x"), pt.vector("y")
    >>> s = pt.dot(x, w)
    >>> opt = sgd_optimizer([w], [x, y], s, [pt.mean((s - y) ** 2)], mode="FAST_COMPILE")
    >>> data = BatchDataset([np.ones((4, 1)), np.full(4, 2.0)], 4, seed=0)
    >>> params = opt.train(data, learning_rate=0.1, momentum=0.0, num_updates=50)
    >>> round(float(params[0][0]), 4)
    2.0
    """

    def train(self, gradient_dataset, cg_dataset=None, learning_rate=0.01, momentum=0.9, num_updates=100,
              validation=None, validation_frequency=1, patience=np.inf, save_progress=None, *, nesterov=False,
              steps_per_update=1, callback=None, history_file=None, time_budget=None, max_failures=5, verbose=None):
        """Train with SGD (:class:`~hf_symbolic.train.first_order.SGDStep`). One *update* is
        ``steps_per_update`` passes over ``gradient_dataset.iterate()``, one parameter step per batch;
        ``nesterov=True`` takes each gradient at the look-ahead point (Sutskever et al. 2013).
        ``cg_dataset`` is accepted and ignored (interface parity with HF). ``verbose`` as for
        :meth:`hf_optimizer.train` (one line per update, like scipy's ``disp``).

        Returns the best parameters (list of arrays); the record is in :attr:`result`.
        """
        rule = SGDStep(self, learning_rate=learning_rate, momentum=momentum, steps_per_update=steps_per_update,
                       nesterov=nesterov)
        return self._train(rule, gradient_dataset, num_updates, validation, validation_frequency, patience,
                           save_progress, callback, history_file, time_budget, max_failures, verbose)


class adam_optimizer(_FirstOrderOptimizer):  # noqa: N801
    """Adam (Kingma & Ba 2015) on the same model specification as :class:`hf_optimizer`.

    Examples
    --------
    >>> import numpy as np, pytensor, pytensor.tensor as pt
    >>> from hf_symbolic import BatchDataset
    >>> w = pytensor.shared(np.zeros(1), name="w")
    >>> x, y = pt.matrix("x"), pt.vector("y")
    >>> s = pt.dot(x, w)
    >>> opt = adam_optimizer([w], [x, y], s, [pt.mean((s - y) ** 2)], mode="FAST_COMPILE")
    >>> data = BatchDataset([np.ones((4, 1)), np.full(4, 2.0)], 4, seed=0)
    >>> params = opt.train(data, learning_rate=0.1, num_updates=300)
    >>> round(float(params[0][0]), 3)
    2.0
    """

    def train(self, gradient_dataset, cg_dataset=None, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
              num_updates=100, validation=None, validation_frequency=1, patience=np.inf, save_progress=None, *,
              steps_per_update=1, callback=None, history_file=None, time_budget=None, max_failures=5, verbose=None):
        """Train with Adam (:class:`~hf_symbolic.train.first_order.AdamStep`); the rest as :meth:`sgd_optimizer.train`."""
        rule = AdamStep(self, learning_rate=learning_rate, beta1=beta1, beta2=beta2, eps=eps,
                        steps_per_update=steps_per_update)
        return self._train(rule, gradient_dataset, num_updates, validation, validation_frequency, patience,
                           save_progress, callback, history_file, time_budget, max_failures, verbose)
