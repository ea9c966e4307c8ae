"""Progress lines of ``train``: one per update when the caller configured no logging, none when asked not to,
no duplicate when the caller configured logging (``hf_symbolic/train/progress.py``).

Each case runs a script in a fresh interpreter: pytest's own logging set-up
would otherwise count as "configured".
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r"""
import logging, sys
import numpy as np, pytensor, pytensor.tensor as pt
from hf_symbolic import BatchDataset, hf_optimizer, sgd_optimizer

method, verbose, setup = sys.argv[1], sys.argv[2], sys.argv[3]
if setup == "configured":
    logging.basicConfig(level=logging.INFO, format="CALLER %(name)s: %(message)s")
rng = np.random.default_rng(0)
W = pytensor.shared(np.zeros((3, 1)), name="W")
x, y = pt.matrix("x"), pt.matrix("y")
s = pt.dot(x, W)
cost = pt.mean(y * pt.softplus(-s) + (1 - y) * pt.softplus(s))
X = rng.normal(size=(40, 3))
Y = (X[:, :1] > 0).astype(float)
data = BatchDataset([X, Y], batch_size=40, seed=1)
kw = {} if verbose == "default" else {"verbose": verbose == "true"}
if method == "hf":
    opt = hf_optimizer([W], [x, y], s, [cost], mode="FAST_COMPILE")
    opt.train(data, data, initial_lambda=1.0, num_updates=3, validation=data, **kw)
else:
    opt = sgd_optimizer([W], [x, y], s, [cost], mode="FAST_COMPILE")
    opt.train(data, learning_rate=0.1, num_updates=3, validation=data, **kw)
for name in ("hf_symbolic.train", "hf_symbolic.sgd"):
    lg = logging.getLogger(name)
    print(f"AFTER {name} handlers={len(lg.handlers)} level={lg.level} propagate={lg.propagate}")
"""

UPDATE = re.compile(r"update (\d+): cost ")


def run(method, verbose, setup):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, method, verbose, setup], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr.splitlines()


def updates(lines, prefix=""):
    """Update numbers of the lines that are exactly ``prefix`` + an update line."""
    return [int(m.group(1)) for line in lines for m in [UPDATE.match(line[len(prefix):])]
            if m and line.startswith(prefix)]


def restored(stdout):
    for name in ("hf_symbolic.train", "hf_symbolic.sgd"):
        assert f"AFTER {name} handlers=0 level=0 propagate=True" in stdout, stdout


@pytest.mark.parametrize("method", ["hf", "sgd"])
def test_unconfigured_logging_shows_one_line_per_update(method):
    stdout, err = run(method, "default", "bare")
    assert updates(err) == [1, 2, 3], err
    if method == "hf":
        line = next(line for line in err if line.startswith("update 2:"))
        for field in ("valid=", "lambda=", "cg=", "s"):
            assert field in line, line
    restored(stdout)


@pytest.mark.parametrize("method", ["hf", "sgd"])
def test_verbose_false_shows_nothing(method):
    stdout, err = run(method, "false", "bare")
    assert updates(err) == [] and not any("update" in line for line in err), err
    restored(stdout)


def test_configured_logging_gets_no_extra_handler():
    stdout, err = run("hf", "default", "configured")
    assert updates(err, "CALLER hf_symbolic.train: ") == [1, 2, 3], err
    assert updates(err) == [], err  # no second, bare copy of any line
    restored(stdout)


def test_verbose_true_with_configured_logging_prints_each_line_once():
    stdout, err = run("sgd", "true", "configured")
    assert updates(err) == [1, 2, 3], err
    assert updates(err, "CALLER hf_symbolic.sgd: ") == [], err
    restored(stdout)


def test_invalid_verbose_is_refused_and_changes_nothing():
    from hf_symbolic.errors import ArgumentError
    from hf_symbolic.train import progress

    logger = logging.getLogger("hf_symbolic.train")
    before = (list(logger.handlers), logger.level, logger.propagate)
    with pytest.raises(ArgumentError, match="verbose"):
        progress.start("yes", "hf_symbolic.train")
    assert (list(logger.handlers), logger.level, logger.propagate) == before
