"""Train a tanh RNN on one pathological long-term-dependency problem (Martens & Sutskever 2011).

TASK is any name of ``hf_symbolic.datasets.TASKS``: addition, multiplication,
xor, temporal_order, temporal_order_3bit, random_permutation,
noiseless_memorization, memorization. The output layer and loss come from the
task record (linear + squared error, sigmoid + cross-entropy, softmax +
categorical cross-entropy), read at the last step, or at the last
``task.output_steps`` steps (noiseless memorization). The network: 100 tanh
units with sparse recurrent weights (15 incoming connections, spectral radius
1.1), small dense input weights, structural damping on ``(h + 1)/2`` split at
the pre-activation.

After every update the task's own success rule is applied to the validation
sequences (never used for training). Training stops when they are solved;
then the parameters that solved them are scored on fresh test sequences,
which decide the final verdict.

Usage::

    python examples/pathological.py addition --T 50 --seed 0
    python examples/pathological.py temporal_order --T 100 --budget 3600
    python examples/pathological.py xor --T 30 --sgd

Exit status: 0 when the test sequences are solved, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (Clock, announce_compile_cache, backend_summary, build_rnn, compile_now,  # noqa: E402
                     say, update_line)


def parse_args(argv=None):
    from hf_symbolic.datasets import TASKS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("task", choices=sorted(TASKS), help="problem to train on")
    ap.add_argument("--T", type=int, default=50, help="sequence length")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data and the initial weights")
    ap.add_argument("--hidden", type=int, default=100, help="hidden units")
    ap.add_argument("--train", type=int, default=10000, help="training sequences")
    ap.add_argument("--valid", type=int, default=1000, help="validation sequences (fresh, checked every update)")
    ap.add_argument("--test", type=int, default=10000, help="fresh test sequences scored at the end")
    ap.add_argument("--gradient-batch", type=int, default=5000, help="sequences per gradient batch")
    ap.add_argument("--cg-batch", type=int, default=1000, help="sequences per curvature (CG) batch")
    ap.add_argument("--lambda0", type=float, default=0.5, help="initial Tikhonov damping")
    ap.add_argument("--mu", type=float, default=1 / 30, help="structural damping coefficient (weight lambda*mu)")
    ap.add_argument("--radius", type=float, default=1.1, help="spectral radius of the initial recurrent weights")
    ap.add_argument("--input-scale", type=float, default=0.1, help="standard deviation of the initial input weights")
    ap.add_argument("--max-cg", type=int, default=300, help="maximum CG iterations per update")
    ap.add_argument("--updates", type=int, default=1000, help="maximum number of updates")
    ap.add_argument("--budget", type=float, default=3600.0, help="time budget in seconds")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1,
                    help="processes sharing each batch (default: the cores available to this process)")
    ap.add_argument("--mode", default=None, help="PyTensor mode (default: hf_symbolic's default)")
    ap.add_argument("--float64", action="store_true", help="compute in float64 instead of float32")
    ap.add_argument("--sgd", action="store_true", help="train with the SGD baseline instead of HF")
    ap.add_argument("--sgd-lr", type=float, default=0.01, help="SGD learning rate")
    ap.add_argument("--sgd-batch", type=int, default=100, help="SGD minibatch size")
    ap.add_argument("--sgd-steps", type=int, default=50, help="SGD steps per update")
    ap.add_argument("--quiet", action="store_true", help="no per-update lines")
    args = ap.parse_args(argv)
    task = TASKS[args.task]
    if args.T < task.min_T:
        ap.error(f"--T {args.T} is too short for {args.task}: expected at least {task.min_T}")
    return args


def evaluate_in_chunks(evaluate, task, T, n, rng, dtype, chunk=1000):
    """Score ``n`` fresh sequences in chunks: returns ``(mean cost, SuccessResult)``."""
    preds, targets, total = [], [], 0.0
    case_axis = 0 if task.output_steps == 1 else 1
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x, y = task.generate(T, m, seed=rng, dtype=dtype)
        cost, out = evaluate(x, y)
        total += float(cost) * m
        preds.append(np.asarray(out))
        targets.append(y)
    pred = np.concatenate(preds, axis=case_axis)
    y = np.concatenate(targets, axis=case_axis)
    return total / n, task.success(pred, y)


def main(argv=None):
    args = parse_args(argv)
    dtype = "float64" if args.float64 else "float32"
    say(f"pathological: {'SGD' if args.sgd else 'HF'} trains a {args.hidden}-unit tanh RNN on {args.task} T={args.T} "
        f"({args.train} training, {args.valid} validation, {args.test} test sequences, {dtype}, seed {args.seed}); "
        f"{backend_summary(args.mode)}; {args.workers} process(es)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import pytensor

    from hf_symbolic import BatchDataset, hf_optimizer
    from hf_symbolic.datasets import get_task
    from hf_symbolic.sgd import sgd_optimizer

    task = get_task(args.task)
    stamp = announce_compile_cache(f"pathological-{task.output}-{task.output_steps}", dtype, args.mode)
    seeds = np.random.SeedSequence(args.seed).spawn(5)
    rng_init, rng_train, rng_valid, rng_test = (np.random.default_rng(s) for s in seeds[:4])
    model = build_rnn(task.n_in, args.hidden, task.n_out, task.output, rng_init, output_steps=task.output_steps,
                      dtype=dtype, radius=args.radius, input_scale=args.input_scale)
    x_train, y_train = task.generate(args.T, args.train, seed=rng_train, dtype=dtype)
    x_valid, y_valid = task.generate(args.T, args.valid, seed=rng_valid, dtype=dtype)
    y_axis = 0 if task.output_steps == 1 else 1
    axes = [1, y_axis]
    batch_seed = int(seeds[4].generate_state(1)[0])
    if args.sgd:
        n_batches = max(1, args.sgd_steps)
        gradient_ds = BatchDataset([x_train, y_train], args.sgd_batch, number_batches=n_batches, case_axis=axes,
                                   seed=batch_seed)
        opt = sgd_optimizer(model.params, model.inputs, model.s, model.costs, mode=args.mode)
    else:
        gradient_ds = BatchDataset([x_train, y_train], args.gradient_batch, case_axis=axes, seed=batch_seed)
        cg_ds = BatchDataset([x_train, y_train], args.cg_batch, case_axis=axes, seed=batch_seed + 1)
        opt = hf_optimizer(model.params, model.inputs, model.s, model.costs, h=model.h, ha=model.ha, mode=args.mode)
    compile_now(opt, stamp, processes=min(2, args.workers), names=["gradient", "cost"] if args.sgd else None)
    evaluate = pytensor.function(model.inputs, [model.costs[0], model.out], mode=opt.mode, name="evaluate")
    solved = {"update": None, "theta": None, "last": None}

    def validate():
        cost, out = evaluate(x_valid, y_valid)
        solved["last"] = task.success(np.asarray(out), y_valid)
        return [float(cost), solved["last"].wrong_fraction]

    clock = Clock()

    def report(stats):
        v = stats.validation
        if not args.quiet:
            print(update_line(stats, clock, f"valid cost {v[0]:.5f} wrong {v[1]:.4f}"), flush=True)
        if solved["last"].solved:
            solved["update"], solved["theta"] = stats.update, opt.get_flat()
            raise StopIteration

    if args.sgd:
        opt.train(gradient_ds, learning_rate=args.sgd_lr, num_updates=args.updates, validation=validate,
                  callback=report, time_budget=args.budget)
    else:
        opt.train(gradient_ds, cg_ds, initial_lambda=args.lambda0, mu=args.mu, max_cg_iterations=args.max_cg,
                  num_updates=args.updates, validation=validate, callback=report, time_budget=args.budget,
                  workers=args.workers)
    train_seconds = clock()
    if solved["theta"] is not None:
        opt.set_flat(solved["theta"])  # the parameters that solved the validation sequences
    t0 = time.perf_counter()
    test_cost, test = evaluate_in_chunks(evaluate, task, args.T, args.test, rng_test, dtype)
    result = opt.result
    method = "SGD" if args.sgd else "HF"
    verdict = "SOLVED" if test.solved else "NOT SOLVED"
    where = (f"validation solved at update {solved['update']}" if solved["update"] is not None
             else f"stopped: {result.message}")
    print(f"{verdict}: {args.task} T={args.T} seed={args.seed} ({method}) wrong fraction {test.wrong_fraction:.4f} "
          f"({test.n_wrong}/{test.n_cases} fresh test sequences, cost {test_cost:.5f}) after {result.updates} updates "
          f"and {train_seconds:.1f} s ({where}; test {time.perf_counter() - t0:.1f} s, "
          f"compile {opt.compile_seconds:.1f} s)")
    return 0 if test.solved else 1


if __name__ == "__main__":
    sys.exit(main())
