"""HF variants on the autoencoder example that its command line does not offer, for the plateau study of the README.

Runs ``examples/autoencoder.py`` (every argument after ``--`` goes to it)
with HF's ``train`` options changed (``--option NAME=VALUE``, any field of
``hf_symbolic.TrainOptions``), and optionally a CG batch that grows during
training (``--grow START EVERY``: START cases at first, START more after every
EVERY updates, up to the example's ``--cg-batch``; the batch is made of
START-case minibatches, ``number_batches`` of them, whose products are
averaged).

Usage::

    python benchmarks/autoencoder_variants.py --option min_cg_iterations=50 -- curves --budget 240 --workers 1
    python benchmarks/autoencoder_variants.py --option cg_epsilon=5e-5 -- curves --budget 240 --workers 1
    python benchmarks/autoencoder_variants.py --option cg_grid_start=5 -- curves --budget 240 --workers 1
    python benchmarks/autoencoder_variants.py --grow 1000 4 -- curves --budget 240 --workers 1

Run with one BLAS thread and, on this machine, without OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))


def _option(text):
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not a Python literal") from None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--option", type=_option, action="append", default=[], help="a train() option NAME=VALUE")
    ap.add_argument("--grow", type=int, nargs=2, metavar=("START", "EVERY"), default=None,
                    help="CG batch of START cases, START more every EVERY updates, up to --cg-batch")
    args = ap.parse_args(ours)
    if args.grow and min(args.grow) < 1:
        ap.error(f"--grow {args.grow}: expected two positive numbers")

    import hf_symbolic
    from hf_symbolic import BatchDataset, hf_optimizer

    options = dict(args.option)
    train = hf_optimizer.train
    made = []  # the batch sizes of the datasets the example made

    def train_with_options(self, *a, **kw):
        kw.update(options)
        return train(self, *a, **kw)

    def datasets(arrays, batch_size, *a, **kw):  # the example makes the gradient dataset, then the CG dataset
        made.append(batch_size)
        cls = Growing if args.grow and len(made) == 2 else BatchDataset
        return cls(arrays, batch_size, *a, **kw)

    print(f"train options changed: {options or 'none'}", flush=True)
    if args.grow:
        start, every = args.grow

        class Growing(BatchDataset):
            def __init__(self, arrays, batch_size, number_batches=1, **kw):
                self.most = max(1, batch_size // start)
                super().__init__(arrays, start, 1, **kw)

            def update(self):  # linear growth (BatchDataset's own growth is geometric)
                super().update()
                self._number_batches = min(self.most, 1 + self.updates // every)
                sizes.append(self._number_batches * start)

        sizes = []  # the CG batch's cases after each update
        print(f"CG batch: {start} cases, {start} more every {every} updates, up to --cg-batch", flush=True)

    import autoencoder

    hf_optimizer.train, hf_symbolic.BatchDataset = train_with_options, datasets
    try:
        code = autoencoder.main(rest)
    finally:  # leave hf_symbolic as it was (the tests run this in their own process)
        hf_optimizer.train, hf_symbolic.BatchDataset = train, BatchDataset
    if args.grow:
        print(f"CG batch cases after each update: {sizes}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
