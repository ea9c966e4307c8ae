"""Gauss-Newton products and gradients of hf_symbolic against other implementations.

The same two workloads (tanh RNN, autoencoder; ``_workloads.py``), with identical
weights, data and direction ``v``, are built in each library that is importable:

* ``drasmuss``: the ``hessianfree`` package 0.4.0 (D. Rasmussen; numpy). Its optimizer
  runs the forward pass once per update (``cache_minibatch``: activations, their
  derivatives and the loss curvature) and then every Gv of the CG run
  (``calc_G(v)``) reads those cached arrays. It is timed the same way: the forward
  pass once per update, and the product per call. Its gradient is timed as a fresh
  forward pass plus ``calc_grad`` (what a new batch costs).
* ``backpack``: PyTorch with BackPACK's ``ggn_vector_product_from_plist`` (autograd
  only: a double-backward R-op, the loss Hessian product, a backward pass). The
  forward graph is built once per update and kept, every product reuses it.
* ``torchfunc``: PyTorch's ``torch.func``: per update one ``vjp`` (keeps the forward
  pass for the transposed product); per product one ``jvp`` (forward pass and tangent
  recomputed), the loss-Hessian product, and the stored ``vjp``.

hf_symbolic is timed with ``hf_optimizer`` in its default setup (``cache_forward=True``):
``curvature_operator(batch)`` once per update (the cached forward pass) and
``matvec(v)`` per product; ``Gv plain`` is the product with ``cache_forward=False``.

Conventions, matched here: every library's loss is the mean over cases of the summed
logistic cross-entropy on the output pre-activation ``s`` (``softplus(s) - y s``), so the
Gauss-Newton matrix is ``J^T H J / B`` in all of them. For drasmuss this needs a linear
output layer and a loss class defined on ``s`` (its own ``CrossEntropy`` is defined on
the output *activations*, which gives a different Gauss-Newton matrix); the RNN targets
are NaN except at the last step (its way of reading the loss at one step), and its
recurrent layer has an extra initial-state bias, set to 0 with 0 in ``v`` and left out
of the comparison.

Nothing is installed by this script; the extra ``bench`` of setup.cfg lists the peers::

    pip install hessianfree==0.4.0 torch==2.13.0 backpack-for-pytorch matplotlib
    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE      # for benchmark commands only
    python benchmarks/peers.py                    # both workloads, float32
    python benchmarks/peers.py --small            # seconds: checks the script
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import _workloads as W  # noqa: E402

PEERS = ("drasmuss", "backpack", "torchfunc")


# -- hf_symbolic ------------------------------------------------------------------------

def ours(w, v_parts, mode):
    """Timed callables and results of hf_optimizer on workload ``w``."""
    from hf_symbolic import hf_optimizer

    batch = list(w.data)
    opt = hf_optimizer(w.params, w.inputs, w.s, w.costs, mode=mode)
    plain = hf_optimizer(w.params, w.inputs, w.s, w.costs, mode=mode, cache_forward=False)
    v = opt.layout.flatten(v_parts)
    t0 = time.perf_counter()
    g, costs = opt.gradient(batch)
    op = opt.curvature_operator(batch)
    gv = op.matvec(v)
    op_plain = plain.curvature_operator(batch)
    op_plain.matvec(v)
    setup = time.perf_counter() - t0
    return dict(
        setup=setup, cost=costs[0], gradient=opt.unflatten(g), gv=opt.unflatten(gv),
        fns={"forward": lambda: opt.curvature_operator(batch), "product": lambda: op.matvec(v),
             "gradient": lambda: opt.gradient(batch), "plain": lambda: op_plain.matvec(v)},
        note="hf_optimizer, cached forward pass (curvature_operator once per update, matvec per product)",
    )


# -- drasmuss/hessianfree ---------------------------------------------------------------

def _logit_ce_loss(hf):
    """Logistic cross-entropy on the (linear) output layer, ``softplus(s) - t s``; NaN targets give 0."""
    from scipy.special import expit

    class LogitCrossEntropy(hf.loss_funcs.LossFunction):
        @staticmethod
        def _split(activities, targets):
            s = activities[-1]
            known = ~np.isnan(targets)
            return s, known, np.where(known, targets, 0).astype(s.dtype)

        def loss(self, activities, targets):
            s, known, t = self._split(activities, targets)
            per = np.where(known, np.logaddexp(0, s) - t * s, 0).astype(s.dtype)
            return [None] * (len(activities) - 1) + [per.sum(axis=tuple(range(1, per.ndim)))]

        def d_loss(self, activities, targets):
            s, known, t = self._split(activities, targets)
            return [None] * (len(activities) - 1) + [np.where(known, expit(s) - t, 0).astype(s.dtype)]

        def d2_loss(self, activities, targets):
            s, known, _ = self._split(activities, targets)
            p = expit(s)
            return [None] * (len(activities) - 1) + [np.where(known, p * (1 - p), 0).astype(s.dtype)]

    return LogitCrossEntropy()


def drasmuss(w, v_parts, dtype):
    """Timed callables and results of hessianfree 0.4.0 (FFNet / RNNet) on workload ``w``."""
    import hessianfree as hf

    nl = hf.nl
    if w.name == "rnn":
        H = w.dims["H"]
        shape = [1, H, 1]
        conns = {(0, 1): ("W_in", "b_h"), (1, 2): ("W_out", "b_out"), (1, 1): ("W_hh", None)}
        size = (1 + 1) * H + (H + 1) * 1 + (H + 1) * H
        make = lambda W0: hf.RNNet(shape, layers=[nl.Linear(), nl.Tanh(), nl.Linear()],  # noqa: E731
                                   loss_type=_logit_ce_loss(hf), load_weights=W0, dtype=dtype,
                                   rng=np.random.RandomState(0))
        x, y = w.data
        inputs = np.ascontiguousarray(np.swapaxes(x, 0, 1))          # (B, T, 1): batch-major
        targets = np.full(inputs.shape[:2] + (1,), np.nan, dtype)     # the loss is read at the last step only
        targets[:, -1] = y
    else:
        sizes = w.dims["sizes"]
        code = min(sizes)
        shape = list(sizes)
        conns = {(i, i + 1): (f"W{i}", f"b{i}") for i in range(len(sizes) - 1)}
        size = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
        layers = [nl.Linear()] + [nl.Linear() if n == code else nl.Logistic() for n in sizes[1:-1]] + [nl.Linear()]
        make = lambda W0: hf.FFNet(shape, layers=layers, loss_type=_logit_ce_loss(hf),  # noqa: E731
                                   load_weights=W0, dtype=dtype, rng=np.random.RandomState(0))
        inputs = w.data[0]
        targets = w.data[0]
    net = make(np.zeros(size, dtype))
    names = list(w.values)

    def to_theirs(parts):
        flat = np.zeros(size, dtype)
        d = dict(zip(names, parts))
        for conn, (wn, bn) in conns.items():
            Wv, bv = net.get_weights(flat, conn)
            Wv[...] = d[wn]
            bv[...] = d[bn] if bn is not None else 0      # RNN: their initial-state bias, 0
        return flat

    def from_theirs(flat):
        d = {}
        for conn, (wn, bn) in conns.items():
            Wv, bv = net.get_weights(flat, conn)
            d[wn] = np.array(Wv)
            if bn is not None:
                d[bn] = np.array(bv)
        return [d[n] for n in names]

    net.W[...] = to_theirs([w.values[n] for n in names])
    v = to_theirs(v_parts)
    out = np.zeros(size, dtype)
    t0 = time.perf_counter()
    net.cache_minibatch(inputs, targets)
    cost = float(net.error())
    g = net.calc_grad()
    gv = net.calc_G(v, damping=0, out=out).copy()
    setup = time.perf_counter() - t0

    def gradient():
        net.cache_minibatch(inputs, targets)
        return net.calc_grad()

    return dict(
        setup=setup, cost=cost, gradient=from_theirs(g), gv=from_theirs(gv),
        fns={"forward": lambda: net.cache_minibatch(inputs, targets),
             "product": lambda: net.calc_G(v, damping=0, out=out), "gradient": gradient},
        note="forward (cache_minibatch) once per update, calc_G per product (as its optimizer does)",
    )


# -- PyTorch ------------------------------------------------------------------------------

def _torch_model(w, torch):
    """``(forward(params, data) -> s, loss(s, data) -> scalar, params, data)`` as torch objects."""
    names = list(w.values)
    params = [torch.from_numpy(w.values[n].copy()).requires_grad_(True) for n in names]
    data = [torch.from_numpy(a.copy()) for a in w.data]
    if w.name == "rnn":
        def forward(p, data):
            W_in, W_hh, b_h, W_out, b_out = p
            x = data[0]
            h = torch.zeros(x.shape[1], W_hh.shape[0], dtype=x.dtype)
            for t in range(x.shape[0]):
                h = torch.tanh(x[t] @ W_in + h @ W_hh + b_h)
            return h @ W_out + b_out

        target = lambda data: data[1]  # noqa: E731
    else:
        code = min(w.dims["sizes"])

        def forward(p, data):
            a = data[0]
            n = len(p) // 2
            for i in range(n):
                z = a @ p[2 * i] + p[2 * i + 1]
                if i == n - 1:
                    return z
                a = z if z.shape[1] == code else torch.sigmoid(z)

        target = lambda data: data[0]  # noqa: E731

    def loss(s, data):
        return (torch.nn.functional.softplus(s) - target(data) * s).sum(dim=1).mean()

    return forward, loss, params, data


def backpack(w, v_parts, dtype):
    """Timed callables and results of BackPACK's GGN-vector product on workload ``w``."""
    import torch
    from backpack.hessianfree.ggnvp import ggn_vector_product_from_plist

    forward, loss_fn, params, data = _torch_model(w, torch)
    v = [torch.from_numpy(np.ascontiguousarray(a)) for a in v_parts]
    state = {}

    def fwd():
        s = forward(params, data)
        state["s"], state["loss"] = s, loss_fn(s, data)

    def product():
        return ggn_vector_product_from_plist(state["loss"], state["s"], params, v)

    def gradient():
        s = forward(params, data)
        return torch.autograd.grad(loss_fn(s, data), params)

    t0 = time.perf_counter()
    fwd()
    gv = product()
    g = gradient()
    setup = time.perf_counter() - t0
    return dict(
        setup=setup, cost=float(state["loss"].detach()), gradient=[a.detach().numpy() for a in g],
        gv=[a.detach().numpy() for a in gv],
        fns={"forward": fwd, "product": product, "gradient": gradient},
        note="forward graph kept once per update; ggn_vector_product_from_plist per product",
    )


