"""Former home of the SGD baseline; it lives in :mod:`hf_symbolic.optimizer` (the step rule in
:mod:`hf_symbolic.train.first_order`) now. Kept for ``from hf_symbolic.sgd import sgd_optimizer``."""

from hf_symbolic.optimizer import sgd_optimizer

__all__ = ["sgd_optimizer"]
