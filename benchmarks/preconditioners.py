"""CG with each preconditioner on one CG batch of an autoencoder: cost of the statistic, CG's progress.

The CURVES architecture 784-400-200-100-50-25-6 (mirrored; 842k parameters)
on ``hf_symbolic.datasets.curves`` images, or with ``--data fashion-mnist``
784-1000-500-250-30 (mirrored; 2.8M parameters) on Fashion-MNIST (Debian's
``dataset-fashion-mnist``), float32, one thread. The model is
first trained for ``--warmup`` HF updates (example defaults, a 5000-case
gradient batch and 1000-case CG batches), so that the curvature is that of a
model in training, not of the initial weights. Then, on a fresh CG batch of
``--cases`` cases, at the damping ``λ`` the run had reached and at each of
``--lambdas``, each preconditioner's statistic is computed (timed after one
call that compiles it; the time includes building ``M`` for that ``λ``) and
CG runs ``max(--iterations)`` iterations on ``(G + λI) x = -g`` from
``x = 0`` (Martens' termination rule off). Printed per preconditioner: the
statistic's time, and at each iteration count the gap ``(φ_i - φ*) / |φ*|``
of CG's quadratic to the best value ``φ*`` any run reached; also the time of
one Gv product.

Usage::

    python benchmarks/preconditioners.py
    python benchmarks/preconditioners.py --cases 1000 --warmup 12 --iterations 10 50 100
    python benchmarks/preconditioners.py --data fashion-mnist --cases 250 --warmup 12
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))

from _common import build_mlp, cpu_model  # noqa: E402
from _workloads import check_environment, print_threadpools  # noqa: E402

NAMES = ("none", "martens", "gauss_newton_hutchinson", "gauss_newton_per_case", "kfac")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=("curves", "fashion-mnist"), default="curves", help="image set")
    ap.add_argument("--cases", type=int, default=1000, help="cases of the CG batch")
    ap.add_argument("--warmup", type=int, default=12, help="HF updates before the measurement")
    ap.add_argument("--iterations", type=int, nargs="+", default=[10, 25, 50, 100])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lambdas", type=float, nargs="*", default=[0.01],
                    help="damping values to measure besides the one the warm-up reached")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (threadpoolctl limit)")
    args = ap.parse_args(argv)
    check_environment(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)

    from hf_symbolic import BatchDataset, hf_optimizer
    from hf_symbolic.datasets import curves_data
    from hf_symbolic.solve.cg import conjugate_gradient
    from hf_symbolic.solve.preconditioners import make_preconditioner, operator

    if args.data == "curves":
        enc = [400, 200, 100, 50, 25, 6]
        images = curves_data(n_train=5000 + args.cases, n_test=1, seed=args.seed, dtype="float32").train
    else:
        from hf_symbolic.datasets import load_fashion_mnist

        enc = [1000, 500, 250, 30]
        images = load_fashion_mnist("train", dtype="float32").images
        images = images[np.random.default_rng(args.seed).permutation(len(images))[:5000 + args.cases]]
    sizes = [784, *enc, *enc[-2::-1], 784]
    acts = ["sigmoid"] * (len(enc) - 1) + ["linear"] + ["sigmoid"] * (len(enc) - 1)
    train, cg_batch = images[:5000], [images[5000:]]
    m = build_mlp(sizes, acts, np.random.default_rng(args.seed), dtype="float32", target_is_input=True)
    opt = hf_optimizer(m.params, m.inputs, m.s, m.costs)
    lam = [45.0]
    t0 = time.perf_counter()
    if args.warmup:
        opt.train(BatchDataset([train], 5000), BatchDataset([train], 1000, seed=1), num_updates=args.warmup,
                  initial_lambda=45.0, mu=0.0, max_cg_iterations=250,
                  callback=lambda st: lam.__setitem__(0, st.next_lambda))
    print(f"# {cpu_model()}; {args.warmup} warm-up updates in {time.perf_counter() - t0:.0f} s; "
          f"lambda {lam[0]:.3g}; CG batch {args.cases} cases; {opt.layout.size} parameters")

    threadpool_limits(args.threads)  # the C backend's OpenBLAS is loaded by now
    print_threadpools()
    g = opt.gradient(cg_batch)[0]
    op = opt.curvature_operator(cg_batch)
    op.matvec(g)  # compiles and caches the forward pass
    t = time.perf_counter()
    op.matvec(g)
    print(f"# one Gv product: {time.perf_counter() - t:.3f} s")
    n_it = max(args.iterations)
    pcs, stats = {}, {}
    for name in NAMES[1:]:
        pc = make_preconditioner(name)
        if getattr(pc, "needs_structure", False):
            pc = pc.with_structure(*opt.kronecker_structure())
        opt.statistic(pc.statistic, cg_batch)  # compile
        t = time.perf_counter()
        stats[name] = (opt.statistic(pc.statistic, cg_batch), time.perf_counter() - t)
        pcs[name] = pc
    for damping in [lam[0], *args.lambdas]:
        runs = {}
        for name in NAMES:
            M, stat_s = None, 0.0
            if name != "none":
                t = time.perf_counter()
                M = operator(pcs[name], stats[name][0], damping, g.dtype)
                stat_s = stats[name][1] + time.perf_counter() - t
            t = time.perf_counter()
            res = conjugate_gradient(lambda v: op.matvec(v) + np.float32(damping) * v, -g, np.zeros_like(g), M=M,
                                     maxiter=n_it, miniter=n_it)
            runs[name] = (stat_s, time.perf_counter() - t, np.asarray(res.phi, dtype=np.float64))
        best = min(np.nanmin(r[2]) for r in runs.values())
        head = "  ".join(f"{'gap@' + str(i):>10}" for i in args.iterations)
        print(f"\nlambda {damping:.3g}\n{'preconditioner':<26} {'statistic':>9} {'CG':>7}  {head}")
        for name, (stat_s, cg_s, phi) in runs.items():
            gaps = "  ".join(f"{(phi[min(i, len(phi) - 1)] - best) / abs(best):>10.2e}" for i in args.iterations)
            print(f"{name:<26} {stat_s:>8.2f}s {cg_s:>6.1f}s  {gaps}")


if __name__ == "__main__":
    main()
