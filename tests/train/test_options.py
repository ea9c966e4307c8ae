"""train(**options): unknown keys are named alone, wrong values get their own error, before any compile."""

from hf_symbolic import BatchDataset, hf_optimizer  # first: it links OpenBLAS
from hf_symbolic.errors import ArgumentError

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest


@pytest.fixture
def setup(monkeypatch):
    rng = np.random.default_rng(0)
    W = pytensor.shared(rng.normal(size=(3, 1)), name="W")
    x, y = pt.matrix("x"), pt.matrix("y")
    s = pt.dot(x, W)
    opt = hf_optimizer([W], [x, y], s, [pt.mean((s - y) ** 2)])
    data = BatchDataset([rng.normal(size=(20, 3)), rng.normal(size=(20, 1))], 10, seed=0)

    def refuse(*a, **k):
        raise AssertionError("compiled before the options were checked")

    monkeypatch.setattr(pytensor, "function", refuse)
    return opt, data


def test_unknown_keys_are_named_and_only_they(setup):
    opt, data = setup
    with pytest.raises(ArgumentError) as err:
        opt.train(data, data, cg_decay=0.9, cg_decy=0.9, bogus=1)
    msg = str(err.value)
    assert "['bogus', 'cg_decy']" in msg
    assert "cg_decay" in msg.split("expected")[1]  # the valid names are listed after "expected"
    assert "cg_decay" not in msg.split("expected")[0]


@pytest.mark.parametrize("key, value, expected", [
    ("mu", "a", "mu='a' is invalid: expected a finite number >= 0"),
    ("initial_lambda", None, "initial_lambda=None is invalid: expected a finite number > 0"),
    ("cg_decay", [0.5], "cg_decay=[0.5] is invalid: expected a number in [0, 1]"),
    ("max_cg_iterations", 2.5, "max_cg_iterations=2.5 is invalid: expected an integer >= 1"),
    ("line_search", "yes", "line_search='yes' is invalid: expected True or False"),
    ("cg_grid_gamma", 1.0, "cg_grid_gamma=1.0 is invalid: expected a finite number > 1"),
    ("patience", "long", "patience='long' is invalid: expected a number > 0 (numpy.inf for none)"),
    ("preconditioner", 3, "preconditioner=3 is invalid"),
    ("max_cg_exponent", -0.5, "max_cg_exponent=-0.5 is invalid: expected a finite number >= 0 (0: a fixed CG cap)"),
])
def test_a_wrong_value_gets_its_own_error(setup, key, value, expected):
    opt, data = setup
    with pytest.raises(ArgumentError) as err:
        opt.train(data, data, **{key: value})
    assert expected in str(err.value)
    assert "unknown" not in str(err.value)


def test_an_unknown_preconditioner_name_lists_the_registered_ones(setup):
    opt, data = setup
    with pytest.raises(ArgumentError, match=r"preconditioner='diagonal' is unknown: expected True, False or one of \[.*'martens'"):
        opt.train(data, data, preconditioner="diagonal", num_updates=1)


def test_blas_threads_reach_the_blas_that_pytensor_links(tmp_path):
    """train(blas_threads=1) limits the OpenBLAS loaded by PyTensor's compiled modules too (a fresh process)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent('''
        from hf_symbolic import BatchDataset, hf_optimizer
        import numpy as np, pytensor, pytensor.tensor as pt
        from threadpoolctl import threadpool_info
        rng = np.random.default_rng(0)
        W = pytensor.shared(rng.normal(size=(30, 30)), name="W")
        x = pt.matrix("x")
        s = pt.dot(x, W)
        seen = []
        opt = hf_optimizer([W], [x], s, [pt.mean(s ** 2)])
        data = BatchDataset([rng.normal(size=(64, 30))], 64, seed=0)
        def cb(stats):
            seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        opt.train(data, data, num_updates=1, blas_threads=1, callback=cb, verbose=False)
        print(sorted(set(seen)))
    ''')
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "OPENBLAS_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[1]"


@pytest.mark.parametrize("exponent, batches, expected", [
    (0.0, [1, 2, 7], [25, 25, 25]),        # the default: a fixed cap
    (1.0, [1, 2, 3, 8], [25, 50, 75, 200]),  # in proportion to the CG batch
    (0.5, [1, 2, 4], [25, 36, 50]),        # ceil(25 * sqrt(2)) = 36
    (1.0, [4, 6], [10, 15]),               # relative to the first batch count, not to one batch
])
def test_cg_cap_grows_with_the_cg_batch(exponent, batches, expected):
    from hf_symbolic.train.options import TrainOptions

    first = batches[0]
    base = expected[0]
    o = TrainOptions(max_cg_iterations=base, max_cg_exponent=exponent)
    assert [o.max_cg(n, first) for n in batches] == expected


def test_a_shrinking_cg_batch_keeps_at_least_min_cg_iterations():
    from hf_symbolic.train.options import TrainOptions

    o = TrainOptions(max_cg_iterations=20, min_cg_iterations=8, max_cg_exponent=1.0)
    assert o.max_cg(1, 4) == 8  # 20 / 4 = 5 < 8
    assert o.max_cg(2, 4) == 10
