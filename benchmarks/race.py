"""HF against SGD-momentum (classical and Nesterov) and Adam on deep autoencoders, at equal wall-clock budgets.

Every run is one process on one core (one BLAS thread, ``--workers 1``):
``python examples/autoencoder.py DATA --method M --budget B --seed S --json FILE``.
Two runs go side by side on a 2-core machine (``--parallel``). For the
first-order methods every learning rate of the grid below is run and the best
(lowest final test error, per data set, budget and seed) is reported, so a
baseline is never shown with a badly chosen step size. The grids were fixed
before any race and are not tuned afterwards:

- SGD with classical or Nesterov momentum 0.9, minibatches of 200:
  learning rates 1e-3, 3e-3, 1e-2, 3e-2 (Sutskever et al. 2013 used 0.05-0.1
  per-case-summed costs on these nets; our costs are summed over pixels and
  averaged over cases, which puts the stable range near 1e-3 to 3e-2);
- Adam (beta1 0.9, beta2 0.999, eps 1e-8), minibatches of 200:
  learning rates 1e-4, 3e-4, 1e-3, 3e-3 (around Kingma & Ba's default 1e-3);
- HF, each setting of ``HF_SETTINGS`` named with ``--hf-settings`` once per
  preconditioner named with ``--preconditioners``: ``hf`` is the example's
  defaults (Martens 2010: the gradient on all training cases, CG batches of
  5000 or 7500, lambda0 45, CG <= 250 iterations); ``hf-small`` draws a new
  gradient batch of 1000 cases and CG batch of 250 for every update and
  stops CG after 25 iterations (small-batch HF in the manner of Kiros 2013,
  "Training neural networks with stochastic Hessian-free optimization"):
  many cheap updates instead of a few thorough ones. Its sizes are the best
  of a small grid run once on CURVES seed 0 at 600 s (gradient/CG batch/CG
  cap 2000/500/50, 5000/1000/50, 1000/250/25, 500/125/25, 1000/250/10, and
  2000/500/50 with K-FAC; README), fixed before the other seeds and budgets.
  ``hf-grow`` starts as ``hf-small`` and lets both batches grow by a factor
  1.002 per update (doubling every 347 updates, up to 8 minibatches: 8000 /
  2000 cases; ``BatchDataset(growth=...)``, the geometric sample growth of
  Friedlander & Schmidt 2012): small noisy batches while they make progress,
  larger ones late, when ``hf-small``'s rho stays near 1/2 and lambda climbs.
  The factor was set once from ``hf-small``'s update counts, not searched.
  ``hf-grow-cg-sqrt`` and ``hf-grow-cg`` are ``hf-grow`` with a CG cap that
  grows with the CG batch (``max_cg_exponent`` 0.5 and 1: 25 iterations per
  250-case minibatch times the square root of the number of minibatches, or
  times the number); the square root was kept after one race of both on
  CURVES seed 0 at 1800 s (README) and then run on the other seeds.
  ``hf-small-v8`` is ``hf-small`` measuring its errors (and keeping its best
  parameters) after every 8th update and after the last: every 25-30 s on
  Fashion-MNIST, about as often as the first-order methods, which measure
  after each epoch, instead of every 3-4 s (measuring took 7.5% of
  ``hf-small``'s budget there); ``hf-grow-cg-sqrt-v8`` is ``hf-grow-cg-sqrt``
  measuring as seldom.

Usage::

    python benchmarks/race.py --data curves --budgets 600 --seeds 0 1 2
    python benchmarks/race.py --hf-settings hf-small --methods --seeds 1 2   # only small-batch HF
    python benchmarks/race.py --data curves fashion-mnist --budgets 600 1800 --seeds 0 1 2 --png race.png
    python benchmarks/race.py --seeds 1 2 --lrs adam=0.001 sgd=0.01   # only rates chosen on another seed

Prints one table row per (data, budget, method): the median over seeds of the
final test and training errors (squared error per case), the seeds run and
the learning rate chosen; ``--png`` draws test error against seconds (one
panel per data set and budget, the median seed's curve of each method).
Results land in ``--out`` (one JSON file per run), and runs whose JSON
already exists are not run again, so an interrupted race resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(os.path.dirname(HERE), "examples", "autoencoder.py")

#: HF settings raced, name -> extra arguments of ``examples/autoencoder.py`` (see the module notes).
HF_SETTINGS = {
    "hf": [],
    "hf-small": ["--gradient-batch", "1000", "--cg-batch", "250", "--max-cg", "25"],
    "hf-grow": ["--gradient-batch", "1000", "--cg-batch", "250", "--max-cg", "25", "--batch-growth", "1.002",
                "--max-growth", "8"],
    "hf-grow-cg": ["--gradient-batch", "1000", "--cg-batch", "250", "--max-cg", "25", "--batch-growth", "1.002",
                   "--max-growth", "8", "--max-cg-exponent", "1"],
    "hf-grow-cg-sqrt": ["--gradient-batch", "1000", "--cg-batch", "250", "--max-cg", "25", "--batch-growth",
                        "1.002", "--max-growth", "8", "--max-cg-exponent", "0.5"],
    "hf-small-v8": ["--gradient-batch", "1000", "--cg-batch", "250", "--max-cg", "25", "--validation-frequency", "8"],
    "hf-grow-cg-sqrt-v8": ["--gradient-batch", "1000", "--cg-batch", "250", "--max-cg", "25", "--batch-growth",
                           "1.002", "--max-growth", "8", "--max-cg-exponent", "0.5", "--validation-frequency", "8"],
}

#: Learning-rate grids, fixed before any race (see the module notes).
GRIDS = {
    "sgd": (1e-3, 3e-3, 1e-2, 3e-2),
    "nesterov": (1e-3, 3e-3, 1e-2, 3e-2),
    "adam": (1e-4, 3e-4, 1e-3, 3e-3),
}


def hf_methods(args):
    """The HF runs of the race as ``(name, extra arguments)``: every setting with every preconditioner.

    Names are the setting's, plus ``+PRECONDITIONER`` when there is one (``hf``, ``hf+kfac``,
    ``hf-small``, ``hf-small+kfac``).
    """
    out = []
    for setting, pc in itertools.product(args.hf_settings, args.preconditioners):
        extra = list(HF_SETTINGS[setting]) + ([] if pc == "none" else ["--preconditioner", pc])
        out.append((setting if pc == "none" else f"{setting}+{pc}", extra))
    return out


def method_names(args):
    return [name for name, _ in hf_methods(args)] + list(args.methods)


def runs(args):
    """Every run of the race as ``(key, command)``."""
    out = []
    for data, budget, seed in itertools.product(args.data, args.budgets, args.seeds):
        base = [sys.executable, EXAMPLE, data, "--budget", str(budget), "--seed", str(seed), "--workers", "1",
                "--quiet"]
        for method, extra in hf_methods(args):
            out.append(((data, budget, seed, method, None), base + ["--method", "hf", *extra]))
        for method in args.methods:
            for lr in args.lrs.get(method, GRIDS[method]):
                out.append(((data, budget, seed, method, lr), base + ["--method", method, "--lr", str(lr)]))
    return out


def json_path(args, key):
    data, budget, seed, method, lr = key
    return os.path.join(args.out, f"{data}-{int(budget)}s-seed{seed}-{method}" + ("" if lr is None else f"-lr{lr:g}")
                        + ".json")


def run_one(args, key, cmd):
    path = json_path(args, key)
    if os.path.exists(path):
        return key, path, "kept"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    t0 = time.perf_counter()
    done = subprocess.run(cmd + ["--json", path + ".part"], env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1) or not os.path.exists(path + ".part"):  # 1 without a JSON: a traceback
        sys.stderr.write(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}\n")
        return key, None, "failed"
    os.replace(path + ".part", path)
    return key, path, f"{time.perf_counter() - t0:.0f} s"


def load(args):
    results = {}
    for key, _ in runs(args):
        path = json_path(args, key)
        if os.path.exists(path):
            with open(path) as f:
                results[key] = json.load(f)
    return results


def best_of_grid(results, data, budget, seed, method):
    """The run of ``method`` with the lowest final test error (the grid's best learning rate)."""
    cands = [(r["test_error"], lr, r) for (d, b, s, m, lr), r in results.items()
             if (d, b, s, m) == (data, budget, seed, method)]
    if not cands:
        return None, None
    err, lr, r = min(cands, key=lambda c: (c[0] if c[0] == c[0] else float("inf")))
    return lr, r


def table(args, results):
    methods = method_names(args)
    lines = [f"{'data':<14} {'budget':>6}  {'method':<27} {'test (median)':>13} {'train (median)':>14}  "
             f"{'seeds':<7} learning rates (best of grid, per seed)",
             "-" * 100]
    for data, budget in itertools.product(args.data, args.budgets):
        for m in methods:
            tests, trains, lrs, seeds = [], [], [], []
            for seed in args.seeds:
                lr, r = best_of_grid(results, data, budget, seed, m)
                if r is None:
                    continue
                tests.append(r["test_error"])
                trains.append(r["train_error"])
                lrs.append("-" if lr is None else f"{lr:g}")
                seeds.append(str(seed))
            if not tests:
                continue
            lines.append(f"{data:<14} {int(budget):>6}  {m:<27} {statistics.median(tests):>13.3f} "
                         f"{statistics.median(trains):>14.3f}  {','.join(seeds):<7} {' '.join(lrs)}")
    return "\n".join(lines)


def plot(args, results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(itertools.product(args.data, args.budgets))
    # one colour per method in every panel, given only to methods that ran (tab20 has room for 20)
    methods = [m for m in method_names(args)
               if any(best_of_grid(results, d, b, s, m)[1] is not None for d, b in panels for s in args.seeds)]
    colors = {m: plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")(i) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (data, budget) in zip(axes[0], panels):
        for m in methods:
            per_seed = [best_of_grid(results, data, budget, s, m)[1] for s in args.seeds]
            per_seed = [r for r in per_seed if r is not None]
            if not per_seed:
                continue
            median = sorted(per_seed, key=lambda r: r["test_error"])[len(per_seed) // 2]
            t = [p["seconds"] for p in median["curve"]]
            e = [p["test_error"] for p in median["curve"]]
            ax.plot(t, e, marker=".", color=colors[m], label=f"{m} ({median['test_error']:.2f})")
        ax.set_title(f"{data}, {int(budget)} s (median seed)")
        ax.set_xlabel("seconds")
        ax.set_ylabel("test error (squared error per case)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def parse_lrs(ap, items):
    """``["adam=0.001", "adam=0.0003"]`` -> ``{"adam": (0.001, 0.0003)}``; each rate must be in its grid."""
    chosen = {}
    for item in items:
        method, _, value = item.partition("=")
        if method not in GRIDS:
            ap.error(f"--lrs {item!r}: expected METHOD=LR with METHOD one of {sorted(GRIDS)}")
        try:
            lr = float(value)
        except ValueError:
            ap.error(f"--lrs {item!r}: expected a number after '='")
        in_grid = next((g for g in GRIDS[method] if abs(lr - g) <= 1e-12 * g), None)
        if in_grid is None:
            ap.error(f"--lrs {item!r}: {lr:g} is not in the {method} grid {GRIDS[method]} (fixed before any race)")
        chosen.setdefault(method, []).append(in_grid)
    return {m: tuple(v) for m, v in chosen.items()}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["curves"], choices=["curves", "fashion-mnist"])
    ap.add_argument("--budgets", nargs="+", type=float, default=[600.0], help="wall-clock seconds per run")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="*", default=["sgd", "nesterov", "adam"], choices=sorted(GRIDS))
    ap.add_argument("--preconditioners", nargs="*", default=["none"],
                    help="HF runs, one per preconditioner name ('none' for plain HF; no name: no HF run)")
    ap.add_argument("--hf-settings", nargs="+", default=["hf"], choices=sorted(HF_SETTINGS),
                    help="HF settings, each run with every preconditioner (see HF_SETTINGS)")
    ap.add_argument("--lrs", nargs="*", default=[], metavar="METHOD=LR",
                    help="run only these learning rates of a method's grid (e.g. adam=0.001, chosen on "
                         "another seed); the table then reports the best of the rates run")
    ap.add_argument("--parallel", type=int, default=2, help="runs side by side (one core each)")
    ap.add_argument("--out", default="runs/race", help="folder of the runs' JSON files")
    ap.add_argument("--png", default=None, help="draw test error against seconds into this PNG")
    ap.add_argument("--table-only", action="store_true", help="print the table of the runs already done")
    args = ap.parse_args(argv)
    args.lrs = parse_lrs(ap, args.lrs)
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not args.table_only:
        todo = runs(args)
        print(f"{len(todo)} runs, {args.parallel} at a time, about "
              f"{sum(k[1] for k, _ in todo) / args.parallel / 60:.0f} min", flush=True)
        with ThreadPoolExecutor(args.parallel) as pool:
            for key, path, how in pool.map(lambda kc: run_one(args, *kc), todo):
                print(f"  {key}: {how}", flush=True)
    results = load(args)
    print(table(args, results))
    if args.png:
        print("wrote", plot(args, results, args.png))


if __name__ == "__main__":
    main()
