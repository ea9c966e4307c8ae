"""Time hf_optimizer's gradient, Gauss-Newton products and cost on the reference workloads.

For each workload (tanh RNN, autoencoder; see ``_workloads.py``), dtype and backend,
in ONE process, interleaving the quantities round by round:

* ``cost``: one ``hf_optimizer.cost(batch)``;
* ``gradient``: one ``hf_optimizer.gradient(batch)`` (gradient and costs);
* ``Gv plain``: one product of ``hf_optimizer(..., cache_forward=False)``, which runs the
  forward pass inside every product;
* ``residuals``: ``hf_optimizer.curvature_operator(batch)`` with the default
  ``cache_forward=True``: the direction-independent part of the product (forward pass),
  computed once per CG run, i.e. once per update;
* ``Gv product``: one ``CurvatureOperator.matvec(v)`` of that operator (per CG iteration);
* the GEMM floor of each: the same multiply-adds as plain numpy GEMMs in the row's dtype
  (``_workloads.gemm_floor``).

Run by hand, never by the test suite::

    unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE      # for benchmark commands only
    python benchmarks/curvature.py                # everything (11 min on 2 busy cores, warm caches)
    python benchmarks/curvature.py --workloads rnn --dtypes float32 --backends default
    python benchmarks/curvature.py --small --backends default   # under a minute: checks the script
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import _workloads as W  # noqa: E402

BACKENDS = ("default", "CVM", "NUMBA", "JAX")


class _Collect(logging.Handler):
    """Keeps the library's warnings (e.g. the cached product falling back to the plain one)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def resolve_backend(name):
    """``(mode, note)`` for a backend name, or ``(None, reason)`` with mode ``False`` when unavailable."""
    import pytensor

    if name == "default":
        from hf_symbolic.graph.backend import default_mode

        mode = default_mode()
        return mode, f"default_mode()={mode!r}"
    if name == "CVM":
        if not pytensor.config.cxx:
            return False, "no C++ compiler (pytensor.config.cxx is empty)"
        return "CVM", ""
    if name == "NUMBA":
        try:
            import numba  # noqa: F401
        except ImportError as exc:
            return False, f"numba not importable ({exc})"
        return "NUMBA", ""
    if name == "JAX":
        try:
            import jax  # noqa: F401
        except ImportError as exc:
            return False, f"jax not importable ({exc}); pip install jax jaxlib"
        return "JAX", ""
    return False, f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}"


def measure(wl_name, dtype, backend, args, collect):
    """One row: every quantity for one workload, dtype and backend (floatX = dtype while building)."""
    import pytensor

    with pytensor.config.change_flags(floatX=dtype):
        return _measure(wl_name, dtype, backend, args, collect)


