"""Validation of the model given to ``hf_optimizer`` and of the arguments of its products.

Each malformed argument must raise the named error whose message names the bad
value and what was expected, and the constructor must reject a model before
compiling anything.
"""

import re

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile import FunctionMaker

from hf_symbolic import hf_optimizer
from hf_symbolic.errors import BatchError, HFError, ModelSpecError, VectorSizeError
from hf_symbolic.model.checks import check_batch, check_model
from models import REFERENCE_MODE, mlp, python_scans, rnn, rnn_on_seed

N_CASES, N_IN, N_OUT = 5, 3, 2


def words(*fragments):
    """A ``match=`` pattern that requires every fragment, literally and in any order."""
    return "(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments)


def linear_model(dtype="float64", x_shape=(None, None)):
    """``cost = mean_i ||x_i W + b - y_i||^2``: parameters W (3x2) and b (2,), split s = xW + b."""
    rng = np.random.default_rng(0)
    W = pytensor.shared(rng.normal(size=(N_IN, N_OUT)).astype(dtype), name="W")
    b = pytensor.shared(rng.normal(size=N_OUT).astype(dtype), name="b")
    x = pt.tensor("x", dtype=dtype, shape=x_shape)
    y = pt.matrix("y", dtype=dtype)
    s = pt.dot(x, W) + b
    s.name = "s"
    cost = pt.mean(pt.sum((s - y) ** 2, axis=1))
    batch = [rng.normal(size=(N_CASES, N_IN)).astype(dtype), rng.normal(size=(N_CASES, N_OUT)).astype(dtype)]
    return dict(p=[W, b], inputs=[x, y], s=s, costs=[cost]), batch


def linear_gradient(W, b, X, Y):
    """Hand-derived gradient of the linear model's cost, flattened as [W, b]."""
    r = X @ W + b - Y
    return np.concatenate([(2.0 / len(X) * X.T @ r).ravel(), 2.0 * r.mean(axis=0)])


def build(spec, **kw):
    return hf_optimizer(spec["p"], spec["inputs"], spec["s"], spec["costs"], **kw)


@pytest.fixture
def spec():
    return linear_model()[0]


# -- p ---------------------------------------------------------------------------


def test_p_single_shared_variable_is_refused(spec):
    with pytest.raises(ModelSpecError, match=words("p must be a list", "shared variables", "'W'")):
        build(dict(spec, p=spec["p"][0]))


def test_p_as_tuple_is_accepted_and_gives_the_hand_gradient():
    spec, batch = linear_model()
    opt = build(dict(spec, p=tuple(spec["p"])), mode="FAST_COMPILE")
    assert opt.p == spec["p"]
    W, b = (x.get_value() for x in spec["p"])
    g, costs = opt.gradient(batch)
    np.testing.assert_allclose(g, linear_gradient(W, b, *batch), rtol=1e-12)
    np.testing.assert_allclose(costs[0], np.mean(np.sum((batch[0] @ W + b - batch[1]) ** 2, axis=1)), rtol=1e-12)


def test_p_element_symbolic_matrix(spec):
    M = pt.matrix("M")
    with pytest.raises(ModelSpecError, match=words("p[1]", "must be a PyTensor shared variable", "TensorVariable 'M'")):
        build(dict(spec, p=[spec["p"][0], M]))


def test_p_element_numpy_array(spec):
    with pytest.raises(ModelSpecError, match=words("p[0]", "must be a PyTensor shared variable", "ndarray")):
        build(dict(spec, p=[np.zeros((N_IN, N_OUT)), spec["p"][1]]))


def test_p_integer_dtype(spec):
    k = pytensor.shared(np.arange(3), name="k")
    with pytest.raises(ModelSpecError, match=words("p[2]", "'k'", "floating dtype", "int64")):
        build(dict(spec, p=[*spec["p"], k]))


