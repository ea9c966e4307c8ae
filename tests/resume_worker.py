"""One HF training run of a small structurally damped RNN, resumable from a checkpoint.

``tests/test_resume.py`` imports this module to run the straight and the
interrupted runs in its own process, and runs it as a script to resume in a
fresh process::

    python tests/resume_worker.py --num-updates 6 --checkpoint run.ckpt --out out.json \
        [--preconditioner [NAME]] [--global-seed 123] [--growth 1.6 --max-cg 3 --max-cg-exponent 1]

The model is ``models.rnn(structural=True)`` (tanh units, structural damping on
``(h + 1) / 2`` split at the pre-activation), trained on a fixed synthetic
memorization task (the target is the first input bit).  The gradient batch (12
sequences) differs from the CG batch (5 sequences), both shuffled from the same
24 training sequences; validation uses 8 other sequences.  With
``--global-seed`` the datasets are built with ``seed=None`` (numpy's global
generator) right after ``numpy.random.seed(global_seed)``, as the 2012 scripts
did; otherwise each has its own integer seed.

The script writes a JSON summary: the returned parameters (flat, as exact
float64 bit patterns), the status and the history record without timings.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

MODE = "FAST_COMPILE"
T, N_IN, N_HIDDEN = 5, 2, 4
N_TRAIN, N_VALID = 24, 8
GRADIENT_BATCH, CG_BATCH = 12, 5
TRAIN_OPTIONS = dict(initial_lambda=0.5, mu=1.0 / 30, max_cg_iterations=40)


def build_optimizer():
    """The RNN's optimizer and its initial flat parameters."""
    from hf_symbolic import hf_optimizer
    from models import rnn

    m = rnn(structural=True, n_in=N_IN, n_h=N_HIDDEN, T=T, seed=3, scan_mode=MODE)
    opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha, mode=MODE)
    return opt, opt.get_flat()


def _task(n, rng):
    x = rng.integers(0, 2, size=(T, n, N_IN)).astype(np.float64)
    return x, x[0, :, :1].copy()


def make_datasets(global_seed=None, growth=1.0):
    """``(gradient, cg, validation)`` datasets; with ``global_seed`` all shuffle with numpy's global RNG.

    ``growth > 1``: the gradient and CG batches grow by that factor per update, up to all their items.
    """
    from hf_symbolic import BatchDataset

    rng = np.random.default_rng(2024)
    train, valid = _task(N_TRAIN, rng), _task(N_VALID, rng)
    if global_seed is not None:
        np.random.seed(global_seed)
        seeds = (None, None, None)
    else:
        seeds = (11, 12, 13)
    axes = [1, 0]
    return (
        BatchDataset(list(train), GRADIENT_BATCH, case_axis=axes, seed=seeds[0], growth=growth),
        BatchDataset(list(train), CG_BATCH, case_axis=axes, seed=seeds[1], growth=growth),
        BatchDataset(list(valid), N_VALID, case_axis=axes, seed=seeds[2]),
    )


def run(opt, theta0, num_updates, checkpoint, *, preconditioner=False, global_seed=None, callback=None,
        growth=1.0, max_cg=None, max_cg_exponent=0.0):
    """Train ``opt`` from ``theta0`` (ignored when ``checkpoint`` exists: the run resumes) for ``num_updates``.

    ``max_cg`` replaces the CG cap of ``TRAIN_OPTIONS``; ``max_cg_exponent`` lets it grow with the CG batch.
    """
    opt.set_flat(theta0)
    gradient, cg, validation = make_datasets(global_seed, growth)
    options = dict(TRAIN_OPTIONS, max_cg_exponent=max_cg_exponent)
    if max_cg is not None:
        options["max_cg_iterations"] = max_cg
    opt.train(gradient, cg, num_updates=num_updates, validation=validation, preconditioner=preconditioner,
              save_progress=checkpoint, callback=callback, **options)
    return opt.result


def history_records(history):
    """The history as JSON text per update, without the wall-clock fields (NaN kept as ``NaN``)."""
    out = []
    for stats in history:
        d = stats.to_json()
        d.pop("seconds")
        d.pop("timings")
        out.append(json.dumps(d, sort_keys=True))
    return out


def exact_floats(x) -> list:
    """Float64 values as hex bit patterns (so JSON carries them bit for bit, NaN included)."""
    return [struct.pack("<d", float(v)).hex() for v in np.asarray(x, dtype=np.float64).ravel()]


def from_exact_floats(hexes) -> np.ndarray:
    return np.array([struct.unpack("<d", bytes.fromhex(h))[0] for h in hexes], dtype=np.float64)


def summary(result) -> dict:
    return {
        "x": exact_floats(result.x),
        "status": result.status,
        "updates": result.updates,
        "best_update": result.best_update,
        "best_validation": None if result.best_validation is None else exact_floats(result.best_validation),
        "lambda": exact_floats([result.lambda_]),
        "history": history_records(result.history),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-updates", type=int, required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True, help="JSON summary written here")
    parser.add_argument("--preconditioner", nargs="?", const=True, default=False,
                        help="Martens' diagonal, or the registered preconditioner named")
    parser.add_argument("--global-seed", type=int, default=None)
    parser.add_argument("--growth", type=float, default=1.0)
    parser.add_argument("--max-cg", type=int, default=None)
    parser.add_argument("--max-cg-exponent", type=float, default=0.0)
    args = parser.parse_args(argv)
    opt, theta0 = build_optimizer()
    result = run(opt, theta0, args.num_updates, args.checkpoint, preconditioner=args.preconditioner,
                 global_seed=args.global_seed, growth=args.growth, max_cg=args.max_cg,
                 max_cg_exponent=args.max_cg_exponent)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(summary(result), f)


if __name__ == "__main__":
    main()
