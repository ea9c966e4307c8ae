"""Resuming HF training from a checkpoint in a fresh process gives bit-identical results.

A run of ``N`` updates straight is compared with a run stopped after ``K``
updates whose checkpoint is resumed by ``resume_worker.py`` in a new Python
process for the remaining ``N - K`` updates.  The model is a small tanh RNN with
structural damping, gradient and CG batches of different sizes drawn from
shuffled datasets, and a validation set; everything is float64, so the final
parameters, the full checkpoint (CG warm start, lambda, dataset positions and
generator states) and the history must agree exactly.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytensor
import pytest

import resume_worker as worker
from hf_symbolic.train.checkpoint import load_checkpoint

N_UPDATES, K_UPDATES = 6, 2
WORKER = Path(worker.__file__).resolve()
REPO = WORKER.parent.parent


@pytest.fixture(scope="module")
def rnn_opt():
    return worker.build_optimizer()


@pytest.fixture
def keep_global_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def _resume_in_fresh_process(checkpoint, out, *, preconditioner=False, global_seed=None, growth=1.0, cg_cap=None):
    cmd = [sys.executable, str(WORKER), "--num-updates", str(N_UPDATES), "--checkpoint", str(checkpoint),
           "--out", str(out)]
    if preconditioner:
        cmd += ["--preconditioner"] + ([] if preconditioner is True else [preconditioner])
    if global_seed is not None:
        cmd += ["--global-seed", str(global_seed)]
    if growth != 1.0:
        cmd += ["--growth", repr(growth)]
    if cg_cap is not None:
        cmd += ["--max-cg", str(cg_cap[0]), "--max-cg-exponent", repr(cg_cap[1])]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # The child must compile like this process: whether PyTensor links a BLAS changes which
    # implementation some ops get, hence the last bits (and hf_symbolic links OpenBLAS only when it is
    # imported before PyTensor).  A resumed run is bit-identical under the same configuration.
    flags = env.get("PYTENSOR_FLAGS", "")
    if "blas__ldflags" not in flags:
        env["PYTENSOR_FLAGS"] = ",".join(f for f in (flags, f"blas__ldflags={pytensor.config.blas__ldflags}") if f)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def _assert_same_checkpoint(path_a, path_b):
    """Every array and every metadata entry equal, apart from the wall-clock fields of the history."""
    arrays_a, meta_a = load_checkpoint(path_a)
    arrays_b, meta_b = load_checkpoint(path_b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for name in arrays_a:
        assert arrays_a[name].dtype == arrays_b[name].dtype, name
        assert np.array_equal(arrays_a[name], arrays_b[name]), name
    hist_a, hist_b = meta_a.pop("history"), meta_b.pop("history")
    for h in hist_a + hist_b:
        h.pop("seconds")
        h.pop("timings")
    assert json.dumps(hist_a, sort_keys=True) == json.dumps(hist_b, sort_keys=True)
    assert meta_a == meta_b


def _check_resume(tmp_path, opt, theta0, *, preconditioner=False, global_seed=None, growth=1.0, cg_cap=None):
    """``cg_cap``: ``(max_cg_iterations, max_cg_exponent)`` instead of the worker's fixed cap."""
    cap = {} if cg_cap is None else dict(max_cg=cg_cap[0], max_cg_exponent=cg_cap[1])
    straight_ckpt, split_ckpt = tmp_path / "straight.ckpt", tmp_path / "split.ckpt"
    straight = worker.run(opt, theta0, N_UPDATES, straight_ckpt, preconditioner=preconditioner,
                          global_seed=global_seed, growth=growth, **cap)
    assert straight.updates == N_UPDATES and straight.status == "num_updates"
    # the run must actually move: otherwise equality proves nothing
    assert sum(s.accepted for s in straight.history) >= N_UPDATES // 2
    assert not np.array_equal(straight.x, theta0)

    first = worker.run(opt, theta0, K_UPDATES, split_ckpt, preconditioner=preconditioner, global_seed=global_seed,
                       growth=growth, **cap)
    assert first.updates == K_UPDATES
    _, meta = load_checkpoint(split_ckpt)
    assert meta["update"] == K_UPDATES
    # scramble this process's parameters: the fresh process must not see them anyway
    opt.set_flat(theta0 + 1.0)

    resumed = _resume_in_fresh_process(split_ckpt, tmp_path / "out.json", preconditioner=preconditioner,
                                       global_seed=global_seed, growth=growth, cg_cap=cg_cap)
    assert resumed["status"] == "num_updates" and resumed["updates"] == N_UPDATES
    x = worker.from_exact_floats(resumed["x"])
    assert x.dtype == np.float64
    assert np.array_equal(x, straight.x)
    assert resumed["best_update"] == straight.best_update
    assert worker.from_exact_floats(resumed["best_validation"]).tolist() == list(straight.best_validation)
    assert worker.from_exact_floats(resumed["lambda"])[0] == straight.lambda_
    assert resumed["history"] == worker.history_records(straight.history)
    _assert_same_checkpoint(straight_ckpt, split_ckpt)
    return straight


