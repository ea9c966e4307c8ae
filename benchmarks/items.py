"""Time one update's worth of work on item datasets: the per-item path against ItemBatcher.

The two 2012-style clients of issue 14 (float64), each item given as the 2012
``SequenceDataset(data, batch_size=None, ...)`` would serve it:

* ``rnn``: a 1-H-1 tanh RNN (H = 100) on the memorization task, one item per
  100-step sequence (an item is ``[x (T, 1), y (1,)]``, y the first bit), loss
  the cross-entropy of a sigmoid output at the last step; structural damping
  on the hidden units (``h = (tanh(ha) + 1) / 2``, coefficient 0.5);
* ``xor``: a 2-50-40-30-1 sigmoid network on XOR with items of 50 cases.

One update's work: the gradient (with the costs) on the gradient items, then a
curvature operator on the CG items (the forward pass, cached) and ``--products``
matrix-vector products (about what a short CG run does). Per-item path: what
``SerialEvaluator`` does with one batch per item (``hf_optimizer.gradient`` and
``curvature_operator`` per item, averaged). Vectorized: ``ItemBatcher``. Both in
one process, after a warm-up run that compiles everything; the results of the
two paths are compared too.

Run by hand (never by the test suite)::

    python benchmarks/items.py --small           # a reduced-size run, about a minute with warm caches
    python benchmarks/items.py                    # the issue's sizes (per-item path: minutes per update)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_symbolic import hf_optimizer  # noqa: E402  (first: links BLAS)
import numpy as np  # noqa: E402
import pytensor  # noqa: E402
import pytensor.tensor as pt  # noqa: E402

from hf_symbolic.graph.backend import blas_threads  # noqa: E402
from hf_symbolic.model.items import ItemBatcher  # noqa: E402


def rnn_params(rng, n_h):
    """The RNN client's parameters ``Wx, Wh, bh, Wo, bo`` (float64 shared variables)."""
    return [pytensor.shared(rng.normal(size=(1, n_h)) * 0.1, name="Wx"),
            pytensor.shared(rng.normal(size=(n_h, n_h)) / np.sqrt(n_h), name="Wh"),
            pytensor.shared(np.zeros(n_h), name="bh"),
            pytensor.shared(rng.normal(size=(n_h, 1)) * 0.1, name="Wo"),
            pytensor.shared(np.zeros(1), name="bo")]


def rnn_client(seed=0, n_h=100, T=100, n_grad=5000, n_cg=1000):
    rng = np.random.default_rng(seed)
    Wx, Wh, bh, Wo, bo = rnn_params(rng, n_h)
    x, y = pt.matrix("x"), pt.vector("y")
    ha = pytensor.scan(lambda x_t, a: pt.dot(x_t, Wx) + pt.dot(pt.tanh(a), Wh) + bh, sequences=[x],
                       outputs_info=[pt.zeros(n_h)], return_updates=False)
    h = pt.tanh(ha)
    s = pt.dot(h[-1], Wo) + bo
    cost = pt.sum(pt.softplus(s) - y * s)
    err = pt.mean(pt.neq(pt.gt(s, 0), y))

    def items(n):
        X = rng.integers(0, 2, size=(n, T, 1)).astype(float)
        return [[X[i], X[i, 0].copy()] for i in range(n)]

    model = ([Wx, Wh, bh, Wo, bo], [x, y], s, [cost, err], (h + 1) / 2, ha)
    return model, items(n_grad), items(n_cg), 0.5


def xor_client(seed=0, n_case=50, n_grad=10000, n_cg=5000):
    rng = np.random.default_rng(seed)
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

    def items(n):
        X = rng.integers(0, 2, size=(n, n_case, 2)).astype(float)
        Y = (X[..., :1] != X[..., 1:]).astype(float)
        return [[X[i], Y[i]] for i in range(n)]

    return (params, [x, y], s, [cost, err], None, None), items(n_grad), items(n_cg), 0.0


def batched_rnn_reference(grad_items, cg_items, structural, products, threads=1, seed=0, n_h=100):
    """The floor for the ``rnn`` client: the same network written batched by hand, ``(T, n, 1)`` inputs.

    Returns ``(seconds per sequence of the gradient, seconds per sequence of one Gv product)`` on
    the same sequences (gradient items for the gradient, CG items for the products).
    """
    Wx, Wh, bh, Wo, bo = rnn_params(np.random.default_rng(seed), n_h)
    x, y = pt.tensor3("x"), pt.vector("y")
    ha = pytensor.scan(lambda x_t, a: pt.dot(x_t, Wx) + pt.dot(pt.tanh(a), Wh) + bh, sequences=[x],
                       outputs_info=[pt.zeros((x.shape[1], n_h))], return_updates=False)
    h = pt.tanh(ha)
    s = (pt.dot(h[-1], Wo) + bo)[:, 0]
    cost = pt.mean(pt.softplus(s) - y * s)
    opt = hf_optimizer([Wx, Wh, bh, Wo, bo], [x, y], s, [cost], (h + 1) / 2, ha)

    def batch(items):
        X = np.stack([it[0] for it in items], axis=1)
        return [X, np.concatenate([it[1] for it in items])]

    gb, cb = batch(grad_items), batch(cg_items)
    v = np.random.default_rng(1).normal(size=opt.layout.size)
    opt.gradient(gb)
    opt.curvature_operator(cb, 0.0, structural).matvec(v)  # compiles (and loads OpenBLAS) before the limit
    with blas_threads(threads):
        t0 = time.perf_counter()
        opt.gradient(gb)
        t1 = time.perf_counter()
        op = opt.curvature_operator(cb, 0.0, structural)
        op.matvec(v)
        t2 = time.perf_counter()
        for _ in range(products):
            op.matvec(v)
        t3 = time.perf_counter()
    return (t1 - t0) / len(grad_items), (t3 - t2) / products / len(cg_items)


