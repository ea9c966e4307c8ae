"""hf_symbolic: Hessian-free optimization for symbolic PyTensor graphs.

The main entry point is :class:`hf_optimizer`, which compiles the gradient and
Gauss-Newton (or Hessian) products of a PyTensor model and trains it with
Martens' Hessian-free method.
"""

from . import errors
from .errors import *  # noqa: F401,F403
from .flat import FlatLayout
from .optimizer import CurvatureOperator, hf_optimizer

__version__ = "0.1.0"
