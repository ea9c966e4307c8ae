"""Seconds per HF update of the two 2012-style clients: the code of an earlier commit against this tree.

Issue 14 measured its two clients (one small item per sequence or minibatch,
``SequenceDataset(..., batch_size=None)``, float64) on the code of its day:

* ``rnn``: a 1-100-1 tanh RNN on the memorization task (one item per 100-step
  sequence), gradient batches of 5000 items, CG batches of 1000, structural
  damping ``mu=1`` on ``(h + 1) / 2``, lambda0 0.5, no preconditioner;
* ``xor``: a 2-50-40-30-1 sigmoid network on XOR, items of 50 cases, gradient
  batches of 10000 items, CG batches of 5000.

This script runs the same clients, unchanged and on the same data, through
``hf_optimizer(...).train`` of

1. the tree of ``--commit`` (default ``e0e6e4f``, the code the issue measured),
   checked out in a temporary git worktree and imported from there, with the
   environment as given (a user's default) and, with ``--old-one-thread``, also with
   ``OPENBLAS_NUM_THREADS=1``;
2. this tree's per-item path (``evaluator="serial"``);
3. this tree's default evaluator (the item-vectorized model for the RNN client).

one after the other, in subprocesses of one run, and prints the seconds of the
last of ``--updates`` updates (the first compiles) and its CG iterations. Only
the 2012 interface is used, so the client runs on both trees as written.

Run by hand (never by the test suite), on an otherwise idle machine::

    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE      # for benchmark commands only
    python benchmarks/items_then_now.py --clients rnn xor --old-one-thread
    python benchmarks/items_then_now.py --small   # seconds: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def client(name, seed, small):
    """The client's ``(model, train_data, gradient items, CG items, train kwargs)``; 2012 interface only."""
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    rng = np.random.default_rng(seed)
    if name == "rnn":
        n_h, T, n_train, n_grad, n_cg = (8, 10, 400, 200, 100) if small else (100, 100, 20000, 5000, 1000)
        Wx = pytensor.shared(rng.normal(size=(1, n_h)) * 0.1, name="Wx")
        Wh = pytensor.shared(rng.normal(size=(n_h, n_h)) / np.sqrt(n_h), name="Wh")
        bh = pytensor.shared(np.zeros(n_h), name="bh")
        Wo = pytensor.shared(rng.normal(size=(n_h, 1)) * 0.1, name="Wo")
        bo = pytensor.shared(np.zeros(1), name="bo")
        x, y = pt.matrix("x"), pt.vector("y")
        ha = pytensor.scan(lambda x_t, a: pt.dot(x_t, Wx) + pt.dot(pt.tanh(a), Wh) + bh, sequences=[x],
                           outputs_info=[pt.zeros(n_h)], return_updates=False)
        h = pt.tanh(ha)
        s = pt.dot(h[-1], Wo) + bo
        cost = pt.sum(pt.softplus(s) - y * s)
        err = pt.mean(pt.neq(pt.gt(s, 0), y))
        X = rng.integers(0, 2, size=(n_train, T, 1)).astype(np.float64)
        data = [list(X), [x_[0].copy() for x_ in X]]
        model = ([Wx, Wh, bh, Wo, bo], [x, y], s, [cost, err], (h + 1) / 2, ha)
        return model, data, n_grad, n_cg, dict(initial_lambda=0.5, mu=1.0)
    if name == "xor":
        n_case, n_train, n_grad, n_cg = (50, 400, 200, 100) if small else (50, 20000, 10000, 5000)
        sizes = (2, 50, 40, 30, 1)
        params = []
        x, y = pt.matrix("x"), pt.matrix("y")
        a = x
        for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
            W = pytensor.shared(rng.normal(size=(m, n)) / np.sqrt(m), name=f"W{i}")
            b = pytensor.shared(np.zeros(n), name=f"b{i}")
            params += [W, b]
            pre = pt.dot(a, W) + b
            a = pt.sigmoid(pre)
        s = pre
        cost = pt.mean(pt.sum(pt.softplus(s) - y * s, axis=1))
        err = pt.mean(pt.neq(pt.gt(s, 0), y))
        X = rng.integers(0, 2, size=(n_train, n_case, 2)).astype(np.float64)
        Y = (X[..., :1] != X[..., 1:]).astype(np.float64)
        model = (params, [x, y], s, [cost, err], None, None)
        return model, [list(X), list(Y)], n_grad, n_cg, dict(initial_lambda=0.1, mu=0.0)
    raise ValueError(f"unknown client {name!r}; expected 'rnn' or 'xor'")