def test_p_random_generator_shared_variable(spec):
    rng = pytensor.shared(np.random.default_rng(0), name="rng")
    with pytest.raises(ModelSpecError, match=words("p[1]", "'rng'", "floating dtype", "no dtype")):
        build(dict(spec, p=[spec["p"][0], rng]))


def test_p_empty(spec):
    with pytest.raises(ModelSpecError, match=words("p must hold at least one shared variable", "empty")):
        build(dict(spec, p=[]))


def test_p_duplicates(spec):
    W, b = spec["p"]
    with pytest.raises(ModelSpecError, match=words("p[2]", "'W'", "duplicates p[0]")):
        build(dict(spec, p=[W, b, W]))


# -- inputs ----------------------------------------------------------------------


def test_inputs_not_a_list(spec):
    x = spec["inputs"][0]
    with pytest.raises(ModelSpecError, match=words("inputs must be a list of symbolic variables", "TensorVariable 'x'")):
        build(dict(spec, inputs=x))


def test_inputs_non_root_expression(spec):
    x, y = spec["inputs"]
    twice = 2 * x
    twice.name = "twice_x"
    with pytest.raises(ModelSpecError, match=words("inputs[0]", "free symbolic variable", "TensorVariable 'twice_x'")):
        build(dict(spec, inputs=[twice, y]))


def test_inputs_shared_variable(spec):
    x, y = spec["inputs"]
    with pytest.raises(ModelSpecError, match=words("inputs[2]", "free symbolic variable", "TensorSharedVariable 'W'")):
        build(dict(spec, inputs=[x, y, spec["p"][0]]))


def test_inputs_constant(spec):
    x, y = spec["inputs"]
    with pytest.raises(ModelSpecError, match=words("inputs[1]", "free symbolic variable", "Constant")):
        build(dict(spec, inputs=[x, pt.constant(np.ones((2, 2)))]))


def test_inputs_duplicates(spec):
    x, y = spec["inputs"]
    with pytest.raises(ModelSpecError, match=words("inputs[2]", "'x'", "duplicates inputs[0]")):
        build(dict(spec, inputs=[x, y, x]))


# -- costs -----------------------------------------------------------------------


def test_cost_not_scalar_suggests_mean(spec):
    x, y = spec["inputs"]
    per_case = pt.sum((spec["s"] - y) ** 2, axis=1)
    per_case.name = "per_case"
    with pytest.raises(ModelSpecError, match=words("costs[0]", "scalar (0-d)", "'per_case'", "ndim=1", ".mean()")):
        build(dict(spec, costs=[per_case]))


def test_monitored_cost_not_scalar(spec):
    err = pt.neq(pt.argmax(spec["s"], axis=1), pt.argmax(spec["inputs"][1], axis=1))
    err.name = "err"
    with pytest.raises(ModelSpecError, match=words("costs[1]", "scalar (0-d)", "'err'", "ndim=1")) as info:
        build(dict(spec, costs=[spec["costs"][0], err]))
    assert ".mean()" not in str(info.value)  # the hint is only for the optimized cost


def test_costs_empty(spec):
    with pytest.raises(ModelSpecError, match=words("costs must be a non-empty list", "scalar")):
        build(dict(spec, costs=[]))


def test_cost_integer_dtype(spec):
    count = pt.sum(pt.gt(spec["s"], 0))
    with pytest.raises(ModelSpecError, match=words("costs[0]", "floating dtype", "int64")):
        build(dict(spec, costs=[count]))


def test_single_cost_variable_is_accepted(spec):
    opt = build(dict(spec, costs=spec["costs"][0]))
    assert opt.costs == spec["costs"]


def test_cost_depends_on_variable_missing_from_inputs(spec):
    x, y = spec["inputs"]
    with pytest.raises(ModelSpecError, match=words("costs[0]", "missing from inputs", "'y'")) as info:
        build(dict(spec, inputs=[x]))
    assert "'x'" not in str(info.value)


