"""Train a tanh RNN on one pathological long-term-dependency problem (Martens & Sutskever 2011).

TASK is any name of ``hf_symbolic.datasets.TASKS``: addition, multiplication,
xor, temporal_order, temporal_order_3bit, random_permutation,
noiseless_memorization, memorization. The output layer and loss come from the
task record (linear + squared error, sigmoid + cross-entropy, softmax +
categorical cross-entropy), read at the last step, or at the last
``task.output_steps`` steps (noiseless memorization). The network: 100 tanh
units with sparse recurrent weights (15 incoming connections, spectral radius
1.1), small dense input weights, structural damping on ``(h + 1)/2`` split at
the pre-activation. ``--method`` trains it with HF (default) or with one of the
first-order baselines of the library (SGD with classical or Nesterov momentum,
Adam); the stopping rule and the verdict are the same for every method.

Stopping rule. After every update the task's own success rule is applied to
the validation sequences (``--valid``, never used for training). Passing it
is not enough to stop: 1000 sequences cannot tell a network that is 0.9 %
wrong from one that is 1.2 % wrong. (Issue 16: a multiplication run at T=100,
seed 0, stopped at update 45 after 707 s with its 1000 validation sequences
solved, and then got 114 of 10000 fresh test sequences wrong, 1.14 %: not
solved.) So when validation passes, a fresh *confirmation* set of
``--confirm`` sequences (default 10000; a new draw from its own random
stream at every confirmation, so that a lucky draw is never reused) is
scored, and training stops only if the task's rule holds on it *and* the
one-sided Clopper-Pearson upper bound of its wrong fraction is below 1 %
(:meth:`hf_symbolic.datasets.SuccessResult.confidently_solved`). The k-th
confirmation of a run uses confidence ``1 - (1 - c) / 2**k`` with ``c =
--confidence`` (default 0.95; :func:`confidence_of_try`), so that however
many confirmations a run tries, a network whose true wrong fraction is 1 %
or more stops with probability at most ``1 - c`` (5 %) over the whole run
(the union bound over the tries; with one fixed confidence a network stuck at
1 % would pass each try with about 5 % probability and, after ten tries,
would have stopped with probability about 40 %). With 10000 sequences, the
first confirmation passes with up to 80 wrong ones (0.80 %). For "all right" rules (noiseless memorization) the rule
itself demands zero wrong sequences. Otherwise the script says that the
confirmation failed, with its numbers, and trains on. ``--confirm 0``
restores the old rule (stop as soon as validation passes).

The verdict comes from fresh test sequences (``--test``, their own stream
again), scored with the parameters that stopped training (or, when the
budget or the updates ran out, the ones with the lowest validation cost).

Usage::

    python examples/pathological.py addition --T 50 --seed 0
    python examples/pathological.py temporal_order --T 100 --budget 1800 --json run.json
    python examples/pathological.py xor --T 30 --method nesterov --lr 0.01

Exit status: 0 when the test sequences are solved, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import time

import numpy as np

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (Clock, announce_compile_cache, backend_summary, build_rnn, compile_now,  # noqa: E402
                     cpu_model, say, update_line, write_json_atomic)

METHODS = {"hf": "HF", "sgd": "SGD", "nesterov": "Nesterov", "adam": "Adam"}
#: Learning rates of the first-order methods when ``--lr`` is not given.
DEFAULT_LR = {"sgd": 0.01, "nesterov": 0.01, "adam": 0.001}
#: Why training stopped, beyond the training loop's own reasons (``TrainResult.status``).
CONFIRMED, VALIDATION = "confirmed", "validation"


def parse_args(argv=None):
    from hf_symbolic.datasets import TASKS, SuccessResult
    from hf_symbolic.errors import DatasetError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("task", choices=sorted(TASKS), help="problem to train on")
    ap.add_argument("--T", type=int, default=50, help="sequence length")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data and the initial weights")
    ap.add_argument("--hidden", type=int, default=100, help="hidden units")
    ap.add_argument("--train", type=int, default=10000, help="training sequences")
    ap.add_argument("--valid", type=int, default=1000, help="validation sequences (fresh, checked every update)")
    ap.add_argument("--confirm", type=int, default=10000,
                    help="fresh confirmation sequences drawn anew whenever validation passes (0: stop on validation)")
    ap.add_argument("--confidence", type=float, default=0.95,
                    help="confidence of the bound on the confirmation set's wrong fraction")
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
    ap.add_argument("--method", choices=tuple(METHODS), default="hf",
                    help="HF, SGD with classical or Nesterov momentum, or Adam")
    ap.add_argument("--sgd", action="store_true", help="the same as --method sgd")
    ap.add_argument("--lr", "--sgd-lr", dest="lr", type=float, default=None,
                    help=f"learning rate of the first-order methods (default: {DEFAULT_LR})")
    ap.add_argument("--momentum", "--sgd-momentum", dest="momentum", type=float, default=0.9,
                    help="momentum of SGD and Nesterov")
    ap.add_argument("--sgd-batch", type=int, default=100, help="minibatch size of the first-order methods")
    ap.add_argument("--sgd-steps", type=int, default=50, help="first-order steps (minibatches) per update")
    ap.add_argument("--json", default=None, help="write the record of the run (arguments, verdict, curve) here")
    ap.add_argument("--quiet", action="store_true", help="no per-update lines")
    args = ap.parse_args(argv)
    task = TASKS[args.task]
    if args.sgd:
        args.method = "sgd"
    args.sgd = args.method != "hf"  # a first-order method
    if args.lr is None and args.sgd:
        args.lr = DEFAULT_LR[args.method]
    if args.T < task.min_T:
        ap.error(f"--T {args.T} is too short for {args.task}: expected at least {task.min_T}")
    for name in ("train", "valid", "test", "sgd_batch", "sgd_steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected at least 1")
    if args.confirm < 0:
        ap.error(f"--confirm {args.confirm}: expected 0 (no confirmation) or a number of sequences")
    try:
        SuccessResult(0.0, 0, 1, True).wrong_upper_bound(args.confidence)  # checks the value
    except DatasetError as exc:
        ap.error(f"--confidence: {exc}")
    first = confidence_of_try(args.confidence, 1)
    possible = SuccessResult(0.0, 0, max(args.confirm, 1), True).confidently_solved(first, max_wrong_fraction())
    if args.confirm and not possible:
        need = math.floor(math.log(1 - first) / math.log(1 - max_wrong_fraction())) + 1
        ap.error(f"--confirm {args.confirm} can never confirm at --confidence {args.confidence}: even with none wrong "
                 f"the bound stays above {max_wrong_fraction():.0%}; expected at least {need} sequences (or 0)")
    return args


def max_wrong_fraction():
    """The wrong fraction the confirmation bound must fall below: the tasks' 1 %."""
    from hf_symbolic.datasets import MAX_WRONG_FRACTION

    return MAX_WRONG_FRACTION