def child(args):
    """Run ``--updates`` HF updates of one client with whatever ``hf_symbolic`` is first on the path."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    import hf_symbolic
    from hf_symbolic import SequenceDataset, hf_optimizer

    model, data, n_grad, n_cg, kw = client(args.client, args.seed, args.small)
    grad_ds = SequenceDataset(data, batch_size=None, number_batches=n_grad, seed=args.seed)
    cg_ds = SequenceDataset(data, batch_size=None, number_batches=n_cg, seed=args.seed + 1)
    opt = hf_optimizer(*model)
    if args.evaluator:
        kw["evaluator"] = args.evaluator
    stats = []
    t0 = time.perf_counter()
    opt.train(grad_ds, cg_ds, preconditioner=False, num_updates=args.updates,
              callback=lambda st: stats.append((st.seconds, st.cg_iterations, float(st.costs[0]))), **kw)
    wall = time.perf_counter() - t0
    print("RESULT " + json.dumps({"package": os.path.dirname(hf_symbolic.__file__), "updates": stats,
                                  "wall": wall}), flush=True)


def run_child(tree, name, args, evaluator=None, env_extra=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--client", name, "--seed", str(args.seed),
           "--updates", str(args.updates)] + (["--small"] if args.small else [])
    if evaluator:
        cmd += ["--evaluator", evaluator]
    env = dict(os.environ, PYTHONPATH=tree, **(env_extra or {}))
    out = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{name} on {tree} failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    if os.path.realpath(res["package"]) != os.path.realpath(os.path.join(tree, "hf_symbolic")):
        raise RuntimeError(f"the child imported {res['package']}, not the tree {tree}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--commit", default="e0e6e4f", help="the earlier tree (a git commit of this repository)")
    ap.add_argument("--clients", nargs="+", default=["rnn", "xor"], choices=["rnn", "xor"])
    ap.add_argument("--updates", type=int, default=2, help="updates per run; the last one is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--old-one-thread", action="store_true",
                    help="also run the earlier tree with OPENBLAS_NUM_THREADS=1")
    ap.add_argument("--small", action="store_true", help="tiny clients: checks the script in seconds")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--evaluator", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    sys.path.insert(0, ROOT)
    from examples._common import cpu_model

    old = tempfile.mkdtemp(prefix="hf_old_")
    made = subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-f", old, args.commit],
                          capture_output=True, text=True)
    if made.returncode:
        os.rmdir(old)
        raise SystemExit(f"cannot check out --commit {args.commit!r} of {ROOT} (a commit of this repository's "
                         f"history was expected; a shallow clone may not have it): {made.stderr.strip()}")
    print(f"earlier tree: commit {args.commit} in {old}; this tree: {ROOT}; CPU {cpu_model()}; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}", flush=True)
    try:
        for name in args.clients:
            runs = [(f"{args.commit} (per item)", old, None, None)]
            if args.old_one_thread:
                runs.append((f"{args.commit}, 1 BLAS thread", old, None, {"OPENBLAS_NUM_THREADS": "1"}))
            runs += [("this tree, per item", ROOT, "serial", None), ("this tree, default", ROOT, None, None)]
            rows = []
            for label, tree, evaluator, env_extra in runs:
                res = run_child(tree, name, args, evaluator, env_extra)
                sec, cg, cost = res["updates"][-1]
                rows.append((label, sec, cg, cost))
                print(f"{name:4s} {label:28s} update {len(res['updates'])}: {sec:8.2f} s, {cg:3d} CG iterations "
                      f"({1000 * sec / max(cg, 1):7.1f} ms per iteration), cost {cost:.6g}", flush=True)
            base = rows[0][1]
            for label, sec, _, _ in rows[1:]:
                print(f"{name:4s} {args.commit} per item / {label}: {base / sec:.1f}x", flush=True)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", old], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
