"""Checks of the model given to :class:`~hf_symbolic.hf_optimizer` and of minibatches.

Everything here runs before any compilation, so a malformed model fails in
milliseconds with a message that names the bad value and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_symbolic.errors import BatchError, ModelSpecError
from hf_symbolic.model.kinds import KINDS

__all__ = ["ModelSpec", "check_model", "check_batch", "check_mode", "CURVATURES"]

CURVATURES = tuple(KINDS)

# Kinds of the values of a Python list that a batch conversion accepts, by the input's dtype kind.
_CONVERTIBLE = {"b": "b", "i": "biu", "u": "biu", "f": "biuf", "c": "biufc"}


def _describe(x) -> str:
    name = getattr(x, "name", None)
    kind = type(x).__name__
    return f"{kind} {name!r}" if name else kind


def _is_variable(x) -> bool:
    from pytensor.graph.basic import Variable

    return isinstance(x, Variable)


def _ancestors(outputs):
    from pytensor.graph.traversal import ancestors

    return set(ancestors(list(outputs)))


def _missing_inputs(ancestors, known) -> list:
    """Descriptions of the free symbolic roots among ``ancestors`` that are not in ``known``."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Constant

    free = [x for x in ancestors if x.owner is None and not isinstance(x, (SharedVariable, Constant))]
    return sorted(_describe(x) for x in free if x not in known)


@dataclass(frozen=True)
class ModelSpec:
    """A validated model: parameters, inputs, split, costs and structural-damping units."""

    p: tuple
    inputs: tuple
    s: object
    costs: tuple
    h: object
    ha: object
    curvature: str


def check_mode(mode):
    """Return the PyTensor ``Mode`` for ``mode`` or raise :class:`ModelSpecError`."""
    from pytensor.compile.mode import Mode, get_mode, predefined_modes

    if mode is None or isinstance(mode, Mode):
        return without_wrong_rewrites(get_mode(mode) if mode is None else mode)
    if not isinstance(mode, str):
        raise ModelSpecError(f"mode must be None, a PyTensor Mode or a mode name, got {type(mode).__name__} {mode!r}")
    try:
        resolved = get_mode(mode)
    except Exception as exc:  # pytensor raises ValueError / KeyError depending on the name
        known = sorted(set(predefined_modes) | {"FAST_RUN"})
        raise ModelSpecError(f"unknown mode {mode!r}: expected None, a PyTensor Mode or one of {known}") from exc
    return without_wrong_rewrites(resolved)


#: Rewrites of PyTensor 3.0.7 that make wrong numbers, by the tag that selects a mode's rewrite set.
#: ``local_second_sink`` in FAST_COMPILE changes the gradient of a cost summed over every step
#: of a ``scan``: the gradient of ``sum(h.sum(0) * y) + sum(h[-1] ** 2)`` for a tanh RNN is off
#: by up to 14 while FAST_RUN, NUMBA, FAST_COMPILE without it and no rewrites at all agree to
#: 3e-15 (``tests/model/test_checks.py::test_fast_compile_gradient_of_an_every_step_cost``).
WRONG_REWRITES = {"fast_compile": ("local_second_sink",)}


def without_wrong_rewrites(mode):
    """``mode`` without the rewrites of :data:`WRONG_REWRITES` its rewrite set would apply."""
    include = getattr(getattr(mode, "_optimizer", None), "include", ())
    names = [name for tag, names in WRONG_REWRITES.items() if tag in include for name in names]
    return mode.excluding(*names) if names else mode


