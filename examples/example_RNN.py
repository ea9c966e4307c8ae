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

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import announce_compile_cache, backend_summary, compile_now, say  # noqa: E402


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


def plot_history(history_path, png_path, solved_update=None):
    """Learning curves of the history file: cost, validation error and lambda against updates and seconds.

    The x axes are the update number (top row) and the training seconds (bottom
    row, compile excluded); the update that solved the task is marked. Returns
    None when the PNG was written, else the reason it was not.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: pip install -e '.[examples]'"
    rows = [json.loads(line) for line in open(history_path)]
    if not rows:
        return "the history is empty"
    u = np.array([r["update"] for r in rows])
    t = np.cumsum([r["seconds"] for r in rows])
    curves = [
        ("training cross-entropy", [r["costs"][0] for r in rows], True),
        ("validation error (fraction wrong)", [r["validation"][1] if r.get("validation") else np.nan for r in rows],
         False),
        ("damping lambda", [r["lambda_"] for r in rows], True),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex="row")
    for row, (x, xlabel) in enumerate(((u, "update"), (t, "training seconds (compile excluded)"))):
        for col, (title, y, log) in enumerate(curves):
            ax = axes[row, col]
            (ax.semilogy if log else ax.plot)(x, y, marker="o", markersize=3)
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if solved_update is not None and solved_update in u:
                i = int(np.flatnonzero(u == solved_update)[0])
                ax.axvline(x[i], color="tab:green", linestyle="--", linewidth=1)
                ax.plot([x[i]], [y[i]], marker="*", markersize=12, color="tab:green",
                        label=f"solved at update {solved_update} ({t[i]:.0f} s of training)")
                if col == 1:
                    ax.legend(loc="best", fontsize=8)
    axes[0, 0].xaxis.get_major_locator().set_params(integer=True)  # shared by the top row
    fig.suptitle(os.path.basename(os.path.splitext(history_path)[0]))
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
    return None


def main(argv=None):
    args = parse_args(argv)
    dtype = "float64" if args.float64 else "float32"
    method = "SGD" if args.sgd else "HF"
    base = args.checkpoint or f"memorization_T{args.T}_seed{args.seed}"
    history = args.history or os.path.splitext(base)[0] + ".jsonl"
    png = args.plot or os.path.splitext(history)[0] + ".png"
    say(f"example_RNN: {method} trains a {args.hidden}-unit tanh RNN to remember the first bit of T={args.T} random "
        f"bits ({args.train} training, {args.valid} validation sequences, {dtype}, seed {args.seed}); "
        f"{backend_summary(args.mode)}; {args.workers} process(es)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from hf_symbolic import BatchDataset, hf_optimizer
    from hf_symbolic.datasets import memorization
    from hf_symbolic.sgd import sgd_optimizer

    stamp = announce_compile_cache("example_RNN", dtype, args.mode)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = memorization(T=args.T, n=args.train, seed=rng, dtype=dtype)
    x_valid, y_valid = memorization(T=args.T, n=args.valid, seed=rng, dtype=dtype)
    p, inputs, s, costs, h, ha, _ = build_model(args.hidden, dtype, rng, args.radius, args.input_scale)

    axes = [1, 0]  # cases: axis 1 of x (time, cases, 1), axis 0 of y
    gradient_ds = BatchDataset([x_train, y_train], args.gradient_batch, case_axis=axes, seed=args.seed + 1)
    cg_ds = BatchDataset([x_train, y_train], args.cg_batch, case_axis=axes, seed=args.seed + 2)
    valid_ds = BatchDataset([x_valid, y_valid], args.valid, case_axis=axes, shuffle=False)
    say(f"history: {history}  learning curves: {png} (written at the end)")

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
    else:
        opt = hf_optimizer(p, inputs, s, costs, h=h, ha=ha, mode=args.mode)
    compile_seconds = compile_now(opt, stamp, processes=min(2, args.workers),
                                  names=["gradient", "cost"] if args.sgd else None)
    if args.sgd:
        opt.train(gradient_ds, learning_rate=args.sgd_lr, num_updates=args.updates, validation=valid_ds,
                  callback=report, save_progress=args.checkpoint, history_file=history, time_budget=args.budget)
    else:
        opt.train(gradient_ds, cg_ds, initial_lambda=args.lambda0, mu=args.mu, max_cg_iterations=args.max_cg,
                  num_updates=args.updates, validation=valid_ds, save_progress=args.checkpoint, callback=report,
                  history_file=history, time_budget=args.budget, workers=args.workers)
    elapsed = time.perf_counter() - t_start
    result = opt.result
    last_valid = next((st.validation for st in reversed(result.history) if st.validation is not None), None)
    if solved["update"] is None and last_valid is not None and last_valid[1] == 0.0:
        solved["update"] = result.history[-1].update  # resumed from a run that had already solved it
    not_plotted = plot_history(history, png, solved["update"])
    if solved["update"] is not None:
        print(f"SOLVED: T={args.T} seed={args.seed} ({method}) 0 errors on {args.valid} validation sequences "
              f"after {solved['update']} updates and {elapsed:.1f} s (this process; compile {compile_seconds:.1f} s)")
    else:
        err = "n/a" if last_valid is None else f"{last_valid[1]:.4f}"
        print(f"NOT SOLVED: T={args.T} seed={args.seed} ({method}) validation error {err} after "
              f"{result.updates} updates and {elapsed:.1f} s ({result.message})")
    print(f"history: {history}  " + (f"plot: {png}" if not_plotted is None else f"no plot: {not_plotted}"))
    return 0 if solved["update"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
