"""``compile_for_training``: two processes sharing the C modules they build give the functions one process gives.

The two-process cases run in a fresh interpreter with its own empty compile
directory (PyTensor reads ``compiledir`` once, at import); the one-process
reference runs here, on the suite's compile cache (the same C code, so the same
numbers to the last bit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BUILD = r"""
import numpy as np
import pytensor, pytensor.tensor as pt
from hf_symbolic import hf_optimizer

rng = np.random.default_rng(0)
W1 = pytensor.shared(rng.normal(size=(4, 6)), name="W1")
W2 = pytensor.shared(rng.normal(size=(6, 2)) * 0.5, name="W2")
x, y = pt.matrix("x"), pt.matrix("y")
s = pt.dot(pt.tanh(pt.dot(x, W1)), W2)
cost = pt.mean(pt.sum(y * pt.softplus(-s) + (1 - y) * pt.softplus(s), axis=1))
opt = hf_optimizer([W1, W2], [x, y], s, [cost])
"""

# After compile_for_training: what both the subprocesses and the in-process reference report.
MEASURE = r"""
compiled = sorted(name for name, fn in opt._functions.items() if fn is not None)
batch = [rng.normal(size=(5, 4)), (rng.uniform(size=(5, 2)) > 0.5).astype(float)]
g, costs = opt.gradient(batch)
gv = opt.gauss_newton_product(rng.normal(size=opt.layout.size), batch)
measured = {"compiled": compiled, "g": g.tolist(), "cost": costs, "gv": gv.tolist()}
"""

SCRIPT = BUILD + r"""
import json, os, sys
from hf_symbolic.graph.backend import _runs_c
from hf_symbolic.model.parallel_compile import compile_for_training
from pytensor.link.c.basic import get_module_cache

if not _runs_c(opt._mode):
    print(json.dumps({"skip": "no C backend"}))
    sys.exit(0)
notes = []
compile_for_training(opt, processes=int(sys.argv[1]), report=lambda title, dt, note: notes.append([title, note]))
""" + MEASURE + r"""
cache = get_module_cache()
base = os.path.dirname(str(cache.dirname))
print(json.dumps({
    **measured, "notes": notes, "modules": len(cache.module_hash_to_key_data),
    "left": [d for d in os.listdir(base) if d.startswith("hf_symbolic_compile_")],
}))
"""


def run(processes, compiledir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTENSOR_FLAGS=f"compiledir={compiledir}")
    env.pop("HF_SYMBOLIC_MODE", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(processes)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    return out


def run_here(monkeypatch):
    """The one-process reference: ``SCRIPT``'s model and numbers, compiled in this process."""
    from hf_symbolic.graph.backend import _runs_c
    from hf_symbolic.model.parallel_compile import compile_for_training

    monkeypatch.delenv("HF_SYMBOLIC_MODE", raising=False)  # the default mode, as in the subprocesses
    ns = {}
    exec(BUILD, ns)
    opt = ns["opt"]
    if not _runs_c(opt._mode):
        pytest.skip("no C backend")
    compile_for_training(opt, processes=1)
    exec(MEASURE, ns)
    return json.loads(json.dumps(ns["measured"]))  # through JSON, as the subprocesses report it


def test_two_processes_give_the_functions_of_one(tmp_path, monkeypatch):
    serial = run_here(monkeypatch)
    shared = run(2, tmp_path / "two" / "cache")
    # same compiled functions, same numbers to the last bit (the same C code, built elsewhere)
    assert shared["compiled"] == serial["compiled"]
    assert {"gradient", "cost", "gauss_newton_cached"} <= set(shared["compiled"])
    assert shared["g"] == serial["g"] and shared["cost"] == serial["cost"] and shared["gv"] == serial["gv"]
    # the gradient and cost came from the second process, and its modules ended in the shared cache
    notes = dict(shared["notes"])
    assert "second process" in notes["hf_gradient"], shared["notes"]
    assert shared["left"] == [], shared["left"]
    # a warm cache: the second process is stopped at once, nothing new is built (so the
    # modules either process built all landed in the shared cache)
    warm = run(2, tmp_path / "two" / "cache")
    assert not any("second process" in note for _, note in warm["notes"]), warm["notes"]
    assert warm["modules"] == shared["modules"] and warm["g"] == serial["g"] and warm["gv"] == serial["gv"]

