"""hf_symbolic: Hessian-free optimization for symbolic PyTensor graphs.

The main entry point is :class:`hf_optimizer`, which compiles the gradient and
Gauss-Newton (or Hessian) products of a PyTensor model and trains it with
Martens' Hessian-free method.
"""

from .graph import backend as _backend

_backend.configure_blas_before_import()

from . import errors  # noqa: E402
from .cg import CGResult, backtrack, conjugate_gradient, iterate_grid
from .damping import DampingRule, levenberg_marquardt, reduction_ratio
from .dataset import BatchDataset, SequenceDataset
from .errors import *  # noqa: F401,F403
from .flat import FlatLayout
from .linesearch import LineSearchResult, armijo
from .optimizer import CurvatureOperator, hf_optimizer
from .sgd import sgd_optimizer
from .stats import TrainResult, UpdateStats
from .training import TrainOptions

__version__ = "0.1.0"