def test_monitored_cost_depends_on_variable_missing_from_inputs(spec):
    z = pt.matrix("z")
    with pytest.raises(ModelSpecError, match=words("costs[1]", "missing from inputs", "'z'")):
        build(dict(spec, costs=[spec["costs"][0], pt.mean(z)]))


# -- s ---------------------------------------------------------------------------


def test_s_not_depending_on_p(spec):
    x, y = spec["inputs"]
    s = 3.0 * x
    W, b = spec["p"]
    cost = pt.mean((s - y) ** 2) + pt.sum(W**2) + pt.sum(b**2)
    with pytest.raises(ModelSpecError, match=words("s does not depend on any parameter in p")):
        build(dict(spec, s=s, costs=[cost]))


def gauss_newton_split_missing_b():
    """s = xW does not depend on b; b enters the cost through a weight-decay term."""
    spec, batch = linear_model()
    x, y = spec["inputs"]
    W, b = spec["p"]
    s = pt.dot(x, W)
    cost = pt.mean(pt.sum((s - y) ** 2, axis=1)) + pt.sum(b**2)
    return dict(spec, s=s, costs=[cost]), batch


def test_s_not_depending_on_one_parameter_in_gauss_newton_mode():
    spec, _ = gauss_newton_split_missing_b()
    with pytest.raises(ModelSpecError, match=words("s does not depend on p[1]", "'b'", "Gauss-Newton", "curvature='hessian'")):
        build(spec)


def test_s_not_depending_on_one_parameter_allowed_with_hessian():
    spec, batch = gauss_newton_split_missing_b()
    opt = build(spec, curvature="hessian", mode="FAST_COMPILE")
    assert opt.curvature == "hessian"
    # H of mean||xW - y||^2 + |b|^2 is block-diagonal: (2/n) X^T X per output column, 2 I for b.
    X = batch[0]
    v = np.random.default_rng(3).normal(size=opt.layout.size)
    vW, vb = v[: N_IN * N_OUT].reshape(N_IN, N_OUT), v[N_IN * N_OUT :]
    expected = np.concatenate([(2.0 / N_CASES * X.T @ X @ vW).ravel(), 2.0 * vb])
    np.testing.assert_allclose(opt.hessian_product(v, batch), expected, rtol=1e-12)


def test_cost_not_depending_on_s(spec):
    x, y = spec["inputs"]
    W, b = spec["p"]
    cost = pt.mean(pt.sum((pt.dot(x, W) - y) ** 2, axis=1)) + pt.sum(b)
    with pytest.raises(ModelSpecError, match=words("costs[0] does not depend on s", "'s'", "split")):
        build(dict(spec, costs=[cost]))


def test_parameter_not_influencing_cost():
    spec, _ = linear_model()
    c = pytensor.shared(np.ones(4), name="c")
    with pytest.raises(ModelSpecError, match=words("costs[0] does not depend on p[2]", "'c'", "every parameter")):
        # curvature='hessian' lets s miss c, so this check is the one that fires.
        build(dict(spec, p=[*spec["p"], c]), curvature="hessian")


# -- structural damping: h / ha --------------------------------------------------


def hidden_model():
    """A one-hidden-layer MLP returning its spec plus the hidden pre-activation ``a`` and units ``h``."""
    m = mlp("sigmoid")
    x = m.inputs[0]
    W1, b1 = m.p[0], m.p[1]
    a = pt.dot(x, W1) + b1
    h = pt.sigmoid(a)
    W2, b2 = m.p[2], m.p[3]
    s = pt.dot(h, W2) + b2
    y = m.inputs[1]
    cost = pt.mean(pt.sum(pt.softplus(s) - y * s, axis=1))
    return dict(p=m.p, inputs=m.inputs, s=s, costs=[cost]), a, h


def test_structural_h_and_ha_accepted():
    spec, a, h = hidden_model()
    opt = build(spec, h=h, ha=a)
    assert opt.has_structural_damping
    # without ha, the split is h itself
    checked = check_model(spec["p"], spec["inputs"], spec["s"], spec["costs"], h=h)
    assert checked.h is h and checked.ha is h


