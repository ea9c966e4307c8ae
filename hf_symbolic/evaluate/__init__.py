"""Evaluators: where the gradient and curvature products of a batch are computed.

One contract (:class:`~hf_symbolic.evaluate.base.Evaluator`) and one
registration table (:data:`EVALUATORS`): ``serial`` (this process), ``items`` (many small items per update, one
call per bucket of equal shapes on the item-vectorized model),
``forked`` (shards of cases in forked worker processes) and ``dask`` (shards
on the workers of a Dask cluster). A new evaluator is one module and one
line in the table; ``train(evaluator="name")`` selects it, and by default
:func:`make_evaluator` picks one from ``train``'s ``workers`` and ``client``
arguments.
"""

from __future__ import annotations

import logging

from hf_symbolic.errors import ArgumentError

from hf_symbolic.evaluate.base import Evaluator, split_cases
from hf_symbolic.evaluate.serial import SerialEvaluator

__all__ = ["Evaluator", "SerialEvaluator", "EVALUATORS", "make_evaluator", "check_evaluator_name", "split_cases"]

log = logging.getLogger(__name__)


def _serial(model, **_):
    return SerialEvaluator(model)


def _forked(model, workers, **_):
    from hf_symbolic.evaluate.forked import forked_evaluator

    return forked_evaluator(model, workers) or SerialEvaluator(model)


def _items(model, **_):
    from hf_symbolic.evaluate.items import ItemEvaluator

    return ItemEvaluator(model)


def _dask(model, client, blas_threads=1, **_):
    from hf_symbolic.evaluate.dask import DaskEvaluator  # imports nothing of Dask until a client is used

    return DaskEvaluator(model, client, blas_threads=blas_threads)


#: Name -> factory ``(model, **settings) -> Evaluator``.
EVALUATORS = {
    "serial": _serial,
    "forked": _forked,
    "dask": _dask,
    "items": _items,
}


def check_evaluator_name(name):
    """``name`` if it is None or registered in :data:`EVALUATORS`, else :class:`~hf_symbolic.errors.ArgumentError`."""
    if name is not None and name not in EVALUATORS:
        raise ArgumentError(f"evaluator={name!r} is unknown: expected None (chosen from the model, workers and client) "
                            f"or one of {sorted(EVALUATORS)}")
    return name


def make_evaluator(model, workers=1, client=None, blas_threads=1, name=None):
    """The evaluator ``name``, or for None the one of ``train``'s settings: Dask with a client,
    forked with ``workers > 1``, item-vectorized for a model with a ``scan`` (it acts only on keys of
    many items, see :mod:`hf_symbolic.evaluate.items`), else serial."""
    if check_evaluator_name(name) is None:
        if client is not None:
            name = "dask"
        elif workers is not None and workers > 1:
            name = "forked"
        else:
            from hf_symbolic.evaluate.items import has_scan

            name = "items" if has_scan(model) else "serial"
    return EVALUATORS[name](model, workers=workers, client=client, blas_threads=blas_threads)