def check_model(p, inputs, s, costs, h=None, ha=None, curvature="gauss-newton") -> ModelSpec:
    """Validate the constructor arguments of :class:`~hf_symbolic.hf_optimizer`.

    Raises
    ------
    ModelSpecError
        With a message naming the offending value and what was expected.
    """
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Constant

    if curvature not in CURVATURES:
        raise ModelSpecError(f"unknown curvature {curvature!r}: expected one of {list(CURVATURES)}")

    # p ---------------------------------------------------------------------
    if not isinstance(p, (list, tuple)):
        raise ModelSpecError(f"p must be a list of PyTensor shared variables, got {_describe(p)}")
    if len(p) == 0:
        raise ModelSpecError("p must hold at least one shared variable, got an empty list")
    for i, x in enumerate(p):
        if not isinstance(x, SharedVariable):
            raise ModelSpecError(
                f"p[{i}] must be a PyTensor shared variable (pytensor.shared(...)), got {_describe(x)}"
            )
        dtype = getattr(x, "dtype", None)
        if dtype is None or np.dtype(dtype).kind != "f":
            got = np.dtype(dtype) if dtype is not None else f"no dtype (type {x.type})"
            raise ModelSpecError(f"p[{i}] ({_describe(x)}) must have a floating dtype, got {got}")
    seen = {}
    for i, x in enumerate(p):
        if id(x) in seen:
            raise ModelSpecError(f"p[{i}] ({_describe(x)}) duplicates p[{seen[id(x)]}]: each parameter must appear once")
        seen[id(x)] = i

    # inputs ----------------------------------------------------------------
    if not isinstance(inputs, (list, tuple)):
        raise ModelSpecError(f"inputs must be a list of symbolic variables, got {_describe(inputs)}")
    for i, x in enumerate(inputs):
        if not _is_variable(x) or x.owner is not None or isinstance(x, (SharedVariable, Constant)):
            raise ModelSpecError(
                f"inputs[{i}] must be a free symbolic variable such as pytensor.tensor.matrix(), got {_describe(x)}"
            )
    first = {}
    for i, x in enumerate(inputs):
        if id(x) in first:
            raise ModelSpecError(
                f"inputs[{i}] ({_describe(x)}) duplicates inputs[{first[id(x)]}]: each input must appear once"
            )
        first[id(x)] = i

    # costs -----------------------------------------------------------------
    if _is_variable(costs):
        costs = [costs]
    if not isinstance(costs, (list, tuple)) or len(costs) == 0:
        raise ModelSpecError(f"costs must be a non-empty list of scalar expressions, got {_describe(costs)}")
    for i, c in enumerate(costs):
        if not _is_variable(c) or getattr(c, "ndim", None) != 0:
            ndim = getattr(c, "ndim", "?")
            raise ModelSpecError(
                f"costs[{i}] must be a scalar (0-d) expression, got {_describe(c)} with ndim={ndim}"
                + (" (reduce it with .mean() or .sum())" if i == 0 else "")
            )
    if np.dtype(costs[0].dtype).kind != "f":
        raise ModelSpecError(f"costs[0] must have a floating dtype, got {costs[0].dtype}")

    # s ---------------------------------------------------------------------
    if not _is_variable(s):
        raise ModelSpecError(f"s must be a symbolic expression (the split), got {_describe(s)}")
    s_anc = _ancestors([s])
    missing = [i for i, x in enumerate(p) if x not in s_anc]
    if len(missing) == len(p):
        raise ModelSpecError("s does not depend on any parameter in p: the split must be computed from p")
    if curvature == "gauss-newton" and missing:
        i = missing[0]
        raise ModelSpecError(
            f"s does not depend on p[{i}] ({_describe(p[i])}): Gauss-Newton products at the split s would "
            "ignore it; choose a split computed from every parameter (or curvature='hessian')"
        )
    cost_anc = _ancestors([costs[0]])
    if s not in cost_anc:
        raise ModelSpecError(f"costs[0] does not depend on s ({_describe(s)}): the split must lie on the path to the cost")
    known = set(inputs)
    for i, c in enumerate(costs):
        anc = cost_anc if i == 0 else _ancestors([c])
        unknown = _missing_inputs(anc, known)
        if unknown:
            raise ModelSpecError(f"costs[{i}] depends on symbolic variables missing from inputs: {unknown}")
    not_reaching = [i for i, x in enumerate(p) if x not in cost_anc]
    if not_reaching:
        raise ModelSpecError(
            f"costs[0] does not depend on p[{not_reaching[0]}] ({_describe(p[not_reaching[0]])}): "
            "every parameter must influence the optimized cost"
        )

    # h / ha ----------------------------------------------------------------
    if h is None and ha is not None:
        raise ModelSpecError("ha was given without h: structural damping needs the hidden units h")
    if h is not None:
        if not _is_variable(h):
            raise ModelSpecError(f"h must be a symbolic expression of the hidden units, got {_describe(h)}")
        if ha is None:
            ha = h
        if not _is_variable(ha):
            raise ModelSpecError(f"ha must be a symbolic expression (pre-activation of h), got {_describe(ha)}")
        if h.ndim != ha.ndim:
            raise ModelSpecError(f"h and ha must have the same shape, got ndim {h.ndim} and {ha.ndim}")
        for a, b in zip(h.type.shape, ha.type.shape):
            if a is not None and b is not None and a != b:
                raise ModelSpecError(f"h and ha must have the same shape, got static shapes {h.type.shape} and {ha.type.shape}")
        if not any(x in _ancestors([ha]) for x in p):
            raise ModelSpecError("ha does not depend on any parameter in p: structural damping needs units computed from p")
        if ha is not h and ha not in _ancestors([h]):
            raise ModelSpecError(
                "h is not computed from ha: ha must be the pre-activation of h in the outer graph "
                "(e.g. return ha from scan and take h = tanh(ha) outside it), not a sibling output of the same scan"
            )
        unknown = _missing_inputs(_ancestors([h, ha]), known)
        if unknown:
            raise ModelSpecError(f"h depends on symbolic variables missing from inputs: {unknown}")

    return ModelSpec(tuple(p), tuple(inputs), s, tuple(costs), h, ha, curvature)


