"""Time the 100-step memorization task (examples/example_RNN.py) over several seeds.

For each seed, runs the example's ``main`` in this process (fresh model and optimizer;
PyTensor's compile cache on disk is shared, so the first seed pays the cold compile),
then reads back the per-update records the example writes (``--history``: one
``UpdateStats.to_json()`` per line, i.e. ``opt.result.history``) and reports:
solved or not, updates, wall seconds (compile included), training seconds (the sum of
the updates' ``seconds``), compile seconds, and the fraction of the training time in
each of the ``UpdateStats.timings`` buckets: gradient, curvature products, CG
bookkeeping, backtracking, line search, validation, checkpoint; "other" is the rest of
each update. The optimizer compiles its functions before the first update (the script
asks for it, so that update 1 times training only). Then the median time to solve over
the solved seeds.

Run by hand (the full task takes minutes to hours per seed on 2 cores)::

    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE      # for benchmark commands only
    python benchmarks/memorization.py --seeds 1 2 3
    python benchmarks/memorization.py --seeds 1 2 3 -- --updates 200 --budget 7200
    python benchmarks/memorization.py --small --seeds 1 2   # seconds: checks the script

Arguments after ``--`` go to examples/example_RNN.py unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import _workloads as W  # noqa: E402

BUCKETS = ("gradient", "curvature", "cg", "backtracking", "line_search", "validation", "checkpoint")
LABELS = {"gradient": "gradient", "curvature": "curvature products", "cg": "CG bookkeeping",
          "backtracking": "backtracking", "line_search": "line search", "validation": "validation",
          "checkpoint": "checkpoint", "other": "other"}
SMALL = ["--T", "10", "--hidden", "8", "--train", "400", "--valid", "100", "--gradient-batch", "200",
         "--cg-batch", "100", "--max-cg", "20", "--updates", "3"]


def load_example(path):
    """The example script as a module (it is not a package)."""
    spec = importlib.util.spec_from_file_location("example_RNN", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def preload_blas():
    """Load every BLAS the run will use, so that threadpoolctl's limit reaches them all.

    threadpoolctl limits only libraries already loaded: the C backend's OpenBLAS is
    loaded by the first compiled function, so compile and call a tiny product first.
    """
    import numpy as np
    import pytensor
    import pytensor.tensor as pt
    import scipy.linalg  # noqa: F401

    from hf_symbolic.graph.backend import default_mode

    mode = default_mode()
    a = pt.matrix("a", dtype="float64")
    f = pytensor.function([a], pt.dot(a, a), mode=mode)
    f(np.ones((4, 4)))
    return mode


def read_history(path):
    from hf_symbolic.train.stats import UpdateStats

    with open(path, encoding="utf-8") as fh:
        return [UpdateStats.from_json(json.loads(line)) for line in fh if line.strip()]


@contextlib.contextmanager
def recording_optimizers():
    """Make ``hf_symbolic.hf_optimizer`` record the instances the example creates, and compile before training.

    The records give ``opt.result`` after the example's ``main`` returns. Compiling the
    functions training uses before the first update (as the multi-process evaluator
    does anyway) keeps the compile out of update 1's timings; it is reported apart.
    """
    import hf_symbolic

    created = []
    original = hf_symbolic.hf_optimizer

    class Recording(original):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            created.append(self)

        def train(self, *a, **k):
            t0 = time.perf_counter()
            self.compile(("gradient", "cost"))
            if self.curvature == "hessian":
                self.compile(("hessian",))
            elif self.cache_forward:
                self._cached_gv_functions()
            else:
                self.compile(("gauss_newton",))
            self.bench_precompile_seconds = time.perf_counter() - t0
            return super().train(*a, **k)

    Recording.__name__ = Recording.__qualname__ = original.__name__
    hf_symbolic.hf_optimizer = Recording
    try:
        yield created
    finally:
        hf_symbolic.hf_optimizer = original


def run_seed(example, seed, args, outdir):
    history = os.path.join(outdir, f"memorization_seed{seed}.jsonl")
    argv = ["--seed", str(seed), "--history", history, "--plot", os.path.join(outdir, f"memorization_seed{seed}.png")]
    argv += SMALL if args.small else []
    argv += [] if args.verbose else ["--quiet"]
    argv += args.example_args
    buf = io.StringIO()
    t0 = time.perf_counter()
    with recording_optimizers() as created, contextlib.redirect_stdout(buf if not args.verbose else sys.stdout):
        code = example.main(argv)
    wall = time.perf_counter() - t0
    out = buf.getvalue()
    last = [line for line in out.splitlines() if line.startswith(("SOLVED", "NOT SOLVED"))]
    opt = created[-1] if created else None
    if opt is not None and opt.result is not None:
        records, source = list(opt.result.history), "opt.result.history"
    else:  # e.g. --sgd: no hf_optimizer; the history file has the same records
        records, source = read_history(history), history
    train = sum(r.seconds for r in records)
    sums = {k: sum(r.timings.get(k, 0.0) for r in records) for k in BUCKETS}
    sums["other"] = train - sum(sums.values())
    return dict(seed=seed, solved=code == 0, updates=len(records), wall=wall, train=train, sums=sums,
                first=records[0].seconds if records else 0.0,
                compile=getattr(opt, "compile_seconds", float("nan")),
                cg=sum(r.cg_iterations for r in records), source=source,
                line=last[-1] if last else (out.strip().splitlines() or [""])[-1])


def report(rows):
    hdr = ["seed", "solved", "updates", "wall s", "training s", "update 1 s", "compile s", "CG iterations"]
    hdr += [LABELS[k] + " %" for k in (*BUCKETS, "other")]
    body = []
    for r in rows:
        frac = [f"{100 * r['sums'][k] / r['train']:.1f}" if r["train"] else "–" for k in (*BUCKETS, "other")]
        body.append([r["seed"], "yes" if r["solved"] else "no", r["updates"], W.fmt_s(r["wall"]),
                     W.fmt_s(r["train"]), W.fmt_s(r["first"]), W.fmt_s(r["compile"]), r["cg"]] + frac)
    lines = [W.markdown_table(hdr, body), "",
             "wall s: the example's main() (data, model, compile, training); training s: sum of the updates' "
             "seconds (percentages are of it); compile s: hf_optimizer.compile_seconds, done before update 1; "
             "update 1 s: the first update alone (it still holds the JIT of NUMBA/JAX modes). "
             f"Records from {rows[0]['source'] if rows else '-'}."]
    total = sum(r["train"] for r in rows)
    if total:
        lines.append("All seeds: " + ", ".join(
            f"{LABELS[k]} {100 * sum(r['sums'][k] for r in rows) / total:.1f} %" for k in (*BUCKETS, "other")))
    solved = [r for r in rows if r["solved"]]
    if solved:
        lines.append(f"Median time to solve over the {len(solved)} of {len(rows)} solved seeds: "
                     f"{statistics.median(r['wall'] for r in solved):.1f} s wall (compile included), "
                     f"{statistics.median(r['train'] for r in solved):.1f} s of training, "
                     f"{statistics.median(r['updates'] for r in solved):g} updates")
    else:
        lines.append(f"No seed solved the task (0 of {len(rows)}).")
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (threadpoolctl limit)")
    ap.add_argument("--outdir", default=None, help="folder for the history files and plots (default: a new temporary one)")
    ap.add_argument("--example", default=os.path.join(ROOT, "examples", "example_RNN.py"))
    ap.add_argument("--small", action="store_true", help="a tiny task (T=10, 3 updates): checks the script in seconds")
    ap.add_argument("--verbose", action="store_true", help="show the example's per-update lines")
    args = ap.parse_args(argv)
    args.example_args = extra
    W.check_environment(args.threads)
    from threadpoolctl import threadpool_limits

    mode = preload_blas()
    threadpool_limits(args.threads)
    import pytensor

    print(f"# pytensor {pytensor.__version__}  default mode={mode!r}  blas__ldflags={pytensor.config.blas__ldflags!r}  "
          f"threads={args.threads}  example args: {' '.join(extra) or '(defaults)'}{'  SMALL task' if args.small else ''}")
    W.print_threadpools()
    outdir = args.outdir or tempfile.mkdtemp(prefix="hf_memorization_")
    os.makedirs(outdir, exist_ok=True)
    print(f"# histories in {outdir}")
    example = load_example(args.example)
    rows = []
    for seed in args.seeds:
        r = run_seed(example, seed, args, outdir)
        threadpool_limits(args.threads)      # in case the run loaded a new BLAS
        print(f"seed {seed}: {'solved' if r['solved'] else 'not solved'}, {r['updates']} updates, "
              f"{W.fmt_s(r['wall'])} s wall, {W.fmt_s(r['train'])} s training | {r['line']}", flush=True)
        rows.append(r)
    print()
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
