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
    python benchmarks/curvature.py                # everything (about half an hour on 2 cores)
    python benchmarks/curvature.py --workloads rnn --dtypes float32 --backends default
    python benchmarks/curvature.py --small        # seconds: checks the script
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

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
        from hf_symbolic.backend import default_mode

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
    import pytensor
    from threadpoolctl import threadpool_limits

    from hf_symbolic import hf_optimizer

    mode, note = resolve_backend(backend)
    row = dict(workload=wl_name, dtype=dtype, backend=backend, note=note)
    if mode is False:
        row["skipped"] = note
        return row
    row["ldflags"] = pytensor.config.blas__ldflags or "(none)"
    w = W.build(wl_name, dtype=dtype, small=args.small, seed=args.seed, static=(mode == "JAX"))
    batch = list(w.data)
    rng = np.random.default_rng(args.seed + 1)
    collect.messages.clear()
    try:
        t0 = time.perf_counter()
        opt = hf_optimizer(w.params, w.inputs, w.s, w.costs, mode=mode)
        opt_plain = hf_optimizer(w.params, w.inputs, w.s, w.costs, mode=mode, cache_forward=False)
        v = rng.standard_normal(opt.layout.size).astype(opt.layout.dtype)
        # compile and first call (the JIT of NUMBA and JAX happens at the first call)
        t = time.perf_counter(); opt.cost(batch); row["setup_cost"] = time.perf_counter() - t
        t = time.perf_counter(); opt.gradient(batch); row["setup_gradient"] = time.perf_counter() - t
        t = time.perf_counter()
        op_plain = opt_plain.curvature_operator(batch)
        gv_plain = op_plain.matvec(v)
        row["setup_gv_plain"] = time.perf_counter() - t
        t = time.perf_counter()
        op = opt.curvature_operator(batch)
        gv_cached = op.matvec(v)
        row["setup_gv_cached"] = time.perf_counter() - t
        row["setup_total"] = time.perf_counter() - t0
    except Exception as exc:  # a backend that cannot compile these graphs: report and go on
        row["skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return row
    row["fallback"] = [m for m in collect.messages if "cached forward pass unavailable" in m]
    row["max_rel_diff"] = W.max_rel_diff(gv_cached, gv_plain)
    row["n_params"] = opt.layout.size
    fns = {
        "cost": lambda: opt.cost(batch),
        "gradient": lambda: opt.gradient(batch),
        "gv_plain": lambda: op_plain.matvec(v),
        "residuals": lambda: opt.curvature_operator(batch),
        "gv_cached": lambda: op.matvec(v),
    }
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
    print(f"{r['workload']:4s} {r['dtype']:8s} {r['backend']:8s} setup {r['setup_total']:6.1f} s  "
          f"cost {r['cost']:.4f}  grad {r['gradient']:.4f}  Gv plain {r['gv_plain']:.4f}  "
          f"residuals {r['residuals']:.4f}  Gv product {r['gv_cached']:.4f}  "
          f"floor Gv {r['floor_gv']:.4f}  rel.diff {r['max_rel_diff']:.1e}", flush=True)
    for m in r["fallback"]:
        print(f"    note: {m}", flush=True)


def tables(rows):
    done = [r for r in rows if "skipped" not in r]
    lines = []
    if done:
        hdr = ["workload", "dtype", "backend", "compile+1st call (s)", "cost", "gradient", "Gv plain",
               "residuals /update", "Gv product", "floor cost", "floor grad", "floor Gv"]
        body = []
        for r in done:
            body.append([r["workload"], r["dtype"], r["backend"] + ("" if r["backend"] != "default" else f" ({r['note'].split('=')[-1]})"),
                         f"{r['setup_total']:.1f}"] + [W.fmt_s(r[k]) for k in (
                             "cost", "gradient", "gv_plain", "residuals", "gv_cached", "floor_cost", "floor_gradient",
                             "floor_gv")])
        lines += ["Seconds per call (median of round medians):", "", W.markdown_table(hdr, body), ""]
        hdr = ["workload", "dtype", "backend", "Gv plain / grad", "Gv product / grad", "(res + product) / grad",
               "plain / product", "cost / floor", "grad / floor", "product / floor", "max rel. diff cached vs plain"]
        body = []
        for r in done:
            body.append([r["workload"], r["dtype"], r["backend"],
                         W.fmt_ratio(r["gv_plain"], r["gradient"]), W.fmt_ratio(r["gv_cached"], r["gradient"]),
                         W.fmt_ratio(r["residuals"] + r["gv_cached"], r["gradient"]),
                         W.fmt_ratio(r["gv_plain"], r["gv_cached"]),
                         W.fmt_ratio(r["cost"], r["floor_cost"]), W.fmt_ratio(r["gradient"], r["floor_gradient"]),
                         W.fmt_ratio(r["gv_cached"], r["floor_gv"]), f"{r['max_rel_diff']:.1e}"
                         + (" (fallback: plain)" if r["fallback"] else "")])
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
    W.check_environment(args.threads)
    import pytensor
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    print(f"# pytensor {pytensor.__version__}  threads={args.threads}  reps={args.reps}  rounds={args.rounds}"
          f"{'  SMALL workloads' if args.small else ''}")
    from hf_symbolic.backend import default_mode

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