def per_item_update(opt, grad_items, cg_items, structural, v, products):
    """The per-item path; returns (gradient, last product, [seconds of gradient, operator, products])."""
    t = [time.perf_counter()]
    gs, cs = zip(*(opt.gradient(it) for it in grad_items))
    g = np.mean(gs, axis=0)
    t.append(time.perf_counter())
    ops = [opt.curvature_operator(it, 0.0, structural) for it in cg_items]
    t.append(time.perf_counter())
    out = None
    for _ in range(products):
        out = sum(op.matvec(v) for op in ops) / len(ops)
    t.append(time.perf_counter())
    return g, out, np.diff(t)


def batched_update(batcher, grad_items, cg_items, structural, v, products):
    """The same work with :class:`ItemBatcher`."""
    t = [time.perf_counter()]
    g, _ = batcher.gradient(grad_items)
    t.append(time.perf_counter())
    op = batcher.curvature_operator(cg_items, 0.0, structural)
    t.append(time.perf_counter())
    out = None
    for _ in range(products):
        out = op.matvec(v)
    t.append(time.perf_counter())
    return g, out, np.diff(t)


def run(name, client, args):
    model, grad_items, cg_items, structural = client
    p, inputs, s, costs, h, ha = model
    opt = hf_optimizer(p, inputs, s, costs, h, ha)
    batcher = ItemBatcher(p, inputs, s, costs, h, ha, per_item=opt, max_items=args.max_items)
    v = np.random.default_rng(1).normal(size=opt.layout.size)
    t0 = time.perf_counter()
    per_item_update(opt, grad_items[:2], cg_items[:2], structural, v, 1)
    batched_update(batcher, grad_items[:4], cg_items[:4], structural, v, 1)
    warm = time.perf_counter() - t0
    with blas_threads(args.blas_threads):  # after the warm-up: the compiled modules have loaded OpenBLAS
        g1, p1, t_item = per_item_update(opt, grad_items, cg_items, structural, v, args.products)
        g2, p2, t_vec = batched_update(batcher, grad_items, cg_items, structural, v, args.products)
    err = max(np.max(np.abs(g1 - g2)) / np.max(np.abs(g1)), np.max(np.abs(p1 - p2)) / np.max(np.abs(p1)))
    print(f"{name:4s} grad items {len(grad_items):6d}  cg items {len(cg_items):5d}  products {args.products:3d}  "
          f"per-item {t_item.sum():8.2f} s  vectorized {t_vec.sum():7.2f} s  ratio {t_item.sum() / t_vec.sum():6.1f}x  "
          f"max rel diff {err:.1e}  (compile+warm-up {warm:.0f} s)", flush=True)
    for what, a, b in zip(("gradient", "operator (forward pass)", "products"), t_item, t_vec):
        print(f"     {what:24s} per-item {a:8.2f} s  vectorized {b:7.2f} s  ratio {a / b:6.1f}x", flush=True)
    if name == "rnn" and args.batched_reference:
        g_ref, p_ref = batched_rnn_reference(grad_items, cg_items, structural, args.products, args.blas_threads)
        per = [t_item[0] / len(grad_items), t_item[2] / args.products / len(cg_items)]
        vec = [t_vec[0] / len(grad_items), t_vec[2] / args.products / len(cg_items)]
        for what, a, b, c in zip(("gradient", "Gv product"), per, vec, (g_ref, p_ref)):
            print(f"     {what:24s} ms per sequence: per-item {a * 1e3:.3f}  vectorized {b * 1e3:.3f}  "
                  f"batched by hand {c * 1e3:.3f}  (the best ratio batching allows here: {a / c:.1f}x)",
                  flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", nargs="+", default=["rnn", "xor"], choices=["rnn", "xor"])
    ap.add_argument("--small", action="store_true", help="10x fewer items (the ratio, not the issue's sizes)")
    ap.add_argument("--products", type=int, default=10)
    ap.add_argument("--max-items", type=int, default=256)
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads while timing (train's default: 1)")
    ap.add_argument("--batched-reference", action="store_true",
                    help="rnn: also time the same network batched by hand, (T, n, 1) inputs (the floor of batching)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    div = 10 if args.small else 1
    print(f"float64, pytensor {pytensor.__version__}, mode {pytensor.config.mode}, "
          f"blas {pytensor.config.blas__ldflags!r}, {os.cpu_count()} cpus, load average {load:.1f}", flush=True)
    if "rnn" in args.clients:
        run("rnn", rnn_client(n_grad=5000 // div, n_cg=1000 // div), args)
    if "xor" in args.clients:
        run("xor", xor_client(n_grad=10000 // div, n_cg=5000 // div), args)


if __name__ == "__main__":
    main()
