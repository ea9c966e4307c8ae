"""Evaluators: where the gradient and curvature products of a batch are computed.

One contract (:class:`~hf_symbolic.evaluate.base.Evaluator`) and one
registration table (:data:`EVALUATORS`): ``serial`` (this process),
``forked`` (shards of cases in forked worker processes) and ``dask`` (shards
on the workers of a Dask cluster). A new evaluator is one module and one
line in the table. :func:`make_evaluator` picks one from ``train``'s
``workers`` and ``client`` arguments.
"""

from __future__ import annotations

import logging

from hf_symbolic.evaluate.base import Evaluator, split_cases
from hf_symbolic.evaluate.serial import SerialEvaluator

__all__ = ["Evaluator", "SerialEvaluator", "EVALUATORS", "make_evaluator", "split_cases"]

log = logging.getLogger(__name__)


def _serial(model, **_):
    return SerialEvaluator(model)


def _forked(model, workers, **_):
    from hf_symbolic.evaluate.forked import forked_evaluator

    return forked_evaluator(model, workers) or SerialEvaluator(model)


def _dask(model, client, blas_threads=1, **_):
    from hf_symbolic.evaluate.dask import DaskEvaluator  # imports nothing of Dask until a client is used

    return DaskEvaluator(model, client, blas_threads=blas_threads)


#: Name -> factory ``(model, **settings) -> Evaluator``.
EVALUATORS = {
    "serial": _serial,
    "forked": _forked,
    "dask": _dask,
}


def make_evaluator(model, workers=1, client=None, blas_threads=1):
    """The evaluator for ``train``'s settings: Dask with a client, forked with ``workers > 1``, else serial."""
    if client is not None:
        name = "dask"
    elif workers is not None and workers > 1:
        name = "forked"
    else:
        name = "serial"
    return EVALUATORS[name](model, workers=workers, client=client, blas_threads=blas_threads)