def torchfunc(w, v_parts, dtype):
    """Timed callables and results of a torch.func Gauss-Newton product (jvp, loss Hessian, stored vjp)."""
    import torch
    from torch.func import grad, jvp, vjp

    forward, loss_fn, params, data = _torch_model(w, torch)
    p0 = tuple(p.detach() for p in params)
    v = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in v_parts)
    f = lambda *p: forward(p, data)  # noqa: E731
    dloss = grad(lambda s: loss_fn(s, data))
    state = {}

    def fwd():
        state["s"], state["vjp"] = vjp(f, *p0)

    def product():
        _, jv = jvp(f, p0, v)
        _, hjv = jvp(dloss, (state["s"],), (jv,))
        return state["vjp"](hjv)

    def gradient():
        return torch.func.grad(lambda *p: loss_fn(forward(p, data), data), argnums=tuple(range(len(p0))))(*p0)

    t0 = time.perf_counter()
    fwd()
    gv = product()
    g = gradient()
    setup = time.perf_counter() - t0
    return dict(
        setup=setup, cost=float(loss_fn(state["s"], data).detach()), gradient=[a.detach().numpy() for a in g],
        gv=[a.detach().numpy() for a in gv],
        fns={"forward": fwd, "product": product, "gradient": gradient},
        note="vjp once per update; per product jvp (forward recomputed) + loss Hessian + stored vjp",
    )