def test_resume_in_fresh_process_default_settings(tmp_path, rnn_opt):
    opt, theta0 = rnn_opt
    straight = _check_resume(tmp_path, opt, theta0)
    # CG warm starts and a changing lambda are part of what has to be carried over
    assert len({s.lambda_ for s in straight.history}) > 1


@pytest.mark.parametrize("preconditioner", [True, "gauss_newton_per_case"])
def test_resume_in_fresh_process_with_preconditioner(tmp_path, rnn_opt, preconditioner):
    """Martens' diagonal, and an estimate whose random draw a resumed run must repeat."""
    opt, theta0 = rnn_opt
    straight = _check_resume(tmp_path, opt, theta0, preconditioner=preconditioner)
    plain = worker.run(opt, theta0, 2, None)
    # the preconditioner changes the run (so the option really reached CG)
    assert [(s.cg_iterations, s.costs) for s in straight.history[:2]] != \
        [(s.cg_iterations, s.costs) for s in plain.history]


def test_resume_with_global_numpy_rng(tmp_path, rnn_opt, keep_global_rng):
    opt, theta0 = rnn_opt
    straight = _check_resume(tmp_path, opt, theta0, global_seed=1234)
    # the datasets really follow the global generator: the same seed repeats the run, another changes it
    again = worker.run(opt, theta0, N_UPDATES, None, global_seed=1234)
    other = worker.run(opt, theta0, N_UPDATES, None, global_seed=4321)
    assert np.array_equal(again.x, straight.x)
    assert not np.array_equal(other.x, straight.x)


def test_resume_in_fresh_process_with_growing_batches(tmp_path, rnn_opt):
    opt, theta0 = rnn_opt
    # CG batch of 5 cases growing x1.6 per update (1, 1, 2, 4, 4, 4 minibatches; the checkpoint after update 2
    # holds the growth mid-way), gradient batch of 12 growing to both of its 2 minibatches
    straight = _check_resume(tmp_path, opt, theta0, growth=1.6)
    _, meta = load_checkpoint(tmp_path / "split.ckpt")
    assert json.dumps(meta).count('"growth": 1.6') == 2
    fixed = worker.run(opt, theta0, N_UPDATES, None)
    assert [s.costs for s in straight.history[2:]] != [s.costs for s in fixed.history[2:]]  # the growth took effect


def test_resume_in_fresh_process_with_a_cg_cap_growing_with_the_batch(tmp_path, rnn_opt):
    opt, theta0 = rnn_opt
    # CG batches of 1, 1, 2, 4, 4, 4 minibatches (as above) and a cap of 3 iterations per minibatch of the
    # first update: 3, 3, 6, 12, 12, 12. The checkpoint after update 2 must carry the first batch count.
    straight = _check_resume(tmp_path, opt, theta0, growth=1.6, cg_cap=(3, 1.0))
    _, meta = load_checkpoint(tmp_path / "split.ckpt")
    assert meta["first_cg_batches"] == 1 and meta["options"]["max_cg_exponent"] == 1.0
    iterations = [s.cg_iterations for s in straight.history]
    caps = [3, 3, 6, 12, 12, 12]
    assert all(i <= c for i, c in zip(iterations, caps)), iterations
    assert max(iterations[2:]) > 3, iterations  # the grown cap was used
    fixed = worker.run(opt, theta0, N_UPDATES, None, growth=1.6, max_cg=3)
    assert max(s.cg_iterations for s in fixed.history) == 3