def test_ha_without_h():
    spec, a, _ = hidden_model()
    with pytest.raises(ModelSpecError, match=words("ha was given without h", "hidden units h")):
        build(spec, ha=a)


def test_h_not_symbolic():
    spec, _, _ = hidden_model()
    with pytest.raises(ModelSpecError, match=words("h must be a symbolic expression", "ndarray")):
        build(spec, h=np.zeros((5, 4)))


def test_h_and_ha_different_ndim():
    spec, a, h = hidden_model()
    with pytest.raises(ModelSpecError, match=words("h and ha must have the same shape", "ndim 2 and 1")):
        build(spec, h=h, ha=pt.sum(a, axis=1))


def test_h_and_ha_different_static_shapes():
    spec, a, _ = hidden_model()
    ha = pt.specify_shape(a, (5, 4))
    h = pt.sigmoid(ha).T
    with pytest.raises(ModelSpecError, match=words("h and ha must have the same shape", "(4, 5)", "(5, 4)")):
        build(spec, h=h, ha=ha)


def test_ha_not_depending_on_p():
    spec, _, _ = hidden_model()
    x = spec["inputs"][0]
    with pytest.raises(ModelSpecError, match=words("ha does not depend on any parameter in p")):
        build(spec, h=pt.sigmoid(x), ha=x)


def test_h_depends_on_variable_missing_from_inputs():
    spec, a, _ = hidden_model()
    z = pt.matrix("z")
    with pytest.raises(ModelSpecError, match=words("h depends on", "missing from inputs", "'z'")):
        build(spec, h=pt.sigmoid(a + z), ha=a)


def sibling_scan_rnn():
    """A tanh RNN whose scan returns both the pre-activation and the units as sibling outputs."""
    rng = np.random.default_rng(0)
    Wx = pytensor.shared(rng.normal(size=(2, 3)), name="Wx")
    Wh = pytensor.shared(rng.normal(size=(3, 3)), name="Wh")
    Wo = pytensor.shared(rng.normal(size=(3, 1)), name="Wo")
    x, y = pt.tensor3("x"), pt.matrix("y")

    def step(x_t, a_prev, h_prev):
        a_t = pt.dot(x_t, Wx) + pt.dot(h_prev, Wh)
        return a_t, pt.tanh(a_t)

    start = pt.zeros((x.shape[1], 3))
    ha, h = pytensor.scan(step, sequences=x, outputs_info=[start, start], return_updates=False)
    s = pt.dot(h[-1], Wo)
    cost = pt.mean(pt.softplus(s) - y * s)
    return dict(p=[Wx, Wh, Wo], inputs=[x, y], s=s, costs=[cost]), h, ha


def test_h_not_computed_from_ha_sibling_scan_outputs():
    spec, h, ha = sibling_scan_rnn()
    # scan returns views of its outputs; underneath, both come from the same Scan node
    assert h.owner.inputs[0].owner is ha.owner.inputs[0].owner
    with pytest.raises(ModelSpecError, match=words("h is not computed from ha", "sibling output of the same scan")):
        build(spec, h=(h + 1) / 2, ha=ha)


def test_rnn_with_ha_as_scan_state_is_accepted():
    m = rnn(structural=True)
    spec = check_model(m.p, m.inputs, m.s, m.costs, m.h, m.ha)
    assert spec.h is m.h and spec.ha is m.ha


# -- options ---------------------------------------------------------------------


def test_unknown_curvature(spec):
    with pytest.raises(ModelSpecError, match=words("unknown curvature 'newton'", "gauss-newton", "hessian")):
        build(spec, curvature="newton")


def test_unknown_mode_string(spec):
    with pytest.raises(ModelSpecError, match=words("unknown mode 'FASTEST'", "PyTensor Mode", "FAST_COMPILE", "NUMBA")):
        build(spec, mode="FASTEST")