def _measure(wl_name, dtype, backend, args, collect):
    import pytensor
    from threadpoolctl import threadpool_limits

    from hf_symbolic import hf_optimizer

    mode, note = resolve_backend(backend)
    row = dict(workload=wl_name, dtype=dtype, backend=backend, note=note)
    if mode is False:
        row["skipped"] = note
        return row
    row["ldflags"] = pytensor.config.blas__ldflags or "(none)"
    if mode == "JAX":
        import jax
        import pytensor.link.jax.dispatch  # noqa: F401  (sets jax_enable_x64 from floatX at its first import)

        # float64 rows must not be truncated to float32 by JAX
        jax.config.update("jax_enable_x64", dtype == "float64")
    w = W.build(wl_name, dtype=dtype, small=args.small, seed=args.seed, static=(mode == "JAX"))
    batch = list(w.data)
    rng = np.random.default_rng(args.seed + 1)
    collect.messages.clear()
    errors = row["errors"] = {}

    def first_call(name, make):
        """Compile and call once (the JIT of NUMBA and JAX happens here); None when it fails."""
        t = time.perf_counter()
        try:
            out = make()
        except Exception as exc:  # a backend that cannot run this graph: report it, time the rest
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            return None
        row["setup_" + name] = time.perf_counter() - t
        return out

    t0 = time.perf_counter()
    opt = hf_optimizer(w.params, w.inputs, w.s, w.costs, mode=mode)
    opt_plain = hf_optimizer(w.params, w.inputs, w.s, w.costs, mode=mode, cache_forward=False)
    v = rng.standard_normal(opt.layout.size).astype(opt.layout.dtype)
    fns = {}
    if first_call("cost", lambda: opt.cost(batch)) is not None:
        fns["cost"] = lambda: opt.cost(batch)
    g = first_call("gradient", lambda: opt.gradient(batch))
    if g is not None:
        fns["gradient"] = lambda: opt.gradient(batch)
        if np.asarray(g[0]).dtype != np.dtype(dtype):
            errors["dtype"] = f"the gradient came back as {np.asarray(g[0]).dtype}, not {dtype}"
    op_plain = first_call("gv_plain", lambda: opt_plain.curvature_operator(batch))
    gv_plain = None if op_plain is None else first_call("gv_plain", lambda: op_plain.matvec(v))
    if gv_plain is not None:
        fns["gv_plain"] = lambda: op_plain.matvec(v)
    op = first_call("residuals", lambda: opt.curvature_operator(batch))
    gv_cached = None if op is None else first_call("gv_cached", lambda: op.matvec(v))
    if op is not None:
        fns["residuals"] = lambda: opt.curvature_operator(batch)
    if gv_cached is not None:
        fns["gv_cached"] = lambda: op.matvec(v)
    row["setup_total"] = time.perf_counter() - t0
    row["fallback"] = []
    if not fns:
        row["skipped"] = "; ".join(f"{k}: {e}" for k, e in errors.items())
        return row
    row["fallback"] = [m.splitlines()[0][:200] for m in collect.messages if "cached forward pass" in m]
    if row["fallback"]:      # the operator computes the plain product: there is no per-update part to time
        fns.pop("residuals", None)
    row["max_rel_diff"] = (W.max_rel_diff(gv_cached, gv_plain) if gv_cached is not None and gv_plain is not None
                           else None)
    row["n_params"] = opt.layout.size
    for q in ("cost", "gradient", "gv"):
        fns["floor_" + q] = W.gemm_floor(w.gemms[q], dtype=dtype)
        row["macs_" + q] = W.multiply_adds(w.gemms[q])
    # libraries loaded by the first calls (the C backend's BLAS) are limited only now
    threadpool_limits(args.threads)
    if not args._pools_printed:
        W.print_threadpools()
        args._pools_printed = True
    row.update(W.interleaved_medians(fns, reps=args.reps, rounds=args.rounds))
    return row


def print_row(r):
    if "skipped" in r:
        print(f"{r['workload']:4s} {r['dtype']:8s} {r['backend']:8s} SKIPPED: {r['skipped']}", flush=True)
        return
    f = lambda k: W.fmt_s(r.get(k))  # noqa: E731
    print(f"{r['workload']:4s} {r['dtype']:8s} {r['backend']:8s} setup {r['setup_total']:6.1f} s  "
          f"cost {f('cost')}  grad {f('gradient')}  Gv plain {f('gv_plain')}  "
          f"residuals {f('residuals')}  Gv product {f('gv_cached')}  "
          f"floor Gv {f('floor_gv')}  rel.diff {_fmt_diff(r)}", flush=True)
    for m in r["fallback"]:
        print(f"    note: {m}", flush=True)
    for k, e in r["errors"].items():
        print(f"    {k} failed: {e}", flush=True)


def _fmt_diff(r):
    return "–" if r.get("max_rel_diff") is None else f"{r['max_rel_diff']:.1e}"


def _label(r):
    if r["backend"] == "default":
        return f"default ({r['note'].split('=')[-1]})"
    return r["backend"]


def _sum(*xs):
    return None if any(x is None for x in xs) else sum(xs)