def check_batch(inputs, batch, name: str = "batch") -> list:
    """Check a minibatch against the symbolic ``inputs``; return it as a list of arrays.

    Arrays are accepted as they are when their dtype equals the input's dtype.
    A Python scalar or (nested, rectangular) list is converted when its values
    keep their kind (ints into a float input, floats into a float32 input, but
    not floats into an int input, which would truncate them); a numpy array of
    another dtype is refused (silent float64 -> float32 casts would hide bugs
    and copies).  Values are not checked for NaN or inf: an update whose batch
    holds them fails with a non-finite cost and is rejected by training.

    Raises
    ------
    BatchError
        Wrong number of arrays, ndim, dtype or static size, or a list that is
        ragged or holds values that cannot be converted.
    """
    if isinstance(batch, np.ndarray) or not hasattr(batch, "__len__"):
        raise BatchError(
            f"{name} must be a sequence of {len(inputs)} arrays (one per symbolic input), got {type(batch).__name__}"
        )
    batch = list(batch)
    if len(batch) != len(inputs):
        raise BatchError(
            f"{name} holds {len(batch)} arrays but the model has {len(inputs)} inputs "
            f"({[_describe(x) for x in inputs]})"
        )
    out = []
    for i, (x, a) in enumerate(zip(inputs, batch)):
        if not isinstance(a, np.ndarray):
            try:
                raw = np.asarray(a)
            except (ValueError, TypeError) as exc:  # ragged nested lists
                raise BatchError(f"{name}[{i}] for input {_describe(x)} is not a rectangular array: {exc}") from exc
            target = np.dtype(x.dtype)
            a = raw.astype(target) if raw.dtype.kind in _CONVERTIBLE.get(target.kind, "") else None
            if a is None or (target.kind in "iu" and not np.array_equal(a, raw)):  # not wrapped around
                raise BatchError(
                    f"{name}[{i}] for input {_describe(x)} holds values of dtype {raw.dtype} that cannot be "
                    f"converted to {target} without changing them; expected values of that kind and range"
                )
        if a.ndim != x.ndim:
            raise BatchError(f"{name}[{i}] for input {_describe(x)} must have ndim {x.ndim}, got shape {a.shape}")
        if a.dtype != np.dtype(x.dtype):
            raise BatchError(
                f"{name}[{i}] for input {_describe(x)} must have dtype {x.dtype}, got {a.dtype} "
                f"(convert it with .astype({x.dtype!r}))"
            )
        for ax, (want, got) in enumerate(zip(x.type.shape, a.shape)):
            if want is not None and want != got:
                raise BatchError(f"{name}[{i}] for input {_describe(x)} must have size {want} on axis {ax}, got shape {a.shape}")
        out.append(a)
    return out