def available(peer):
    """None when importable, else the reason."""
    try:
        if peer == "drasmuss":
            import hessianfree  # noqa: F401
        elif peer == "backpack":
            import backpack  # noqa: F401
            import torch  # noqa: F401
        elif peer == "torchfunc":
            import torch.func  # noqa: F401
        else:
            return f"unknown peer {peer!r}: expected one of {', '.join(PEERS)}"
    except Exception as exc:
        return f"not importable ({type(exc).__name__}: {exc}); pip install the extra 'bench' of setup.cfg"
    return None


# -- driver --------------------------------------------------------------------------------

def compare(res, ref):
    """Relative errors of ``res`` against hf_symbolic's ``ref`` (gradient, Gv, cost)."""
    cat = lambda parts: np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in parts])  # noqa: E731
    return dict(rel_grad=W.max_rel_diff(cat(res["gradient"]), cat(ref["gradient"])),
                rel_gv=W.max_rel_diff(cat(res["gv"]), cat(ref["gv"])),
                rel_cost=abs(res["cost"] - ref["cost"]) / abs(ref["cost"]))


def run_workload(wl, dtype, args, mode):
    """Build and time every implementation on one workload and dtype; returns rows, notes, floor, workload."""
    import pytensor

    with pytensor.config.change_flags(floatX=dtype):
        w = W.build(wl, dtype=dtype, small=args.small, seed=args.seed)
        rng = np.random.default_rng(args.seed + 1)
        v_parts = [rng.standard_normal(a.shape).astype(dtype) for a in w.values.values()]
        impls = {"hf_symbolic": ours(w, v_parts, mode)}
    notes = {}
    for peer in args.peers:
        why = available(peer)
        if why is not None:
            notes[peer] = "skipped: " + why
            continue
        try:
            impls[peer] = globals()[peer](w, v_parts, dtype)
        except Exception as exc:
            notes[peer] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    _limit_threads(args.threads)
    if not args._pools_printed:
        W.print_threadpools()
        args._pools_printed = True
    fns = {f"{k}:{q}": fn for k, r in impls.items() for q, fn in r["fns"].items()}
    fns["floor:gv"] = W.gemm_floor(w.gemms["gv"], dtype=dtype)
    times = W.interleaved_medians(fns, reps=args.reps, rounds=args.rounds)
    rows = []
    ref = impls["hf_symbolic"]
    for k, r in impls.items():
        row = dict(workload=wl, dtype=dtype, impl=k, note=r["note"], setup=r["setup"],
                   **{q: times[f"{k}:{q}"] for q in r["fns"]})
        row.update(compare(r, ref) if k != "hf_symbolic" else {})
        rows.append(row)
    return rows, notes, times["floor:gv"], w