def tables(rows):
    """The result as markdown tables (seconds, then ratios), plus notes."""
    done = [r for r in rows if "skipped" not in r]
    lines = []
    if done:
        keys = ("cost", "gradient", "gv_plain", "residuals", "gv_cached", "floor_cost", "floor_gradient", "floor_gv")
        hdr = ["workload", "dtype", "backend", "compile + 1st calls (s)", "cost", "gradient", "Gv plain",
               "residuals (per update)", "Gv product (cached)", "floor cost", "floor grad", "floor Gv"]
        body = [[r["workload"], r["dtype"], _label(r), f"{r['setup_total']:.1f}"] + [W.fmt_s(r.get(k)) for k in keys]
                for r in done]
        lines += ["Seconds per call (median of the round medians):", "", W.markdown_table(hdr, body), ""]
        hdr = ["workload", "dtype", "backend", "Gv plain / grad", "Gv product / grad", "(residuals + product) / grad",
               "plain / product", "cost / floor", "grad / floor", "product / floor", "max rel. diff cached vs plain"]
        body = []
        for r in done:
            g = r.get
            diff = _fmt_diff(r) + (" (fallback: plain)" if r["fallback"] else "")
            body.append([r["workload"], r["dtype"], _label(r),
                         W.fmt_ratio(g("gv_plain"), g("gradient")), W.fmt_ratio(g("gv_cached"), g("gradient")),
                         W.fmt_ratio(_sum(g("residuals"), g("gv_cached")), g("gradient")),
                         W.fmt_ratio(g("gv_plain"), g("gv_cached")),
                         W.fmt_ratio(g("cost"), g("floor_cost")), W.fmt_ratio(g("gradient"), g("floor_gradient")),
                         W.fmt_ratio(g("gv_cached"), g("floor_gv")), diff])
        lines += ["Ratios (same process, interleaved):", "", W.markdown_table(hdr, body), ""]
        seen = {}
        for r in done:
            seen.setdefault(r["workload"], r)
        lines.append("Floor multiply-adds: " + "; ".join(
            f"{k}: cost {r['macs_cost']:.3g}, gradient {r['macs_gradient']:.3g}, Gv {r['macs_gv']:.3g} "
            f"({r['n_params']} parameters)" for k, r in seen.items()))
    for r in rows:
        if "skipped" in r:
            lines.append(f"Skipped {r['workload']} {r['dtype']} {r['backend']}: {r['skipped']}")
        for k, e in r.get("errors", {}).items():
            if "skipped" not in r:
                lines.append(f"Failed {r['workload']} {r['dtype']} {r['backend']} {k}: {e}")
    flags = sorted({r["ldflags"] for r in done if r["backend"] != "JAX"})
    if flags:
        lines.append("C/NUMBA rows: pytensor blas__ldflags=" + ", ".join(flags))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="rnn,ae", help="comma-separated: rnn, ae")
    ap.add_argument("--dtypes", default="float32,float64", help="comma-separated: float32, float64")
    ap.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of {', '.join(BACKENDS)}")
    ap.add_argument("--seed", type=int, default=0)
    W.add_common_arguments(ap)
    args = ap.parse_args(argv)
    args._pools_printed = False
    # float32 JAX rows: an intermediate asks for float64 and JAX (x64 off) says it truncates it, at every call
    warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
    W.check_environment(args.threads)
    import pytensor
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    print(f"# pytensor {pytensor.__version__}  threads={args.threads}  reps={args.reps}  rounds={args.rounds}"
          f"{'  SMALL workloads' if args.small else ''}")
    from hf_symbolic.graph.backend import default_mode

    # resolved once, first: default_mode() may set blas__ldflags=-lopenblas for the whole process,
    # so that the CVM rows link the same BLAS whatever the order of --backends
    print(f"# default_mode()={default_mode()!r}  blas__ldflags={pytensor.config.blas__ldflags!r}  "
          f"HF_SYMBOLIC_MODE={os.environ.get('HF_SYMBOLIC_MODE')!r}")
    collect = _Collect()
    logging.getLogger("hf_symbolic").addHandler(collect)
    rows = []
    t_all = time.perf_counter()
    for wl in args.workloads.split(","):
        for dtype in args.dtypes.split(","):
            for be in args.backends.split(","):
                r = measure(wl.strip(), dtype.strip(), be.strip(), args, collect)
                print_row(r)
                rows.append(r)
    print()
    print(tables(rows))
    print(f"\n# total {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
