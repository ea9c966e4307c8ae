"""Train a deep autoencoder (Martens 2010) on CURVES-like images or on Fashion-MNIST.

Architectures (encoder; the decoder mirrors it): CURVES 784-400-200-100-50-25-6,
MNIST's 784-1000-500-250-30 for Fashion-MNIST. The code layer is linear, every
other hidden layer logistic; the 784 outputs are sigmoids trained with the
cross-entropy summed over pixels. Weights start from Martens' sparse
initialization (15 nonzero incoming weights per unit, N(0, 1); biases 0).

The error reported, as in the papers, is the squared reconstruction error per
case: the sum over pixels of (output - pixel)², averaged over the cases. After
every update (``--validation-frequency``: every that many updates, and
after the last) it is measured on the first ``--eval-cases`` training and
test cases (the same cases every time); the final errors use all cases. An
update of the first-order methods is an epoch (tens of seconds); one of
small-batch HF takes seconds, so measuring after each would cost HF a larger
share of its budget than the others: the race validates small-batch HF about
as often in seconds.

The CURVES images here come from ``hf_symbolic.datasets.curves`` (our own
renderer of smooth curves through three random points), a stand-in for
Martens' CURVES set, not the same data: its errors are not comparable with
the published ones. Fashion-MNIST needs Debian's ``dataset-fashion-mnist``
(or ``--data-dir``).

Usage::

    python examples/autoencoder.py curves --budget 600
    python examples/autoencoder.py curves --budget 600 --sgd      # same budget, SGD
    python examples/autoencoder.py curves --gradient-batch 1000 --cg-batch 250 --max-cg 25  # small-batch HF
    python examples/autoencoder.py curves --gradient-batch 1000 --cg-batch 250 --max-cg 25 \
        --batch-growth 1.002 --max-growth 8          # batches doubling every 347 updates, up to 8000 / 2000
    python examples/autoencoder.py curves --gradient-batch 1000 --cg-batch 250 --max-cg 25 \
        --batch-growth 1.002 --max-growth 8 --max-cg-exponent 0.5  # the CG cap too, 25 sqrt(n): up to 71
    python examples/autoencoder.py curves --train 2000 --cg-batch 500 --layers 100 50 6
    python examples/autoencoder.py fashion-mnist --budget 1800

Exit status: 0 when training ran (whatever stopped it), 1 when the final
errors are not finite, 2 when the data are missing.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

import numpy as np

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (Clock, announce_compile_cache, backend_summary, build_mlp, compile_now,  # noqa: E402
                     say, update_line)

#: data -> (encoder widths, training cases, CG batch) from Martens 2010 (MNIST's settings for Fashion-MNIST).
DEFAULTS = {
    "curves": ([400, 200, 100, 50, 25, 6], 20000, 5000),
    "fashion-mnist": ([1000, 500, 250, 30], 60000, 7500),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("data", choices=sorted(DEFAULTS), help="image set")
    ap.add_argument("--layers", type=int, nargs="+", default=None,
                    help="encoder widths after the 784 inputs, the last being the linear code "
                         "(default: 400 200 100 50 25 6 for curves, 1000 500 250 30 for fashion-mnist)")
    ap.add_argument("--train", type=int, default=None,
                    help="training cases (default: 20000 curves, 60000 fashion-mnist)")
    ap.add_argument("--test", type=int, default=10000, help="test cases")
    ap.add_argument("--eval-cases", type=int, default=2000,
                    help="training and test cases on which the errors are measured after every update "
                         "(0: all; the final errors always use all cases)")
    ap.add_argument("--validation-frequency", type=int, default=1,
                    help="measure the errors (and keep the best parameters) after every this many updates, and "
                         "after the last")
    ap.add_argument("--gradient-batch", type=int, default=0,
                    help="cases per gradient batch (0: all training cases)")
    ap.add_argument("--cg-batch", type=int, default=None,
                    help="cases per curvature (CG) batch (default: 5000 curves, 7500 fashion-mnist)")
    ap.add_argument("--batch-growth", type=float, default=1.0,
                    help="factor by which HF's gradient and CG batches grow per update, as more minibatches of "
                         "--gradient-batch and --cg-batch cases (1: fixed)")
    ap.add_argument("--max-growth", type=int, default=8,
                    help="most minibatches a growing batch holds (with --batch-growth above 1)")
    ap.add_argument("--lambda0", type=float, default=45.0,
                    help="initial Tikhonov damping (Martens' autoencoder setting)")
    ap.add_argument("--lambda-drop", type=float, default=2.0 / 3.0,
                    help="factor applied to lambda after a good reduction ratio (rho > 3/4; Martens: 2/3)")
    ap.add_argument("--max-cg", type=int, default=250, help="maximum CG iterations per update")
    ap.add_argument("--max-cg-exponent", type=float, default=0.0,
                    help="the CG cap grows with the CG batch to this power (1: in proportion; 0: fixed)")
    ap.add_argument("--preconditioner", nargs="?", const="martens", default=None,
                    help="HF's CG preconditioner: a name of hf_symbolic.solve.preconditioners.REGISTRY "
                         "(martens, gauss_newton_hutchinson, kfac, ...; the flag alone: martens)")
    ap.add_argument("--updates", type=int, default=100000, help="maximum number of updates")
    ap.add_argument("--budget", type=float, default=600.0, help="time budget in seconds (both methods)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data, the initial weights and the batches")
    ap.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST IDX files")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1,
                    help="processes sharing each batch (default: the cores available to this process)")
    ap.add_argument("--mode", default=None, help="PyTensor mode (default: hf_symbolic's default)")
    ap.add_argument("--float64", action="store_true", help="compute in float64 instead of float32")
    ap.add_argument("--method", choices=("hf", "sgd", "nesterov", "adam"), default="hf",
                    help="HF, SGD with classical or Nesterov momentum, or Adam")
    ap.add_argument("--sgd", action="store_true", help="the same as --method sgd")
    ap.add_argument("--lr", "--sgd-lr", dest="lr", type=float, default=0.001,
                    help="learning rate of the first-order methods")
    ap.add_argument("--sgd-momentum", type=float, default=0.9, help="SGD momentum")
    ap.add_argument("--sgd-batch", type=int, default=200,
                    help="minibatch size of the first-order methods (one update = one epoch)")
    ap.add_argument("--json", default=None,
                    help="write the final errors, seconds, updates and the curve (errors against seconds) here")
    ap.add_argument("--save", default=None,
                    help="write the final parameters to this .npz file (arrays W0, b0, W1, ...)")
    ap.add_argument("--quiet", action="store_true", help="no per-update lines")
    args = ap.parse_args(argv)
    if args.sgd:
        args.method = "sgd"
    args.sgd = args.method != "hf"  # a first-order method
    layers, n_train, cg_batch = DEFAULTS[args.data]
    for name in ("train", "test", "cg_batch", "sgd_batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected at least 1")
    if args.gradient_batch < 0:
        ap.error(f"--gradient-batch {args.gradient_batch}: expected 0 (all training cases) or a positive number")
    args.layers = args.layers or layers
    args.train = args.train if args.train is not None else n_train
    args.cg_batch = min(args.cg_batch if args.cg_batch is not None else cg_batch, args.train)
    args.gradient_batch = min(args.gradient_batch or args.train, args.train)
    if not (math.isfinite(args.batch_growth) and args.batch_growth >= 1.0):
        ap.error(f"--batch-growth {args.batch_growth}: expected a factor >= 1")
    if not (math.isfinite(args.max_cg_exponent) and args.max_cg_exponent >= 0):
        ap.error(f"--max-cg-exponent {args.max_cg_exponent}: expected a number >= 0")
    if args.max_growth < 1:
        ap.error(f"--max-growth {args.max_growth}: expected at least 1")
    if not 0.0 < args.lambda_drop < 1.0:
        ap.error(f"--lambda-drop {args.lambda_drop}: expected a factor in (0, 1)")
    if args.validation_frequency < 1:
        ap.error(f"--validation-frequency {args.validation_frequency}: expected at least 1")
    if args.eval_cases < 0:
        ap.error(f"--eval-cases {args.eval_cases}: expected 0 (all cases) or a positive number")
    if any(w < 1 for w in args.layers):
        ap.error(f"--layers {args.layers}: expected positive widths")
    return args


def load_data(args, dtype):
    """``(train, test)`` image arrays, ``(cases, 784)`` in [0, 1]."""
    if args.data == "curves":
        from hf_symbolic.datasets import curves_data

        d = curves_data(n_train=args.train, n_test=args.test, seed=args.seed, dtype=dtype)
        return d.train, d.test
    from hf_symbolic.datasets import load_fashion_mnist

    train = load_fashion_mnist("train", path=args.data_dir, dtype=dtype).images
    test = load_fashion_mnist("test", path=args.data_dir, dtype=dtype).images
    if args.train > len(train) or args.test > len(test):
        raise SystemExit(f"Fashion-MNIST has {len(train)} training and {len(test)} test images; "
                         f"asked for --train {args.train} --test {args.test}")
    return train[:args.train], test[:args.test]


def mean_costs(opt, x, chunk=5000):
    """Every cost of ``opt`` averaged over all cases of ``x`` (evaluated in chunks)."""
    total = None
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        c = np.asarray(opt.cost([part]), dtype=np.float64) * len(part)
        total = c if total is None else total + c
    return total / len(x)


def main(argv=None):
    args = parse_args(argv)
    enc = list(args.layers)
    sizes = [784, *enc, *enc[-2::-1], 784]
    method = {"hf": "HF", "sgd": "SGD", "nesterov": "Nesterov", "adam": "Adam"}[args.method]
    if args.method == "hf" and args.preconditioner:
        method += f" + {args.preconditioner}"
    say(f"{args.data} autoencoder {'-'.join(map(str, sizes))} ({method}): {args.train} training and "
        f"{args.test} test cases, budget {args.budget:g} s; {backend_summary(args.mode)}; {args.workers} process(es)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from hf_symbolic import BatchDataset, DampingRule, hf_optimizer
    from hf_symbolic.errors import DataNotFoundError
    from hf_symbolic import adam_optimizer, sgd_optimizer

    dtype = "float64" if args.float64 else "float32"
    stamp = announce_compile_cache("autoencoder", dtype, args.mode)
    try:
        x_train, x_test = load_data(args, dtype)
    except DataNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    activations = ["sigmoid"] * (len(enc) - 1) + ["linear"] + ["sigmoid"] * (len(enc) - 1)
    seeds = np.random.SeedSequence(args.seed).spawn(2)
    model = build_mlp(sizes, activations, np.random.default_rng(seeds[0]), dtype=dtype, target_is_input=True)
    batch_seed = int(seeds[1].generate_state(1)[0])
    cls = {"hf": hf_optimizer, "sgd": sgd_optimizer, "nesterov": sgd_optimizer, "adam": adam_optimizer}[args.method]
    opt = cls(model.params, model.inputs, model.s, model.costs, mode=args.mode)
    compile_now(opt, stamp, processes=min(2, args.workers), names=["gradient", "cost"] if args.sgd else None)

    n_eval = args.eval_cases or max(len(x_train), len(x_test))
    x_train_eval, x_test_eval = x_train[:n_eval], x_test[:n_eval]

    def validate():  # (train cross-entropy, train squared error, test cross-entropy, test squared error)
        return [*mean_costs(opt, x_train_eval), *mean_costs(opt, x_test_eval)]

    clock = Clock()
    curve = []
    growing = []  # HF's gradient dataset when its batch grows

    timings = {}  # seconds per phase summed over all updates (HF)

    def report(stats):
        for k, t in stats.timings.items():
            timings[k] = timings.get(k, 0.0) + t
        v = stats.validation
        if v is None:  # not a validation update (--validation-frequency)
            if not args.quiet:
                print(update_line(stats, clock), flush=True)
            return
        curve.append(dict(update=stats.update, seconds=clock(), train_error=v[1], test_error=v[3]))
        if not args.sgd:  # HF's damping, reduction ratio and CG iterations of the update
            curve[-1].update(lambda_=stats.lambda_, rho=stats.rho, cg=stats.cg_iterations,
                             timings={k: round(t, 4) for k, t in stats.timings.items() if t})
        if growing:  # minibatches in the next update's batches
            curve[-1]["batches"] = growing[0].number_batches
        if not args.quiet:
            print(update_line(stats, clock, f"train error {v[1]:.4f}  test error {v[3]:.4f}"), flush=True)

    if args.sgd:
        steps = max(1, len(x_train) // args.sgd_batch)
        ds = BatchDataset([x_train], args.sgd_batch, number_batches=steps, seed=batch_seed)
        common = dict(num_updates=args.updates, validation=validate, validation_frequency=args.validation_frequency,
                      callback=report, time_budget=args.budget)
        if args.method == "adam":
            opt.train(ds, learning_rate=args.lr, **common)
        else:
            opt.train(ds, learning_rate=args.lr, momentum=args.sgd_momentum, nesterov=args.method == "nesterov",
                      **common)
    else:
        growth = dict(growth=args.batch_growth, max_batches=args.max_growth) if args.batch_growth > 1 else {}
        gradient_ds = BatchDataset([x_train], args.gradient_batch, seed=batch_seed, **growth)
        cg_ds = BatchDataset([x_train], args.cg_batch, seed=batch_seed + 1, **growth)
        growing.extend([gradient_ds] if growth else [])
        opt.train(gradient_ds, cg_ds, initial_lambda=args.lambda0, mu=0.0, max_cg_iterations=args.max_cg,
                  max_cg_exponent=args.max_cg_exponent, damping=DampingRule(drop=args.lambda_drop),
                  preconditioner=args.preconditioner, num_updates=args.updates, validation=validate,
                  validation_frequency=args.validation_frequency, callback=report, time_budget=args.budget,
                  workers=args.workers)
    seconds = clock()
    result = opt.result
    # train() leaves the parameters with the lowest training cross-entropy; report those.
    train_ce, train_sq = mean_costs(opt, x_train)
    test_ce, test_sq = mean_costs(opt, x_test)
    if args.save:
        np.savez(args.save, **{x.name: x.get_value() for x in opt.p})
        print(f"parameters saved to {args.save}")
    print(f"FINAL: {args.data} ({method}) train error {train_sq:.4f}  test error {test_sq:.4f}  "
          f"(squared error per case; cross-entropy train {train_ce:.3f} test {test_ce:.3f}) after {result.updates} "
          f"updates and {seconds:.1f} s of a {args.budget:g} s budget ({result.message}; best update "
          f"{result.best_update}; compile {opt.compile_seconds:.1f} s)")
    if args.json:
        import json

        record = dict(data=args.data, method=args.method, learning_rate=None if args.method == "hf" else args.lr,
                      preconditioner=args.preconditioner, lambda0=args.lambda0, lambda_drop=args.lambda_drop,
                      gradient_batch=args.gradient_batch, cg_batch=args.cg_batch, max_cg=args.max_cg,
                      max_cg_exponent=args.max_cg_exponent, batch_growth=args.batch_growth, max_growth=args.max_growth,
                      validation_frequency=args.validation_frequency, seed=args.seed, budget=args.budget,
                      train_error=float(train_sq), test_error=float(test_sq), seconds=seconds,
                      updates=result.updates, status=result.status,
                      timings={k: round(t, 3) for k, t in timings.items() if t}, curve=curve)
        with open(args.json, "w") as f:
            json.dump(record, f)
        print(f"results written to {args.json}")
    return 0 if math.isfinite(train_sq) and math.isfinite(test_sq) else 1


if __name__ == "__main__":
    sys.exit(main())
