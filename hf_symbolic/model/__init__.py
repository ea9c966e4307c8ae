"""The user's model: argument checks, the flat parameter layout, curvature kinds and the compiled model.

Imports only :mod:`hf_symbolic.graph` and :mod:`hf_symbolic.errors`.
"""

from hf_symbolic.model.flat import FlatLayout
from hf_symbolic.model.kinds import KINDS, CurvatureKind, GaussNewton, Hessian
from hf_symbolic.model.model import STATISTICS, CurvatureOperator, Model

__all__ = ["Model", "CurvatureOperator", "FlatLayout", "KINDS", "CurvatureKind", "GaussNewton", "Hessian", "STATISTICS"]
