"""Train a tanh RNN to remember the first bit of a long binary sequence (the 2012 example_RNN).

Each sequence has ``T`` random bits; the target, read by a sigmoid unit at the
last step only, is the FIRST bit. Everything after step 1 is noise the network
must ignore, so the gradient signal has to travel back ``T`` steps: plain SGD
essentially never solves T=100 (Martens & Sutskever 2011). The task counts as
solved when the zero-one error on the validation sequences is exactly 0.

Usage::

    python examples/example_RNN.py                    # T=100, stops when solved
    python examples/example_RNN.py --T 50 --seed 3
    python examples/example_RNN.py --checkpoint run.ckpt   # resumable (kill it, run again)
    python examples/example_RNN.py --sgd              # the SGD baseline, same model

Exit status: 0 when solved, 1 when the update or time budget ran out first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--T", type=int, default=100, help="sequence length")
    ap.add_argument("--hidden", type=int, default=100, help="hidden units")
    ap.add_argument("--train", type=int, default=20000, help="training sequences")
    ap.add_argument("--valid", type=int, default=1000, help="validation sequences")
    ap.add_argument("--gradient-batch", type=int, default=5000, help="sequences per gradient batch")
    ap.add_argument("--cg-batch", type=int, default=1000, help="sequences per curvature (CG) batch")
    ap.add_argument("--lambda0", type=float, default=0.5, help="initial Tikhonov damping")
    ap.add_argument("--mu", type=float, default=1 / 30, help="structural damping coefficient (weight lambda*mu)")
    ap.add_argument("--radius", type=float, default=1.1, help="spectral radius of the initial recurrent weights")
    ap.add_argument("--input-scale", type=float, default=0.1, help="standard deviation of the initial input weights")
    ap.add_argument("--max-cg", type=int, default=300, help="maximum CG iterations per update")
    ap.add_argument("--updates", type=int, default=100, help="maximum number of updates")
    ap.add_argument("--budget", type=float, default=1800.0, help="time budget in seconds")
    ap.add_argument("--seed", type=int, default=1, help="seed of the data and the initial weights")
    ap.add_argument("--checkpoint", default=None, help="checkpoint file: resume from it if it exists")
    ap.add_argument("--history", default=None, help="JSON-lines history file (default: next to the checkpoint, or memorization_T<T>_seed<seed>.jsonl)")
    ap.add_argument("--plot", default=None, help="PNG of the learning curves (needs matplotlib; default: history name with .png)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1,
                    help="processes sharing each batch (default: the cores available to this process)")
    ap.add_argument("--mode", default=None, help="PyTensor mode (default: hf_symbolic's default)")
    ap.add_argument("--float64", action="store_true", help="compute in float64 instead of float32")
    ap.add_argument("--sgd", action="store_true", help="train with the SGD baseline instead of HF")
    ap.add_argument("--sgd-lr", type=float, default=0.01, help="SGD learning rate")
    ap.add_argument("--quiet", action="store_true", help="no per-update lines")
    return ap.parse_args(argv)


def build_model(n_hidden, dtype, rng, radius=1.1, input_scale=0.1):
    """The 2012 model: tanh RNN, 1 input, 1 sigmoid output read at the last step."""
    import pytensor
    import pytensor.tensor as pt

    # Sparse initialization (Martens & Sutskever 2011): each hidden unit gets 15
    # nonzero recurrent weights, rescaled to the spectral radius `radius`. Small
    # input weights keep the units out of saturation, so that the first bit still
    # moves the last hidden state at initialization (with input weights of
    # scale 1 its influence after 100 steps is ~1e-10).
    w_hh = np.zeros((n_hidden, n_hidden))
    for j in range(n_hidden):
        idx = rng.choice(n_hidden, size=min(15, n_hidden), replace=False)
        w_hh[idx, j] = rng.normal(size=idx.size)
    w_hh *= radius / np.max(np.abs(np.linalg.eigvals(w_hh)))
    params = dict(
        W_xh=rng.normal(scale=input_scale, size=(1, n_hidden)),
        W_hh=w_hh,
        b_h=np.zeros(n_hidden),
        W_hy=rng.normal(scale=0.1, size=(n_hidden, 1)),
        b_y=np.zeros(1),
    )
    p = {k: pytensor.shared(v.astype(dtype), name=k) for k, v in params.items()}
    x = pt.tensor3("x", dtype=dtype)  # (time, sequences, 1)
    y = pt.matrix("y", dtype=dtype)  # (sequences, 1)

    def step(x_t, a_prev):
        return pt.dot(x_t, p["W_xh"]) + pt.dot(pt.tanh(a_prev), p["W_hh"]) + p["b_h"]

    a0 = pt.zeros((x.shape[1], n_hidden), dtype=dtype)
    ha = pytensor.scan(step, sequences=x, outputs_info=[a0], return_updates=False)
    h = pt.tanh(ha)
    s = pt.dot(h[-1], p["W_hy"]) + p["b_y"]
    prob = pt.sigmoid(s)
    cost = pt.mean(pt.sum(pt.softplus(-s) * y + pt.softplus(s) * (1 - y), axis=1))  # cross-entropy
    error = pt.mean(pt.neq(pt.gt(s, 0), pt.gt(y, 0.5)))
    return list(p.values()), [x, y], s, [cost, error], (h + 1) / 2, ha, prob


def plot_history(history_path, png_path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [json.loads(line) for line in open(history_path)]
    if not rows:
        return False
    u = [r["update"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].semilogy(u, [r["costs"][0] for r in rows], label="train cost")
    axes[0].set_title("cross-entropy")
    axes[1].plot(u, [r["validation"][1] if r.get("validation") else np.nan for r in rows])
    axes[1].set_title("validation error")
    axes[2].semilogy(u, [r["lambda_"] for r in rows])
    axes[2].set_title("lambda")
    for ax in axes:
        ax.set_xlabel("update")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
    return True


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from hf_symbolic import BatchDataset, hf_optimizer
    from hf_symbolic.datasets import memorization
    from hf_symbolic.sgd import sgd_optimizer

    dtype = "float64" if args.float64 else "float32"
    rng = np.random.default_rng(args.seed)
    x_train, y_train = memorization(T=args.T, n=args.train, seed=rng, dtype=dtype)
    x_valid, y_valid = memorization(T=args.T, n=args.valid, seed=rng, dtype=dtype)
    p, inputs, s, costs, h, ha, _ = build_model(args.hidden, dtype, rng, args.radius, args.input_scale)

    base = args.checkpoint or f"memorization_T{args.T}_seed{args.seed}"
    history = args.history or os.path.splitext(base)[0] + ".jsonl"
    png = args.plot or os.path.splitext(history)[0] + ".png"
    axes = [1, 0]  # cases: axis 1 of x (time, cases, 1), axis 0 of y
    gradient_ds = BatchDataset([x_train, y_train], args.gradient_batch, case_axis=axes, seed=args.seed + 1)
    cg_ds = BatchDataset([x_train, y_train], args.cg_batch, case_axis=axes, seed=args.seed + 2)
    valid_ds = BatchDataset([x_valid, y_valid], args.valid, case_axis=axes, shuffle=False)

    t_start = time.perf_counter()
    solved = {"update": None}

    def report(stats):
        v = stats.validation
        if not args.quiet:
            print(
                f"update {stats.update:3d}  cost {stats.costs[0]:.5f} -> {stats.new_cost:.5f}  "
                f"valid error {v[1]:.4f}  lambda {stats.lambda_:.3g}  rho {stats.rho:.2f}  "
                f"CG {stats.cg_iterations:3d} ({stats.cg_status})  step {stats.step:.2f}  "
                f"{stats.seconds:5.1f} s  total {time.perf_counter() - t_start:6.1f} s",
                flush=True,
            )
        if v is not None and v[1] == 0.0:
            solved["update"] = stats.update
            raise StopIteration

    if args.sgd:
        opt = sgd_optimizer(p, inputs, s, costs, mode=args.mode)
        opt.train(gradient_ds, learning_rate=args.sgd_lr, num_updates=args.updates, validation=valid_ds,
                  callback=report, save_progress=args.checkpoint, history_file=history, time_budget=args.budget)
    else:
        opt = hf_optimizer(p, inputs, s, costs, h=h, ha=ha, mode=args.mode)
        opt.train(gradient_ds, cg_ds, initial_lambda=args.lambda0, mu=args.mu, max_cg_iterations=args.max_cg,
                  num_updates=args.updates, validation=valid_ds, save_progress=args.checkpoint, callback=report,
                  history_file=history, time_budget=args.budget, workers=args.workers)
    elapsed = time.perf_counter() - t_start
    result = opt.result
    last_valid = next((st.validation for st in reversed(result.history) if st.validation is not None), None)
    if solved["update"] is None and last_valid is not None and last_valid[1] == 0.0:
        solved["update"] = result.history[-1].update  # resumed from a run that had already solved it
    plotted = plot_history(history, png)
    method = "SGD" if args.sgd else "HF"
    if solved["update"] is not None:
        print(f"SOLVED: T={args.T} seed={args.seed} ({method}) 0 errors on {args.valid} validation sequences "
              f"after {solved['update']} updates and {elapsed:.1f} s (this process; compile {opt.compile_seconds:.1f} s)")
    else:
        err = "n/a" if last_valid is None else f"{last_valid[1]:.4f}"
        print(f"NOT SOLVED: T={args.T} seed={args.seed} ({method}) validation error {err} after "
              f"{result.updates} updates and {elapsed:.1f} s ({result.message})")
    print(f"history: {history}" + (f"  plot: {png}" if plotted else ""))
    return 0 if solved["update"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
