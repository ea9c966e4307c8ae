"""Former home of HF training; the names it held live in :mod:`hf_symbolic.train` now.

Kept so that ``hf_symbolic.training.TrainOptions`` (cited by release 0.1's
documentation) keeps working.
"""

from hf_symbolic.train.options import TrainOptions

__all__ = ["TrainOptions"]
