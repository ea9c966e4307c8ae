"""hf_symbolic: Hessian-free optimization for symbolic PyTensor graphs.

The main entry point is :class:`hf_optimizer`, which compiles the gradient and
Gauss-Newton (or Hessian) products of a PyTensor model and trains it with
Martens' Hessian-free method.
"""

from .graph import backend as _backend

_backend.configure_blas_before_import()

from . import errors  # noqa: E402
from .errors import *  # noqa: F401,F403
from .model.flat import FlatLayout
from .optimizer import CurvatureOperator, adam_optimizer, hf_optimizer, sgd_optimizer
from .solve.backtrack import backtrack
from .solve.cg import CGResult, conjugate_gradient, iterate_grid
from .solve.damping import DampingRule, levenberg_marquardt, reduction_ratio
from .solve.linesearch import LineSearchResult, armijo
from .train.data import BatchDataset, SequenceDataset
from .train.options import TrainOptions
from .train.stats import TrainResult, UpdateStats

__version__ = "0.1.0"
