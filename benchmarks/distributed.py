"""Time per HF update: one process against a Dask cluster of single-threaded workers.

The same model, batch and settings are trained twice per round: in this process
alone (``hf_optimizer.train(...)``), and with ``client=`` a Dask client whose
workers each hold one shard of the batch (``hf_symbolic.evaluate.dask``). Every
update runs exactly ``--cg`` CG iterations (``min_cg_iterations =
max_cg_iterations``), so both do the same work; the gradient and CG batches are
the workload's whole batch (1000 cases), drawn in the same order. The first
update of each run is not timed (first calls, and in one process the
compilation). Each round times a "GEMM ceiling" (the matrix products of one
Gv product, split as the shards are, as plain numpy calls: all shards in this
process against one shard per worker at once; what the machine allows at that
moment, with no PyTensor and no Dask), then one run in this process, then one
on Dask. The reported time per update is the median over the timed updates of
all rounds; the per-round speed-ups are printed too. On the autoencoder's random
data the cost stops decreasing measurably in float32 after three updates (the
line search then tries 60 steps): the default is three updates per run, and
updates rejected or needing more than the one free line-search value are
counted and reported.

One BLAS thread everywhere: ``blas_threads=1`` in this process and on the
workers (threadpoolctl), and ``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1``
in the environment the local workers are started with.

Run by hand, never by the test suite::

    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE            # for benchmark commands only
    python benchmarks/distributed.py                     # autoencoder, float32, 2 local workers
    python benchmarks/distributed.py --small             # seconds: checks the script
    python benchmarks/distributed.py --scheduler tcp://host:8786   # an existing cluster's workers
    HF_SYMBOLIC_DASK_SHM=0 python benchmarks/distributed.py        # vectors as Dask messages only
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
# this file's name would hide the ``distributed`` package: its folder must not be on the path
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by local workers
    os.environ[_var] = "1"


def _load_workloads():
    spec = importlib.util.spec_from_file_location("_workloads", os.path.join(_HERE, "_workloads.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["_workloads"] = module
    spec.loader.exec_module(module)
    return module


W = _load_workloads()

PHASES = ("gradient", "curvature", "cg", "backtracking", "line_search")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="ae", choices=("ae", "rnn"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--workers", type=int, default=2, help="local Dask workers (one thread each)")
    ap.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler instead")
    ap.add_argument("--updates", type=int, default=3, help="updates per run (the first is not timed)")
    ap.add_argument("--cg", type=int, default=10, help="CG iterations per update")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="tiny workload: checks the script in seconds")
    args = ap.parse_args()
    if args.updates < 2 or args.cg < 1 or args.rounds < 1 or args.workers < 1:
        ap.error("need --updates >= 2, --cg >= 1, --rounds >= 1, --workers >= 1")
    return args


def start_client(args):
    from distributed import Client, LocalCluster

    if args.scheduler:
        return Client(args.scheduler), None
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), cluster


def gemm_seconds(gemms, reps, dtype, seed=0):
    """Seconds for ``reps`` passes over the listed GEMMs with one BLAS thread (runs here or on a worker)."""
    import time

    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    jobs = [(rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))
            for m, k, n, _ in gemms]
    with threadpool_limits(1):
        t0 = time.perf_counter()
        for _ in range(reps):
            for a, b in jobs:
                a @ b
        return time.perf_counter() - t0


def gemm_ceiling(client, w, args, reps=3):
    """What the machine allows now: the Gv product's GEMMs of every shard, in this process vs one shard per worker.

    Returns the ratio of the two times (``n_workers`` would be perfect scaling):
    plain numpy GEMMs, no PyTensor, no Dask messages in the timed region.
    """
    from hf_symbolic.evaluate.dask import _worker_addresses

    addresses = _worker_addresses(client)
    shard = w.dims["B"] // len(addresses)
    if w.name == "ae":
        gemms = W._ae_gemms(shard, w.dims["sizes"])["gv"]
    else:
        gemms = W._rnn_gemms(w.dims["T"], shard, w.dims["H"])["gv"]
    ratios = []
    for _ in range(reps):
        one = gemm_seconds(gemms, len(addresses), args.dtype)
        futures = [client.submit(gemm_seconds, gemms, 1, args.dtype, workers=[a], pure=False) for a in addresses]
        ratios.append(one / max(f.result() for f in futures))
    return statistics.median(ratios)


def one_run(opt, w, theta0, args, client):
    """Train ``--updates`` updates from ``theta0``; returns (per-update stats, final theta, seconds outside updates)."""
    from hf_symbolic import BatchDataset

    opt.set_flat(theta0)
    axes = list(opt.case_axes)
    n = w.data[0].shape[axes[0]]
    grad_ds = BatchDataset(list(w.data), n, case_axis=axes, seed=args.seed + 1)
    cg_ds = BatchDataset(list(w.data), n, case_axis=axes, seed=args.seed + 2)
    t0 = time.perf_counter()
    opt.train(grad_ds, cg_ds, num_updates=args.updates, min_cg_iterations=args.cg, max_cg_iterations=args.cg,
              initial_lambda=1.0, client=client, blas_threads=1)
    wall = time.perf_counter() - t0
    history = opt.result.history
    return history, opt.get_flat(), wall - sum(s.seconds for s in history)


def main():
    args = parse_args()
    W.check_environment(1)
    from hf_symbolic import hf_optimizer
    from hf_symbolic.evaluate.dask import _worker_addresses

    w = W.build(args.workload, dtype=args.dtype, small=args.small, seed=args.seed)
    opt = hf_optimizer(w.params, w.inputs, w.s, w.costs)
    theta0 = opt.get_flat()
    print(f"# workload {args.workload} {args.dtype} {w.dims}  {opt.layout.size} parameters  mode {opt.mode!r}  "
          f"{args.updates} updates x {args.cg} CG iterations, {args.rounds} rounds")
    client, cluster = start_client(args)
    n_workers = len(_worker_addresses(client))
    runs = ("1 process", "dask")
    per_update = {k: [] for k in runs}
    phases = {k: {p: [] for p in PHASES} for k in runs}
    outside = {k: [] for k in runs}
    ratios, ceilings, diffs, same_cg, irregular = [], [], [], True, 0
    try:
        shm = "off" if os.environ.get("HF_SYMBOLIC_DASK_SHM") == "0" else "on"
        print(f"# Dask: {client}  shared memory {shm}")
        print("# each round: GEMM ceiling (the Gv GEMMs of all shards in this process / one shard per worker, "
              "plain numpy), then one run in this process, then one on Dask")
        for r in range(args.rounds):
            ceilings.append(gemm_ceiling(client, w, args, reps=1))
            results = {}
            for name, c in zip(runs, (None, client)):
                history, theta, rest = one_run(opt, w, theta0, args, c)
                results[name] = (history, theta)
                timed = history[1:]
                per_update[name] += [s.seconds for s in timed]
                irregular += sum(not s.accepted or s.step != 1.0 for s in timed)
                for p in PHASES:
                    phases[name][p] += [s.timings.get(p, 0.0) for s in timed]
                outside[name].append(rest)
            (h1, t1), (h2, t2) = results["1 process"], results["dask"]
            ratios.append(statistics.median(s.seconds for s in h1[1:]) / statistics.median(s.seconds for s in h2[1:]))
            diffs.append(W.max_rel_diff(t2, t1))
            same_cg &= [s.cg_iterations for s in h1] == [s.cg_iterations for s in h2]
            print(f"round {r + 1}: GEMM ceiling {ceilings[-1]:.2f}x | "
                  + " | ".join(f"{k} " + " ".join(f"{s.seconds:.3f}" for s in results[k][0]) + " s" for k in runs)
                  + f" | speed-up {ratios[-1]:.2f}x (first update untimed)", flush=True)
        if cluster is not None:
            from threadpoolctl import threadpool_info

            pools = client.run(lambda: sorted({(d["internal_api"], d["num_threads"]) for d in threadpool_info()}))
            print(f"# worker BLAS/OpenMP pools after the runs: {pools}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    med = {k: statistics.median(v) for k, v in per_update.items()}
    print()
    print(W.markdown_table(
        ["run", "s / update (median)", *[f"{p} (s)" for p in PHASES], "setup outside updates (s)"],
        [[k, W.fmt_s(med[k]), *[W.fmt_s(statistics.median(phases[k][p])) for p in PHASES],
          W.fmt_s(statistics.median(outside[k]))] for k in runs],
    ))
    print()
    print(f"speed-up with {n_workers} single-threaded Dask workers: {med['1 process'] / med['dask']:.2f}x "
          f"({W.fmt_s(med['1 process'])} s -> {W.fmt_s(med['dask'])} s per update, {args.cg} CG iterations each); "
          f"per round: median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x")
    print(f"GEMM ceiling (plain numpy, same split, same rounds): median {statistics.median(ceilings):.2f}x, "
          f"range {min(ceilings):.2f}-{max(ceilings):.2f}x; load average now "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"final parameters, Dask vs one process: max rel. diff {max(diffs):.1e}; same CG iterations: {same_cg}")
    if irregular:
        print(f"WARNING: {irregular} timed updates were rejected or shortened by the line search: "
              "they are not the same work in both runs; use fewer --updates")


if __name__ == "__main__":
    main()