@pytest.mark.parametrize("mode", [3, ["FAST_COMPILE"]], ids=["int", "list"])
def test_mode_of_wrong_type(spec, mode):
    with pytest.raises(ModelSpecError, match=words("mode must be None, a PyTensor Mode or a mode name", type(mode).__name__)):
        build(spec, mode=mode)


def test_mode_instance_is_accepted(spec):
    mode = pytensor.compile.mode.get_mode("CVM")
    assert build(spec, mode=mode).mode is mode


@pytest.mark.parametrize("as_instance", [False, True], ids=["name", "Mode"])
def test_fast_compile_gradient_of_an_every_step_cost(as_instance):
    """FAST_COMPILE, by name or as a Mode, runs without the rewrite that makes this gradient wrong.

    The reference is central differences of the cost compiled as the dense
    references are (``models.REFERENCE_MODE``: no rewrites but those a graph
    needs to run); PyTensor 3.0.7's own FAST_COMPILE compile of the gradient is
    off by up to 14 (``hf_symbolic.model.checks.WRONG_REWRITES``).
    """
    from pytensor.compile.mode import get_mode
    from pytensor.graph.replace import clone_replace

    p, inputs, cost, data = rnn_on_seed(every_step=True)
    mode = get_mode("FAST_COMPILE") if as_instance else "FAST_COMPILE"
    opt = hf_optimizer(p, inputs, cost, [cost], mode=mode)
    g = opt.gradient(data)[0]
    theta = pt.vector("theta")
    (cost_theta,) = python_scans([clone_replace(cost, replace=dict(zip(p, opt.layout.symbolic_split(theta))))])
    f = pytensor.function([theta, *inputs], cost_theta, mode=REFERENCE_MODE)
    theta0 = opt.layout.flatten([x.get_value() for x in p])
    eps = 1e-6
    numeric = np.array([(f(theta0 + eps * e, *data) - f(theta0 - eps * e, *data)) / (2 * eps)
                        for e in np.eye(theta0.size)])
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case_axes, fragments", [([0], ("case_axes has 1 entries", "one per input (2)")), ([0, 2], ("case_axes[1]=2", "ndim 2"))])
def test_bad_case_axes(spec, case_axes, fragments):
    with pytest.raises(ModelSpecError, match=words(*fragments)):
        build(spec, case_axes=case_axes)


def test_errors_are_value_errors():
    for cls in (ModelSpecError, BatchError, VectorSizeError):
        assert issubclass(cls, HFError) and issubclass(cls, ValueError)


# -- no compilation before validation, lazy compilation ----------------------------


