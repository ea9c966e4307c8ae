"""Training on a Dask cluster (``train(..., client=...)``) gives the single-process results.

A 2-worker ``LocalCluster`` (processes, one thread each) evaluates the shards;
the reference is the same optimizer evaluating whole batches in this process.
Everything is float64, so products agree to rounding error (1e-12 relative)
and three updates of training to 1e-10. Training runs compared with each other
switch Martens' backtracking off: when CG has converged, two kept iterates can
have costs equal to rounding error, and which one it picks then depends on the
rounding. Worker loss is simulated by killing a worker process in the middle
of an update.
"""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from hf_symbolic import BatchDataset, hf_optimizer  # noqa: E402
from hf_symbolic.train.checkpoint import load_checkpoint  # noqa: E402
from hf_symbolic.evaluate.dask import DaskEvaluator, WorkerLostError  # noqa: E402
from hf_symbolic.errors import ArgumentError  # noqa: E402
from hf_symbolic.evaluate import SerialEvaluator  # noqa: E402
from models import DatasetWrapper, max_rel_err, mlp, rnn  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
N_WORKERS = 2
MODE = "FAST_COMPILE"  # quick to compile on each worker; the backend is not the point here


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def rnn_model():
    """The structural-damping tanh RNN (scan) and its optimizer; 12 sequences.

    Plain products (``cache_forward=False``): compiling the cached product of
    the scan takes three times as long on every worker; the MLP below covers it.
    The scan runs in MODE too (otherwise its inner graphs are compiled in C).
    """
    m = rnn(structural=True, n=12, T=5, seed=3, scan_mode=MODE)
    opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha, mode=MODE, cache_forward=False)
    return m, opt, opt.get_flat()


@pytest.fixture(scope="module")
def mlp_model():
    """A sigmoid MLP with the cached forward pass (the default); 12 cases."""
    m = mlp("sigmoid", sizes=(3, 5, 2), n=12, seed=6)
    opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, mode=MODE)
    return m, opt, opt.get_flat()


def _two_batches(m, case_axes):
    """The model's batch and a second, smaller one: unequal batches and unequal shards."""
    first = [X[(slice(None),) * ax + (slice(0, 5),)] for X, ax in zip(m.batch, case_axes)]
    return [list(m.batch), first]


@pytest.mark.parametrize("model,shared_memory", [
    ("rnn_model", True), ("rnn_model", False), ("mlp_model", True),
], ids=["rnn-shared-memory", "rnn-messages", "mlp-cached-forward"])
def test_gradient_and_products_match_single_process(client, request, model, shared_memory):
    m, opt, theta = request.getfixturevalue(model)
    structural = 0.4 if opt.has_structural_damping else 0.0
    serial = SerialEvaluator(opt)
    dask_ev = DaskEvaluator(opt, client, shared_memory=shared_memory)
    try:
        assert dask_ev.workers == N_WORKERS
        assert [i["shared_memory"] for i in dask_ev.worker_info] == [shared_memory] * N_WORKERS
        assert len({i["pid"] for i in dask_ev.worker_info} | {os.getpid()}) == N_WORKERS + 1
        batches = _two_batches(m, opt.case_axes)
        for ev in (serial, dask_ev):
            ev.set_theta(theta)
            ev.load("grad", batches)
            ev.load("cg", batches[:1])
            ev.begin_cg("cg", structural)
        g1, c1 = serial.gradient("grad")
        g2, c2 = dask_ev.gradient("grad")
        assert max_rel_err(g2, g1) <= 1e-12
        np.testing.assert_allclose(c2, c1, rtol=1e-12)
        rng = np.random.default_rng(0)
        for _ in range(2):  # one forward pass (cached or not) serves every product of the CG run
            v = rng.normal(size=theta.size)
            assert max_rel_err(dask_ev.matvec(v), serial.matvec(v)) <= 1e-12
        assert max_rel_err(dask_ev.plain_product("grad", v), serial.plain_product("grad", v)) <= 1e-12
        assert max_rel_err(dask_ev.per_case_squared_gradient("cg"), serial.per_case_squared_gradient("cg")) <= 1e-12
        # a new evaluation point reaches the workers, and the old one comes back
        for ev in (serial, dask_ev):
            ev.set_theta(theta + 0.05 * v)
        moved = dask_ev.cost("grad")
        np.testing.assert_allclose(moved, serial.cost("grad"), rtol=1e-12)
        assert abs(moved[0] - c1[0]) > 1e-6
        dask_ev.set_theta(theta)
        np.testing.assert_allclose(dask_ev.cost("grad"), c1, rtol=1e-12)
        if opt.cache_forward:
            assert all("gauss_newton_cached" in i["functions"] for i in dask_ev.info())
    finally:
        dask_ev.close()
        opt.set_flat(theta)


