"""Small PyTensor models shared by the tests, and dense references built from explicit Jacobians."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import graph_inputs, io_toposort
from pytensor.link.vm import VMLinker
from pytensor.scan.op import Scan


def production_mode():
    """The mode hf_symbolic picks by itself here (the C VM with OpenBLAS when linkable), whatever the suite set.

    ``conftest.py`` sets ``HF_SYMBOLIC_MODE=FAST_COMPILE`` for the suite; tests
    of the production backend pass this mode explicitly instead of ``None``.
    """
    from hf_symbolic.graph import backend

    saved = os.environ.pop("HF_SYMBOLIC_MODE", None)
    try:
        return backend.default_mode() or "CVM"
    finally:
        if saved is not None:
            os.environ["HF_SYMBOLIC_MODE"] = saved


class DatasetWrapper:
    """Base of the tests' dataset wrappers: position, reshuffle and saved state are the wrapped dataset's."""

    def __init__(self, inner):
        self.inner = inner

    def update(self):
        self.inner.update()

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


@dataclass
class Model:
    p: list
    inputs: list
    s: object
    costs: list
    batch: list
    h: object = None
    ha: object = None
    extra: dict = field(default_factory=dict)


def _shared(rng, shape, name, scale=0.5, dtype="float64"):
    return pytensor.shared((rng.normal(size=shape) * scale).astype(dtype), name=name)


def mlp(kind="sigmoid", sizes=(3, 4, 2), n=5, seed=0, dtype="float64"):
    """A one-hidden-layer MLP; ``kind`` picks the output and loss.

    sigmoid: sigmoid + binary cross-entropy; softmax: softmax + categorical
    cross-entropy; linear: identity + squared error.
    """
    rng = np.random.default_rng(seed)
    n_in, n_h, n_out = sizes
    W1, b1 = _shared(rng, (n_in, n_h), "W1", dtype=dtype), _shared(rng, (n_h,), "b1", 0.1, dtype)
    W2, b2 = _shared(rng, (n_h, n_out), "W2", dtype=dtype), _shared(rng, (n_out,), "b2", 0.1, dtype)
    x, y = pt.matrix("x", dtype=dtype), pt.matrix("y", dtype=dtype)
    hid = pt.sigmoid(pt.dot(x, W1) + b1)
    s = pt.dot(hid, W2) + b2
    X = rng.normal(size=(n, n_in)).astype(dtype)
    if kind == "sigmoid":
        out = pt.sigmoid(s)
        cost = pt.mean(pt.sum(-y * pt.log(out) - (1 - y) * pt.log(1 - out), axis=1))
        Y = rng.integers(0, 2, size=(n, n_out)).astype(dtype)
    elif kind == "softmax":
        out = pt.special.softmax(s, axis=-1)
        cost = pt.mean(-pt.sum(y * pt.log(out), axis=1))
        Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, size=n)]
    elif kind == "linear":
        cost = pt.mean(pt.sum((s - y) ** 2, axis=1))
        Y = rng.normal(size=(n, n_out)).astype(dtype)
    else:
        raise ValueError(kind)
    err = pt.mean(pt.neq(pt.argmax(s, axis=1), pt.argmax(y, axis=1)))
    return Model([W1, b1, W2, b2], [x, y], s, [cost, err], [X, Y])


def rnn(every_step=False, structural=False, n_in=2, n_h=4, n_out=1, T=5, n=3, seed=0, dtype="float64", scan_mode=None):
    """A tanh RNN through ``scan`` with a sigmoid output at the last step (or at every step).

    ``scan_mode`` is the scan's own mode (None: PyTensor's C mode, whatever the mode of
    the function that runs it); its gradients and hf_symbolic's split scans inherit it.
    """
    rng = np.random.default_rng(seed)
    Wx = _shared(rng, (n_in, n_h), "Wx", dtype=dtype)
    Wh = _shared(rng, (n_h, n_h), "Wh", dtype=dtype)
    bh = _shared(rng, (n_h,), "bh", 0.1, dtype)
    Wo = _shared(rng, (n_h, n_out), "Wo", dtype=dtype)
    bo = _shared(rng, (n_out,), "bo", 0.1, dtype)
    x = pt.tensor3("x", dtype=dtype)
    y = pt.tensor3("y", dtype=dtype) if every_step else pt.matrix("y", dtype=dtype)

    # The state is the pre-activation ha; h = tanh(ha) is computed from it outside the
    # loop too, so that h is a function of ha (needed for structural damping split at ha).
    def step(x_t, a_prev):
        return pt.dot(x_t, Wx) + pt.dot(pt.tanh(a_prev), Wh) + bh

    a0 = pt.zeros((x.shape[1], n_h), dtype=dtype)
    ha = pytensor.scan(step, sequences=x, outputs_info=[a0], return_updates=False, mode=scan_mode)
    h = pt.tanh(ha)
    if every_step:
        s = pt.dot(h, Wo) + bo
    else:
        s = pt.dot(h[-1], Wo) + bo
    out = pt.sigmoid(s)
    cost = pt.mean(pt.sum(-y * pt.log(out) - (1 - y) * pt.log(1 - out), axis=-1))
    X = rng.integers(0, 2, size=(T, n, n_in)).astype(dtype)
    Y = rng.integers(0, 2, size=(T, n, n_out) if every_step else (n, n_out)).astype(dtype)
    kw = {}
    if structural:
        kw = dict(h=(h + 1) / 2, ha=ha)
    return Model([Wx, Wh, bh, Wo, bo], [x, y], s, [cost], [X, Y], **kw)


def rnn_on_seed(every_step):
    """float64 tanh RNN with an explicit initial state; cost on the last state or on every state.

    Returns ``([W, U], [x, h0, y], cost, batch)``. The every-step cost is the
    graph whose gradient PyTensor 3.0.7's FAST_COMPILE gets wrong
    (``hf_symbolic.model.checks.WRONG_REWRITES``).
    """
    rng = np.random.default_rng(11)
    H = 6
    W = pytensor.shared(rng.standard_normal((H, H)) * 0.4, name="W")
    U = pytensor.shared(rng.standard_normal((2, H)) * 0.4, name="U")
    x, h0, y = pt.tensor3("x"), pt.matrix("h0"), pt.matrix("y")
    h = pytensor.scan(lambda x_t, h: pt.tanh(pt.dot(x_t, U) + pt.dot(h, W)), sequences=[x],
                      outputs_info=[h0], return_updates=False)
    cost = pt.sum((h.sum(0) if every_step else h[-1]) * y) + pt.sum(h[-1] ** 2)
    data = [rng.standard_normal((8, 5, 2)), rng.standard_normal((5, H)), rng.standard_normal((5, H))]
    return [W, U], [x, h0, y], cost, data


# -- dense references ----------------------------------------------------------


# The references are evaluated by PyTensor's Python linker with no rewrites but the few a
# graph needs to run ("minimum_compile"): the most literal evaluation of the graph,
# independent of hf_symbolic's compiled graphs and of the rewrite sets the suite tests
# them in (FAST_COMPILE's ``local_second_sink`` once made a wrong scan gradient:
# ``hf_symbolic.model.checks.WRONG_REWRITES``), and free of C code.  Two details keep
# them free of C code: a Scan compiles its inner graph with PyTensor's default C mode
# unless its own ``mode`` says otherwise (and its gradient inherits that mode), hence
# ``python_scans``; ``jacobian(..., vectorize=True)`` builds the rows without the scan
# of the row-by-row Jacobian (the same matrix, checked against it when this was written).
REFERENCE_MODE = Mode(linker=VMLinker(use_cloop=False, c_thunks=False), optimizer="minimum_compile")


def python_scans(outputs):
    """``outputs`` with each Scan of their graph replaced by a copy that runs its inner graph in Python.

    Only scans of the outer graph are copied (the tests' models nest none).
    """
    nodes = [n for n in io_toposort(graph_inputs(outputs), outputs) if isinstance(n.op, Scan)]
    if not nodes:
        return outputs
    replace = {}
    for node in nodes:
        op = node.op.clone()
        op.mode = REFERENCE_MODE
        op._fn = None
        inputs = [replace.get(x, x) for x in node.inputs]
        new = op.make_node(*inputs)
        replace.update(zip(node.outputs, new.outputs))
    return clone_replace(outputs, replace=replace)


def _reference_function(inputs, outputs):
    return pytensor.function(inputs, outputs, on_unused_input="ignore", mode=REFERENCE_MODE)


def reference_value(model, var):
    """The value of ``var`` on the model's batch, computed by the reference mode."""
    return _reference_function(model.inputs, python_scans([var]))(*model.batch)[0]


def _theta_graph(model, layout):
    theta = pt.vector("theta", dtype=layout.dtype)
    parts = layout.symbolic_split(theta)
    return theta, dict(zip(model.p, parts))


def dense_hessian(cost, wrt):
    return pytensor.gradient.jacobian(pytensor.grad(cost, wrt), wrt, vectorize=True)


def explicit_gauss_newton(model, layout, split=None, loss=None):
    """``J^T H_L J`` with ``J = ds/dtheta`` and ``H_L = d^2 L/ds^2`` built as dense matrices.

    ``split``/``loss`` default to the model's ``s`` and ``costs[0]``; ``loss``
    may be a callable ``loss(split_variable) -> scalar`` for terms that are
    not part of the model's graph.
    """
    split = model.s if split is None else split
    theta, repl = _theta_graph(model, layout)
    theta0 = layout.flatten([x.get_value() for x in model.p])
    (s_theta,) = python_scans([clone_replace(split, replace=repl)])
    jac = pytensor.gradient.jacobian(s_theta.flatten(), theta, vectorize=True)
    J = _reference_function([theta, *model.inputs], jac)(theta0, *model.batch)
    s_val = reference_value(model, split)
    s_flat = pt.vector("s_flat", dtype=split.dtype)
    s_var = s_flat.reshape(s_val.shape)
    if loss is None:
        loss_s = clone_replace(model.costs[0], replace={split: s_var})
    else:
        loss_s = loss(s_var)
    (loss_s,) = python_scans([loss_s])
    H = _reference_function([s_flat, *model.inputs], dense_hessian(loss_s, s_flat))(s_val.ravel(), *model.batch)
    return J.T @ H @ J


def explicit_hessian(model, layout):
    theta, repl = _theta_graph(model, layout)
    theta0 = layout.flatten([x.get_value() for x in model.p])
    (cost,) = python_scans([clone_replace(model.costs[0], replace=repl)])
    return _reference_function([theta, *model.inputs], dense_hessian(cost, theta))(theta0, *model.batch)


def max_rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))