def confidence_of_try(confidence, k):
    """Confidence of the ``k``-th confirmation (``k >= 1``) of a run: ``1 - (1 - confidence) / 2**k``.

    The error probabilities ``(1 - confidence) / 2**k`` sum to less than
    ``1 - confidence`` over any number of tries.

    Examples
    --------
    >>> [round(confidence_of_try(0.95, k), 5) for k in (1, 2, 3)]
    [0.975, 0.9875, 0.99375]
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k={k!r}: expected the number of the confirmation, an integer >= 1")
    return 1.0 - (1.0 - confidence) / 2.0 ** int(k)


def stopping_rule(validation, confirmation=None, *, confirm=True, confidence=0.95, max_wrong=None):
    """What to do after an update, from its validation result and, if one was drawn, its confirmation result.

    Parameters
    ----------
    validation : SuccessResult
        The task's rule on the validation sequences after this update.
    confirmation : SuccessResult or None
        The task's rule on a fresh confirmation set (None: not drawn yet).
    confirm : bool
        False for ``--confirm 0``: validation alone decides.
    confidence : float
        Confidence of the Clopper-Pearson bound on the confirmation set.
    max_wrong : float or None
        The bound must be below it (None: the tasks' 1 %).

    Returns
    -------
    {"train", "confirm", "stop"}
        ``"train"``: validation is not solved, or the confirmation set does
        not confidently pass; ``"confirm"``: validation is solved, draw a
        confirmation set and ask again; ``"stop"``: validation solved and
        (unless ``confirm`` is False) the confirmation set's result is
        :meth:`~hf_symbolic.datasets.SuccessResult.confidently_solved`.
    """
    if not validation.solved:
        return "train"
    if not confirm:
        return "stop"
    if confirmation is None:
        return "confirm"
    limit = max_wrong_fraction() if max_wrong is None else max_wrong
    return "stop" if confirmation.confidently_solved(confidence, limit) else "train"


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


def build_optimizer(args, model, x_train, y_train, axes, batch_seed):
    """The optimizer of ``--method`` and its datasets: ``(opt, gradient_ds, cg_ds or None)``."""
    from hf_symbolic import BatchDataset, adam_optimizer, hf_optimizer, sgd_optimizer

    if args.sgd:
        gradient_ds = BatchDataset([x_train, y_train], args.sgd_batch, number_batches=args.sgd_steps,
                                   case_axis=axes, seed=batch_seed)
        cls = adam_optimizer if args.method == "adam" else sgd_optimizer
        return cls(model.params, model.inputs, model.s, model.costs, mode=args.mode), gradient_ds, None
    gradient_ds = BatchDataset([x_train, y_train], args.gradient_batch, case_axis=axes, seed=batch_seed)
    cg_ds = BatchDataset([x_train, y_train], args.cg_batch, case_axis=axes, seed=batch_seed + 1)
    opt = hf_optimizer(model.params, model.inputs, model.s, model.costs, h=model.h, ha=model.ha, mode=args.mode)
    return opt, gradient_ds, cg_ds


def train(args, opt, gradient_ds, cg_ds, validate, report):
    """Run ``opt.train`` for ``--method``; a numerical failure ends training instead of the script."""
    from hf_symbolic.errors import NumericalFailureError

    common = dict(num_updates=args.updates, validation=validate, callback=report, time_budget=args.budget)
    try:
        if args.method == "adam":
            opt.train(gradient_ds, learning_rate=args.lr, **common)
        elif args.sgd:
            opt.train(gradient_ds, learning_rate=args.lr, momentum=args.momentum,
                      nesterov=args.method == "nesterov", **common)
        else:
            opt.train(gradient_ds, cg_ds, initial_lambda=args.lambda0, mu=args.mu, max_cg_iterations=args.max_cg,
                      workers=args.workers, **common)
    except NumericalFailureError as exc:
        say(f"training stopped: {exc}")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    dtype = "float64" if args.float64 else "float32"
    method = METHODS[args.method]
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    rule = f"stop when {args.valid} validation sequences pass"
    if args.confirm:
        rule += f" and {args.confirm} fresh ones confirm it at {args.confidence:.0%} confidence"
    say(f"pathological: {method} trains a {args.hidden}-unit tanh RNN on {args.task} T={args.T} "
        f"({args.train} training, {args.valid} validation, {args.test} test sequences, {dtype}, seed {args.seed}); "
        f"{rule}; {backend_summary(args.mode)}; {args.workers} process(es)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import pytensor

    from hf_symbolic.datasets import get_task

    task = get_task(args.task)
    stamp = announce_compile_cache(f"pathological-{task.output}-{task.output_steps}", dtype, args.mode)
    # streams 0-4 as before the confirmation set existed; 5 is the confirmation sets' own
    seeds = np.random.SeedSequence(args.seed).spawn(6)
    rng_init, rng_train, rng_valid, rng_test = (np.random.default_rng(s) for s in seeds[:4])
    rng_confirm = np.random.default_rng(seeds[5])
    model = build_rnn(task.n_in, args.hidden, task.n_out, task.output, rng_init, output_steps=task.output_steps,
                      dtype=dtype, radius=args.radius, input_scale=args.input_scale)
    x_train, y_train = task.generate(args.T, args.train, seed=rng_train, dtype=dtype)
    x_valid, y_valid = task.generate(args.T, args.valid, seed=rng_valid, dtype=dtype)
    axes = [1, 0 if task.output_steps == 1 else 1]
    batch_seed = int(seeds[4].generate_state(1)[0])
    opt, gradient_ds, cg_ds = build_optimizer(args, model, x_train, y_train, axes, batch_seed)
    compile_now(opt, stamp, processes=min(2, args.workers), names=["gradient", "cost"] if args.sgd else None)
    evaluate = pytensor.function(model.inputs, [model.costs[0], model.out], mode=opt.mode, name="evaluate")
    state = dict(update=None, theta=None, last=None, first_valid=None, reason=None)
    confirmations, curve = [], []

    def validate():
        cost, out = evaluate(x_valid, y_valid)
        state["last"] = task.success(np.asarray(out), y_valid)
        return [float(cost), state["last"].wrong_fraction]

    clock = Clock()

    def report(stats):
        v = stats.validation
        curve.append(dict(update=stats.update, seconds=clock(), cost=float(stats.costs[0]), valid_cost=v[0],
                          valid_wrong_fraction=v[1]))
        if not args.quiet:
            print(update_line(stats, clock, f"valid cost {v[0]:.5f} wrong {v[1]:.4f}"), flush=True)
        decision = stopping_rule(state["last"], confirm=args.confirm > 0, confidence=args.confidence)
        if decision != "train" and state["first_valid"] is None:
            state["first_valid"] = stats.update
        if decision == "confirm":
            t0 = time.perf_counter()
            _, c = evaluate_in_chunks(evaluate, task, args.T, args.confirm, rng_confirm, dtype)
            level = confidence_of_try(args.confidence, len(confirmations) + 1)
            bound = c.wrong_upper_bound(level)
            decision = stopping_rule(state["last"], c, confidence=level)
            confirmations.append(dict(update=stats.update, n_wrong=c.n_wrong, n=c.n_cases, bound=bound,
                                      confidence=level,
                                      solved=c.solved, confirmed=decision == "stop",
                                      seconds=time.perf_counter() - t0))
            say(f"  confirmation {'passed' if decision == 'stop' else 'FAILED'} at update {stats.update}: "
                f"{c.n_wrong}/{c.n_cases} fresh sequences wrong ({c.wrong_fraction:.2%}), {level:.2%} "
                f"upper bound {bound:.2%} {'<' if bound < max_wrong_fraction() else '>='} "
                f"{max_wrong_fraction():.0%}{'' if c.solved else ' (the task rule fails)'}"
                f"{'' if decision == 'stop' else '; training on'}")
        if decision == "stop":
            state["update"], state["theta"] = stats.update, opt.get_flat()
            state["reason"] = CONFIRMED if args.confirm else VALIDATION
            raise StopIteration

    train(args, opt, gradient_ds, cg_ds, validate, report)
    train_seconds = clock()
    result = opt.result
    if state["theta"] is not None:
        opt.set_flat(state["theta"])  # the parameters that stopped training
    stop_reason = state["reason"] or result.status
    t0 = time.perf_counter()
    test_cost, test = evaluate_in_chunks(evaluate, task, args.T, args.test, rng_test, dtype)
    verdict = "SOLVED" if test.solved else "NOT SOLVED"
    if state["reason"] == CONFIRMED:
        where = (f"confirmed at update {state['update']}, validation first solved at update {state['first_valid']}, "
                 f"{len(confirmations)} confirmation(s)")
    elif state["reason"] == VALIDATION:
        where = f"validation solved at update {state['update']}"
    else:
        where = f"stopped: {result.message}" + (f"; {len(confirmations)} confirmation(s) failed" if confirmations
                                                else "")
    print(f"{verdict}: {args.task} T={args.T} seed={args.seed} ({method}) wrong fraction {test.wrong_fraction:.4f} "
          f"({test.n_wrong}/{test.n_cases} fresh test sequences, cost {test_cost:.5f}) after {result.updates} updates "
          f"and {train_seconds:.1f} s ({where}; test {time.perf_counter() - t0:.1f} s, "
          f"compile {opt.compile_seconds:.1f} s)")
    if args.json:
        record = dict(
            task=args.task, T=args.T, seed=args.seed, method=args.method, arguments=vars(args),
            command=shlex.join(["python", "examples/pathological.py", *argv]), cpu=cpu_model(),
            hf_symbolic=os.path.dirname(os.path.abspath(sys.modules["hf_symbolic"].__file__)),
            load_average_start=load_at_start, solved=bool(test.solved), test_wrong_fraction=test.wrong_fraction,
            test_n_wrong=test.n_wrong, test_n=test.n_cases, test_cost=test_cost, updates=result.updates,
            train_seconds=train_seconds, compile_seconds=opt.compile_seconds, stop_reason=stop_reason,
            stop_message=result.message, stopped_update=state["update"], validation_first_solved=state["first_valid"],
            confidence=args.confidence if args.confirm else None, max_wrong_fraction=max_wrong_fraction(),
            confirmations=confirmations, curve=curve)
        write_json_atomic(args.json, record)
        print(f"record written to {args.json}")
    return 0 if test.solved else 1


if __name__ == "__main__":
    sys.exit(main())