def _datasets(m):
    X, Y = m.batch
    return (BatchDataset([X, Y], 12, case_axis=[1, 0], seed=0),
            BatchDataset([X, Y], 7, case_axis=[1, 0], seed=1))


def test_train_matches_single_process_and_resumes_without_dask(client, rnn_model, tmp_path):
    """Three updates on Dask equal three in one process; a Dask checkpoint resumes without Dask.

    Martens' backtracking is off: when two kept CG iterates have costs equal to
    rounding error (CG has converged), it picks either, and the runs then differ
    by the distance between those iterates, not by rounding. Every evaluator call
    is still made (the cost of the step, the line search, the reduction ratio).
    """
    m, opt, theta0 = rnn_model
    kw = dict(num_updates=3, backtracking=False)
    runs = {}
    for name, extra in (("serial", {}), ("dask", dict(client=client))):
        opt.set_flat(theta0)
        opt.train(*_datasets(m), save_progress=tmp_path / f"{name}.ckpt", **kw, **extra)
        runs[name] = (opt.get_flat(), [(s.cg_iterations, s.accepted) for s in opt.result.history])
    (a, hist_a), (b, hist_b) = runs["serial"], runs["dask"]
    assert hist_a == hist_b and all(n > 0 and ok for n, ok in hist_a)
    assert max_rel_err(b, a) <= 1e-10
    assert max_rel_err(a, theta0) > 1e-3  # training moved the parameters

    # two updates on Dask, the third from its checkpoint in this process alone
    path = tmp_path / "handover.ckpt"
    opt.set_flat(theta0)
    opt.train(*_datasets(m), save_progress=path, client=client, **dict(kw, num_updates=2))
    opt.set_flat(theta0)  # the checkpoint, not this process's state, must carry the run on
    opt.train(*_datasets(m), save_progress=path, **kw)
    assert opt.result.updates == 3
    assert [(s.cg_iterations, s.accepted) for s in opt.result.history] == hist_a
    assert max_rel_err(opt.get_flat(), a) <= 1e-10
    opt.set_flat(theta0)


def _count_compilations():
    """Installed on each worker: count pytensor.function calls from now on."""
    import pytensor

    import hf_symbolic.evaluate.dask as d

    real = getattr(pytensor.function, "__wrapped_real__", pytensor.function)

    def counting(*args, **kwargs):
        d._test_compilations = getattr(d, "_test_compilations", 0) + 1
        return real(*args, **kwargs)

    counting.__wrapped_real__ = real
    pytensor.function = counting
    d._test_compilations = 0


def _compilations():
    import hf_symbolic.evaluate.dask as d

    return getattr(d, "_test_compilations", 0)


def test_workers_compile_once_and_keep_the_model_between_runs(client):
    m = mlp("sigmoid", sizes=(3, 5, 2), n=10, seed=4)
    opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, mode=MODE)
    X, Y = m.batch
    client.run(_count_compilations)
    seen = []
    opt.train(BatchDataset([X, Y], 10, seed=0), BatchDataset([X, Y], 6, seed=1), num_updates=3, client=client,
              callback=lambda s: seen.append(client.run(_compilations)))
    first = seen[0]
    assert all(n >= 3 for n in first.values()), first  # gradient, cost, products: compiled on the workers
    assert seen == [first] * 3, seen  # nothing after the first update
    opt.train(BatchDataset([X, Y], 10, seed=0), BatchDataset([X, Y], 6, seed=1), num_updates=5, client=client)
    assert client.run(_compilations) == first  # a second run reuses the compiled model


class _KillWorkerOnIterate(DatasetWrapper):
    """A dataset wrapper that kills one worker process at its ``at``-th ``iterate`` call."""

    def __init__(self, inner, pid, at):
        super().__init__(inner)
        self.pid, self.at, self.calls = pid, at, 0

    def iterate(self, update=True):
        self.calls += 1
        if self.calls == self.at:
            os.kill(self.pid, signal.SIGKILL)
        return self.inner.iterate(update)


