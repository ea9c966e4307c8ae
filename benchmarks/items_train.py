"""Train the 2012-style memorization client (one item per sequence) to zero validation errors.

The client is ``items.py``'s ``rnn`` client, given to ``hf_optimizer`` exactly as a
2012 user would (``SequenceDataset([X, Y], batch_size=None, ...)``, one item per
100-step sequence, float64), with the 2012 settings of the task (see
``../shared/reference/TASKS.md``): 99,000 training and 1,000 validation sequences,
gradient batches of 5,000 items, CG batches of 1,000, ``initial_lambda=0.5``,
structural damping ``mu=1`` on ``(h + 1) / 2`` split at ``ha``, no preconditioner,
validation every update. Its initialisation is the client's own (input weights
N(0, 0.1^2), recurrent weights N(0, 1/H), zero biases, output N(0, 0.1^2)), not
the example's. Training stops when the zero-one error on the validation items is 0
(solved), at ``--budget`` seconds, or after ``--updates`` updates. The first
update's seconds include compiling the item-vectorized model (the evaluator
builds it on first use).

``--evaluator items`` (the default for this client) evaluates each batch of items
in one call of the item-vectorized model; ``--evaluator serial`` is the per-item
path (one compiled call per item), for the comparison of one update.

Run by hand (never by the test suite)::

    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE      # for benchmark commands only
    python benchmarks/items_train.py --budget 3600
    python benchmarks/items_train.py --evaluator serial --updates 1   # one update on the per-item path
    python benchmarks/items_train.py --small                          # seconds: checks the script
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from hf_symbolic import SequenceDataset, hf_optimizer  # noqa: E402  (first: links BLAS)
import numpy as np  # noqa: E402
import pytensor  # noqa: E402

from _common import cpu_model  # noqa: E402  (the examples' record of the CPU)
from items import rnn_client  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=99000, help="training sequences (items)")
    ap.add_argument("--valid", type=int, default=1000, help="validation sequences (items)")
    ap.add_argument("--gradient-items", type=int, default=5000)
    ap.add_argument("--cg-items", type=int, default=1000)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=3600.0, help="seconds of training")
    ap.add_argument("--evaluator", default="items", choices=["items", "serial"])
    ap.add_argument("--small", action="store_true",
                    help="a tiny run that checks the script (T 10, 8 hidden units, few items, 2 updates)")
    args = ap.parse_args(argv)
    if args.small:
        args.T, args.hidden, args.train, args.valid = 10, 8, 400, 100
        args.gradient_items, args.cg_items, args.updates = 200, 100, 2
    logging.basicConfig(level=logging.WARNING)

    model, _, _, _ = rnn_client(seed=args.seed, n_h=args.hidden, T=args.T, n_grad=0, n_cg=0)
    p, inputs, s, costs, h, ha = model
    rng = np.random.default_rng([args.seed, 1])

    def sequences(n):
        X = rng.integers(0, 2, size=(n, args.T, 1)).astype(np.float64)
        return [list(X), [x[0].copy() for x in X]]

    train_data, valid_data = sequences(args.train), sequences(args.valid)
    gradient_ds = SequenceDataset(train_data, batch_size=None, number_batches=args.gradient_items, seed=args.seed)
    cg_ds = SequenceDataset(train_data, batch_size=None, number_batches=args.cg_items, seed=args.seed + 1)
    valid_ds = SequenceDataset(valid_data, batch_size=None, number_batches=args.valid, seed=0)
    print(f"2012-style memorization client: T={args.T}, {args.hidden} hidden units, {args.train} training / "
          f"{args.valid} validation items, gradient {args.gradient_items} / CG {args.cg_items} items, "
          f"lambda0 0.5, mu 1, no preconditioner, float64, evaluator {args.evaluator!r}, "
          f"pytensor {pytensor.__version__}, CPU {cpu_model()}", flush=True)

    opt = hf_optimizer(p, inputs, s, costs, h, ha)
    solved = {"update": None, "seconds": None}
    clock = {"train": 0.0}

    def report(stats):
        clock["train"] += stats.seconds
        v = stats.validation
        print(f"update {stats.update:3d}  cost {stats.costs[0]:.5f}  valid error "
              f"{'n/a' if v is None else f'{v[1]:.4f}'}  lambda {stats.lambda_:.3g}  rho {stats.rho:.2f}  "
              f"CG {stats.cg_iterations:3d}  {stats.seconds:6.1f} s  (training {clock['train']:7.1f} s)",
              flush=True)
        if v is not None and v[1] == 0.0:
            solved.update(update=stats.update, seconds=clock["train"])
            raise StopIteration

    t0 = time.perf_counter()
    opt.train(gradient_ds, cg_ds, initial_lambda=0.5, mu=1.0, preconditioner=False,
              num_updates=args.updates, validation=valid_ds, callback=report, time_budget=args.budget,
              evaluator=args.evaluator)
    wall = time.perf_counter() - t0
    n = len(opt.result.history)
    cg = sum(st.cg_iterations for st in opt.result.history)
    if solved["update"] is not None:
        print(f"SOLVED: 0 errors on {args.valid} validation items after {solved['update']} updates, "
              f"{solved['seconds']:.0f} s of training ({wall:.0f} s wall, compile included), {cg} CG iterations",
              flush=True)
    else:
        last = next((st.validation for st in reversed(opt.result.history) if st.validation is not None), None)
        print(f"NOT SOLVED: validation error {'n/a' if last is None else f'{last[1]:.4f}'} after {n} updates, "
              f"{clock['train']:.0f} s of training ({wall:.0f} s wall), {cg} CG iterations", flush=True)
    if n:
        print(f"per update: {clock['train'] / n:.1f} s of training, {cg / n:.0f} CG iterations", flush=True)
    return 0 if solved["update"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