@pytest.fixture
def no_compile(monkeypatch):
    """Make every route to a compiled function fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("a function was compiled")

    monkeypatch.setattr(pytensor, "function", refuse)
    monkeypatch.setattr(FunctionMaker, "__init__", refuse)
    return monkeypatch


@pytest.fixture
def compiled(monkeypatch):
    """Count the names of the functions compiled through ``pytensor.function``."""
    names = []
    real = pytensor.function

    def counting(*args, **kwargs):
        names.append(kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pytensor, "function", counting)
    return names


BAD_SPECS = {
    "p_not_list": lambda s: (dict(s, p=s["p"][0]), {}),
    "empty_p": lambda s: (dict(s, p=[]), {}),
    "missing_input": lambda s: (dict(s, inputs=s["inputs"][:1]), {}),
    "cost_not_scalar": lambda s: (dict(s, costs=[s["s"]]), {}),
    "unknown_curvature": lambda s: (s, dict(curvature="newton")),
    "unknown_mode": lambda s: (s, dict(mode="FASTEST")),
    "ha_without_h": lambda s: (s, dict(ha=s["s"])),
}


@pytest.mark.parametrize("bad", sorted(BAD_SPECS))
def test_constructor_validates_before_compiling(no_compile, spec, bad):
    kwargs_spec, options = BAD_SPECS[bad](spec)
    with pytest.raises(ModelSpecError):
        build(kwargs_spec, **options)


def test_valid_construction_compiles_nothing(no_compile):
    spec, batch = linear_model()
    opt = build(spec, mode="FAST_COMPILE")
    m = rnn(structural=True)
    opt_rnn = hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha)
    assert opt.compile_seconds == 0.0 and opt_rnn.compile_seconds == 0.0
    no_compile.undo()  # compiling is allowed again: the first product compiles
    W, b = (x.get_value() for x in spec["p"])
    np.testing.assert_allclose(opt.gradient(batch)[0], linear_gradient(W, b, *batch), rtol=1e-12)
    assert opt.compile_seconds > 0.0


def test_each_function_is_compiled_once(compiled):
    spec, batch = linear_model()
    opt = build(spec, mode="FAST_COMPILE")
    assert compiled == []
    g1, c1 = opt.gradient(batch)
    g2, c2 = opt.gradient(batch)
    assert compiled == ["hf_gradient"]
    np.testing.assert_array_equal(g1, g2)
    assert c1 == c2
    opt.compile(("gradient",))
    assert compiled == ["hf_gradient"]
    v = np.ones(opt.layout.size)
    gv1 = opt.gauss_newton_product(v, batch)
    n_gv = len(compiled)
    assert n_gv > 1 and "hf_gradient" not in compiled[1:]
    gv2 = opt.gauss_newton_product(v, batch)
    gv3 = opt.curvature_operator(batch).matvec(v)
    assert len(compiled) == n_gv, compiled  # the Gauss-Newton product is compiled once too
    np.testing.assert_array_equal(gv1, gv2)
    np.testing.assert_array_equal(gv1, gv3)
    # For s = xW + b and a squared error, G = J^T (2/n) J with J the Jacobian of s.
    X = batch[0]
    J = np.concatenate([np.kron(X, np.eye(N_OUT)), np.tile(np.eye(N_OUT), (N_CASES, 1))], axis=1)
    np.testing.assert_allclose(gv1, 2.0 / N_CASES * J.T @ (J @ v), rtol=1e-12)


# -- call time: minibatches --------------------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    """One optimizer on the linear model, shared by the call-time tests (compiles lazily, once each)."""
    spec, batch = linear_model()
    return build(spec, mode="FAST_COMPILE"), batch


def _gradient(opt, batch):
    return opt.gradient(batch)


def _cost(opt, batch):
    return opt.cost(batch)


def _gauss_newton(opt, batch):
    return opt.gauss_newton_product(np.ones(opt.layout.size), batch)


def _hessian(opt, batch):
    return opt.hessian_product(np.ones(opt.layout.size), batch)


def _operator(opt, batch):
    return opt.curvature_operator(batch)


PRODUCTS = [_gradient, _cost, _gauss_newton, _hessian, _operator]


@pytest.mark.parametrize("call", PRODUCTS)
def test_batch_wrong_number_of_arrays(fitted, call):
    opt, batch = fitted
    with pytest.raises(BatchError, match=words("batch holds 1 arrays", "model has 2 inputs", "'x'", "'y'")):
        call(opt, batch[:1])


@pytest.mark.parametrize("call", PRODUCTS)
def test_batch_bare_ndarray(fitted, call):
    opt, batch = fitted
    with pytest.raises(BatchError, match=words("batch must be a sequence of 2 arrays", "one per symbolic input", "ndarray")):
        call(opt, np.stack([batch[0][:, :2], batch[1]]))


@pytest.mark.parametrize("call", PRODUCTS)
def test_batch_wrong_ndim(fitted, call):
    opt, batch = fitted
    with pytest.raises(BatchError, match=words("batch[0]", "'x'", "must have ndim 2", "shape (3,)")):
        call(opt, [batch[0][0], batch[1]])


def test_batch_wrong_dtype_suggests_astype():
    spec, batch = linear_model(dtype="float32")
    opt = build(spec, mode="FAST_COMPILE")
    bad = [batch[0], batch[1].astype("float64")]
    for call in (_operator, _gauss_newton):
        with pytest.raises(BatchError, match=words("batch[1]", "'y'", "dtype float32", "got float64", ".astype('float32')")):
            call(opt, bad)


def test_batch_static_shape_mismatch():
    spec, batch = linear_model(x_shape=(None, N_IN))
    opt = build(spec, mode="FAST_COMPILE")
    X = np.ones((N_CASES, N_IN + 1))
    with pytest.raises(BatchError, match=words("batch[0]", "'x'", f"size {N_IN} on axis 1", f"shape ({N_CASES}, {N_IN + 1})")):
        opt.curvature_operator([X, batch[1]])


def test_batch_lists_are_converted_to_the_input_dtype():
    spec, batch = linear_model(dtype="float32")
    out = check_batch(spec["inputs"], [batch[0].tolist(), batch[1]])
    assert out[0].dtype == np.float32
    np.testing.assert_array_equal(out[0], batch[0])


@pytest.mark.parametrize(
    "call",
    PRODUCTS,
    ids=lambda f: f.__name__,
)
def test_bad_batch_is_refused_before_compiling(no_compile, call):
    spec, batch = linear_model()
    opt = build(spec, mode="FAST_COMPILE")
    with pytest.raises(BatchError):
        call(opt, batch[:1])


# -- call time: flat vectors and the structural coefficient ------------------------


@pytest.mark.parametrize("shape", [(7,), (8, 1)], ids=["short", "2d"])
def test_v_of_wrong_shape(fitted, shape):
    opt, batch = fitted
    assert opt.layout.size == 8
    v = np.ones(shape)
    fragments = ("v must be a flat 1-D vector of length 8", f"got an array of shape {shape}")
    with pytest.raises(VectorSizeError, match=words(*fragments)):
        opt.gauss_newton_product(v, batch)
    with pytest.raises(VectorSizeError, match=words(*fragments)):
        opt.hessian_product(v, batch)
    with pytest.raises(VectorSizeError, match=words(*fragments)):
        opt.unflatten(v)


def test_v_complex(fitted):
    opt, batch = fitted
    with pytest.raises(VectorSizeError, match=words("v must be a real numeric vector", "complex128")):
        opt.gauss_newton_product(np.ones(8, dtype=complex), batch)


def test_set_flat_wrong_length(fitted):
    opt, _ = fitted
    before = opt.get_flat()
    with pytest.raises(VectorSizeError, match=words("theta must be a flat 1-D vector of length 8", "shape (9,)")):
        opt.set_flat(np.zeros(9))
    np.testing.assert_array_equal(opt.get_flat(), before)


def test_structural_coefficient_without_h(fitted):
    opt, batch = fitted
    assert not opt.has_structural_damping
    with pytest.raises(ModelSpecError, match=words("structural_coefficient=0.5", "needs structural damping", "pass h")):
        opt.gauss_newton_product(np.ones(8), batch, structural_coefficient=0.5)
    with pytest.raises(ModelSpecError, match=words("structural_coefficient=0.5", "needs structural damping")):
        opt.curvature_operator(batch, structural_coefficient=0.5)


@pytest.mark.parametrize("c", [-1.0, float("nan"), float("inf")], ids=["negative", "nan", "inf"])
def test_structural_coefficient_negative_or_not_finite(c):
    spec, a, h = hidden_model()
    opt = build(spec, h=h, ha=a)  # structural damping is available; the value itself is bad
    m = mlp("sigmoid")
    with pytest.raises(ModelSpecError, match=words("structural_coefficient must be a finite number >= 0", f"got {c!r}")):
        opt.gauss_newton_product(np.ones(opt.layout.size), m.batch, structural_coefficient=c)
    with pytest.raises(ModelSpecError, match=words("structural_coefficient must be a finite number >= 0", f"got {c!r}")):
        opt.curvature_operator(m.batch, structural_coefficient=c)
    assert opt.compile_seconds == 0.0