def test_worker_lost_mid_update_raises_and_keeps_the_checkpoint(client, tmp_path):
    m = mlp("sigmoid", sizes=(3, 5, 2), n=10, seed=5)
    opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, mode=MODE)
    theta0 = opt.get_flat()
    X, Y = m.batch

    def datasets():
        return BatchDataset([X, Y], 10, seed=0), BatchDataset([X, Y], 6, seed=1)

    opt.train(*datasets(), num_updates=3, backtracking=False)
    reference = opt.get_flat()

    opt.set_flat(theta0)
    path = tmp_path / "run.ckpt"
    victim_address, victim_pid = sorted(client.run(os.getpid).items())[1]
    grad_ds, cg_ds = datasets()
    after_first = []
    # the CG batch of update 2 is drawn after its gradient was computed on the workers
    with pytest.raises(WorkerLostError, match=victim_address):
        opt.train(grad_ds, _KillWorkerOnIterate(cg_ds, victim_pid, at=2), num_updates=3, save_progress=path,
                  client=client, backtracking=False, callback=lambda s: after_first.append(opt.get_flat()))
    assert len(after_first) == 1
    arrays, meta = load_checkpoint(path)
    assert meta["update"] == 1
    np.testing.assert_array_equal(arrays["theta"], after_first[0])

    # the nanny restarts the worker; the run resumes on the cluster from the checkpoint
    client.wait_for_workers(N_WORKERS, timeout=120)
    opt.set_flat(theta0)
    opt.train(*datasets(), num_updates=3, save_progress=path, client=client, backtracking=False)
    assert opt.result.updates == 3
    assert max_rel_err(opt.get_flat(), reference) <= 1e-10


def test_jax_model_with_static_shapes_trains_on_workers(client):
    """JAX compiles for static shapes: each worker compiles the graph again for its shard size."""
    pytest.importorskip("jax")
    train_tests = str(REPO / "tests" / "train")  # importable when this file runs alone too
    if train_tests not in sys.path:
        sys.path.insert(0, train_tests)
    from test_jax_train import build_lr
    from problems import full_batch, lr_data

    X, Y = lr_data()
    results = []
    for kw in ({}, dict(client=client)):
        opt = build_lr("gauss-newton")
        opt.train(full_batch(X, Y), full_batch(X, Y, seed=1), num_updates=4, backtracking=False, **kw)
        results.append(opt.get_flat())
    assert max_rel_err(results[1], results[0]) <= 1e-10
    assert np.abs(results[0]).max() > 0.5


def test_arguments_are_checked(client, rnn_model):
    m, opt, _ = rnn_model
    grad_ds, cg_ds = _datasets(m)
    with pytest.raises(ArgumentError, match="workers=2 and client"):
        opt.train(grad_ds, cg_ds, num_updates=1, workers=2, client=client)
    with pytest.raises(ArgumentError, match="dask.distributed.Client, got str"):
        opt.train(grad_ds, cg_ds, num_updates=1, client="tcp://127.0.0.1:8786")


def test_liveness_is_asked_of_the_scheduler_not_the_cached_identity(client, monkeypatch):
    # The client refreshes its cached identity every few seconds with a copy listing no
    # workers; a liveness poll that read that cache took live workers for lost ones.
    from hf_symbolic.evaluate.dask import _worker_addresses

    expected = sorted(client.sync(client.scheduler.identity, n_workers=-1)["workers"])
    assert len(expected) == N_WORKERS
    empty = dict(client.scheduler_info(n_workers=-1), workers={})
    monkeypatch.setattr(client, "scheduler_info", lambda *a, **k: empty)
    assert _worker_addresses(client) == expected


def test_without_a_client_dask_is_not_imported():
    code = textwrap.dedent("""
        import sys
        import numpy as np, pytensor, pytensor.tensor as pt
        from hf_symbolic import BatchDataset, hf_optimizer
        W = pytensor.shared(np.zeros((3, 1)), name="W")
        x, y = pt.matrix("x"), pt.matrix("y")
        s = pt.dot(x, W)
        opt = hf_optimizer([W], [x, y], s, [pt.mean((s - y) ** 2)], mode="FAST_COMPILE")
        data = BatchDataset([np.eye(3), np.ones((3, 1))], 3, seed=0)
        opt.train(data, data, num_updates=2)
        assert opt.result.updates == 2
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
        print("loaded:", loaded)
        assert not loaded, loaded
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loaded: []" in out.stdout
