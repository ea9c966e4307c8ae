"""Train a 2-50-40-30-1 sigmoid network on XOR (the 2012 example_NN).

The four XOR cases (00->0, 01->1, 10->1, 11->0) are both the training and
the validation set; the output unit is a sigmoid trained with cross-entropy.
The task counts as solved when all four cases are classified right (output
above 0.5 exactly for targets 1).

Usage::

    python examples/example_NN.py                 # HF, stops when solved
    python examples/example_NN.py --seed 3 --sgd  # the SGD baseline

Exit status: 0 when solved, 1 when the update or time budget ran out first.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (Clock, announce_compile_cache, backend_summary, build_mlp, compile_now, cores,  # noqa: E402
                     say, update_line)

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = np.array([[0], [1], [1], [0]], dtype=np.float64)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[50, 40, 30], help="hidden layer widths")
    ap.add_argument("--lambda0", type=float, default=1.0, help="initial Tikhonov damping")
    ap.add_argument("--max-cg", type=int, default=100, help="maximum CG iterations per update")
    ap.add_argument("--updates", type=int, default=100, help="maximum number of updates")
    ap.add_argument("--budget", type=float, default=300.0, help="time budget in seconds")
    ap.add_argument("--seed", type=int, default=1, help="seed of the initial weights")
    ap.add_argument("--mode", default=None, help="PyTensor mode (default: hf_symbolic's default)")
    ap.add_argument("--float32", action="store_true", help="compute in float32 instead of float64")
    ap.add_argument("--sgd", action="store_true", help="train with the SGD baseline instead of HF")
    ap.add_argument("--sgd-lr", type=float, default=0.5, help="SGD learning rate")
    ap.add_argument("--sgd-steps", type=int, default=10, help="SGD steps (full batch) per update")
    ap.add_argument("--quiet", action="store_true", help="no per-update lines")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    dtype = "float32" if args.float32 else "float64"
    sizes = [2, *args.hidden, 1]
    say(f"example_NN: {'SGD' if args.sgd else 'HF'} trains a {'-'.join(map(str, sizes))} sigmoid network on the 4 XOR "
        f"cases ({dtype}, seed {args.seed}); {backend_summary(args.mode)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from hf_symbolic import BatchDataset, hf_optimizer
    from hf_symbolic.sgd import sgd_optimizer

    stamp = announce_compile_cache("example_NN", dtype, args.mode)
    rng = np.random.default_rng(args.seed)
    model = build_mlp(sizes, ["sigmoid"] * len(args.hidden), rng, dtype=dtype)
    data = [XOR_X.astype(dtype), XOR_Y.astype(dtype)]
    train_ds = BatchDataset(data, 4, seed=args.seed + 1)
    valid_ds = BatchDataset(data, 4, shuffle=False)
    clock = Clock()
    solved = {"update": None}

    def report(stats):
        v = stats.validation  # (cross-entropy, squared error, zero-one error) on the 4 cases
        if not args.quiet:
            print(update_line(stats, clock, f"valid cross-entropy {v[0]:.5f}  wrong {int(round(v[2] * 4))}/4"),
                  flush=True)
        if v[2] == 0.0:
            solved["update"] = stats.update
            raise StopIteration

    cls = sgd_optimizer if args.sgd else hf_optimizer
    opt = cls(model.params, model.inputs, model.s, model.costs, mode=args.mode)
    compile_now(opt, stamp, processes=min(2, cores()), names=["gradient", "cost"] if args.sgd else None)
    if args.sgd:
        opt.train(train_ds, learning_rate=args.sgd_lr, num_updates=args.updates, validation=valid_ds,
                  steps_per_update=args.sgd_steps, callback=report, time_budget=args.budget)
    else:
        opt.train(train_ds, train_ds, initial_lambda=args.lambda0, mu=0.0, max_cg_iterations=args.max_cg,
                  num_updates=args.updates, validation=valid_ds, callback=report, time_budget=args.budget)
    result = opt.result
    method = "SGD" if args.sgd else "HF"
    if solved["update"] is not None:
        print(f"SOLVED: XOR {'-'.join(map(str, sizes))} ({method}, seed {args.seed}) all 4 cases right after "
              f"{solved['update']} updates and {clock():.1f} s (compile {opt.compile_seconds:.1f} s)")
        return 0
    last = next((st.validation for st in reversed(result.history) if st.validation is not None), None)
    wrong = "n/a" if last is None else f"{int(round(last[2] * 4))}/4"
    print(f"NOT SOLVED: XOR {'-'.join(map(str, sizes))} ({method}, seed {args.seed}) {wrong} cases wrong after "
          f"{result.updates} updates and {clock():.1f} s ({result.message})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