def _limit_threads(n):
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def per_update(r, n):
    """Seconds of one update with ``n`` products: gradient, forward pass for the products, products.

    hf_symbolic computes the gradient on its own (larger) batch and the cached forward
    pass on the CG batch, so both count; the peers' optimizers use one batch for both,
    their gradient already includes the forward pass the products reuse.
    """
    fwd = r["forward"] if r["impl"] == "hf_symbolic" else 0.0
    return r["gradient"] + fwd + n * r["product"]


def table(rows, floor, n):
    ref = next(r for r in rows if r["impl"] == "hf_symbolic")
    hdr = ["implementation", "forward / update (s)", "Gv product (s)", "gradient (s)", "ours / theirs: product",
           "ours / theirs: gradient", f"ours / theirs: update with {n} products", "rel. err. Gv",
           "rel. err. gradient", "rel. err. cost"]
    body = []
    for r in rows:
        is_ref = r["impl"] == "hf_symbolic"
        body.append([
            r["impl"], W.fmt_s(r["forward"]), W.fmt_s(r["product"]), W.fmt_s(r["gradient"]),
            "–" if is_ref else W.fmt_ratio(ref["product"], r["product"]),
            "–" if is_ref else W.fmt_ratio(ref["gradient"], r["gradient"]),
            "–" if is_ref else W.fmt_ratio(per_update(ref, n), per_update(r, n)),
            "(reference)" if is_ref else f"{r['rel_gv']:.1e}",
            "(reference)" if is_ref else f"{r['rel_grad']:.1e}",
            "(reference)" if is_ref else f"{r['rel_cost']:.1e}",
        ])
    extra = (f"Ratios below 1: hf_symbolic is faster. hf_symbolic Gv plain (cache_forward=False): "
             f"{W.fmt_s(ref['plain'])} s; GEMM floor of one product: {W.fmt_s(floor)} s. "
             f"Update = gradient + {n} products (+ hf_symbolic's forward pass on its CG batch).")
    return W.markdown_table(hdr, body) + "\n\n" + extra


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="rnn,ae", help="comma-separated: rnn, ae")
    ap.add_argument("--dtypes", default="float32", help="comma-separated: float32, float64")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}")
    ap.add_argument("--backend", default="default",
                    help="hf_symbolic's PyTensor mode: 'default' (hf_symbolic.graph.backend.default_mode()), CVM, NUMBA, JAX")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--products", type=int, default=50,
                    help="Gv products per update for the per-update column (CG iterations)")
    ap.add_argument("--no-reuse-memory", dest="reuse_memory", action="store_false",
                    help="do not keep freed memory for reuse (hf_symbolic.train.memory; on by default for every "
                         "implementation alike, as hf_optimizer.train does for its own process)")
    W.add_common_arguments(ap)
    args = ap.parse_args(argv)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    args._pools_printed = False
    W.check_environment(args.threads)
    warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
    import pytensor

    from hf_symbolic.graph.backend import default_mode

    mode = default_mode() if args.backend == "default" else args.backend
    print(f"# pytensor {pytensor.__version__}  hf_symbolic mode={mode!r}  blas__ldflags={pytensor.config.blas__ldflags!r}"
          f"  threads={args.threads}  reps={args.reps}  rounds={args.rounds}  products per update={args.products}"
          f"{'  SMALL workloads' if args.small else ''}")
    from importlib import metadata

    versions = []
    for peer, dist in (("drasmuss", "hessianfree"), ("backpack", "torch"), ("backpack", "backpack-for-pytorch")):
        if peer in args.peers or (peer == "backpack" and "torchfunc" in args.peers):
            try:
                versions.append(f"{dist} {metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                versions.append(f"{dist} (not installed)")
    print("# " + "  ".join(versions))
    for peer in args.peers:
        if available(peer) is None and peer != "drasmuss":
            break            # imports torch, so that its threads are limited below
    _limit_threads(args.threads)
    if "torch" in sys.modules:
        print(f"# torch.get_num_threads()={sys.modules['torch'].get_num_threads()}")
    from hf_symbolic.train.memory import available as _glibc, reuse_freed_memory

    print(f"# freed memory reused (glibc mallopt, every implementation): {args.reuse_memory and _glibc()}")
    t_all = time.perf_counter()
    out = []
    with reuse_freed_memory(args.reuse_memory):
        _run_all(args, mode, out)
    print(f"# total {time.perf_counter() - t_all:.0f} s")
    return 0


def _run_all(args, mode, out):
    for wl in [x.strip() for x in args.workloads.split(",")]:
        for dtype in [x.strip() for x in args.dtypes.split(",")]:
            rows, notes, floor, w = run_workload(wl, dtype, args, mode)
            title = f"{wl} ({', '.join(f'{k}={v}' for k, v in w.dims.items())}, {w.n_params} parameters), {dtype}"
            block = [f"### {title}", "", table(rows, floor, args.products), ""]
            block += [f"- {r['impl']}: {r['note']}" for r in rows]
            block += [f"- {k}: {v}" for k, v in notes.items()]
            text = "\n".join(block)
            print(text + "\n", flush=True)
            out.append(text)


if __name__ == "__main__":
    sys.exit(main())
