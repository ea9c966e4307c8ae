"""A short checkpointed HF run of a tiny float64 MLP that a test can SIGKILL at chosen points.

``tests/test_crash_consistency.py`` runs this script as a subprocess, kills it,
runs it again (it resumes from the checkpoint), and so on::

    python tests/crash_worker.py --checkpoint run.ckpt --num-updates 30 --out out.json \
        [--probe {off,report,pause}] [--snapshots DIR]
    python tests/crash_worker.py --serve

``--serve`` builds the model once, then reads JSON commands on stdin, one per
line (``{"checkpoint": ..., "num_updates": ..., "out": ..., "probe": ...}``),
and forks one run per command: the child writes ``pid <pid>`` first, and when it
has ended, the server writes ``exit <pid> <exit code>`` (``-9`` after a
``SIGKILL``).  Forked runs start as a fresh process would (the server never
trains) but without paying for the imports and the compilation again.

Probe points
------------
With ``--probe report`` or ``--probe pause`` the run writes one line
``@ <phase> <update>`` on stdout at each point where the test may kill it;
with ``pause`` it then waits for one line on stdin before going on, so that a
``SIGKILL`` sent on reading the line lands exactly there.  The phases, in the
order they occur within one update:

``gradient``       the gradient and costs of the update were just computed;
``cg``             a curvature product inside CG was just computed;
``cost``           an objective value (backtracking, line search) was computed;
``validation``     the validation costs were computed (lambda and the update
                   counter are already advanced in memory);
``write_start``    the checkpoint write begins (nothing written yet);
``write_member``   one member of the checkpoint archive was written to the
                   temporary file (the archive is incomplete);
``before_rename``  the temporary file is complete and ``fsync``-ed, not renamed;
``after_rename``   the new checkpoint replaced the old one (directory not yet
                   ``fsync``-ed);
``after_update``   the update, its checkpoint and its history are done.

With ``--snapshots DIR`` the checkpoint is copied to ``DIR/<update>.ckpt``
after each update, for the test's reference of every intermediate state.  On
completion the script writes a JSON summary to ``--out``: the returned
parameters as exact float64 bit patterns, the status and the update count.

The module also gives the model and datasets to in-process tests
(:func:`build_optimizer`, :func:`make_datasets`, :data:`TRAIN_OPTIONS`,
:func:`run`) and a comparison of checkpoints (:func:`assert_same_checkpoint`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np

MODE = "FAST_COMPILE"
N_IN, N_HIDDEN = 3, 4
N_TRAIN, N_VALID = 48, 16
GRADIENT_BATCH, CG_BATCH = 24, 12
TRAIN_OPTIONS = dict(initial_lambda=1.0, max_cg_iterations=12)
PHASES = ("gradient", "cg", "cost", "validation", "write_start", "write_member", "before_rename",
          "after_rename", "after_update")


def build_optimizer(mode=MODE):
    """A 3-4-1 sigmoid MLP with a cross-entropy cost: ``(hf_optimizer, initial flat parameters)``."""
    import pytensor
    import pytensor.tensor as pt

    from hf_symbolic import hf_optimizer

    rng = np.random.default_rng(7)
    W1 = pytensor.shared(rng.normal(size=(N_IN, N_HIDDEN)) * 0.5, name="W1")
    b1 = pytensor.shared(np.zeros(N_HIDDEN), name="b1")
    W2 = pytensor.shared(rng.normal(size=(N_HIDDEN, 1)) * 0.5, name="W2")
    b2 = pytensor.shared(np.zeros(1), name="b2")
    x, y = pt.matrix("x", dtype="float64"), pt.matrix("y", dtype="float64")
    s = pt.dot(pt.tanh(pt.dot(x, W1) + b1), W2) + b2
    cost = pt.mean(pt.softplus(s) - y * s)
    error = pt.mean(pt.neq(pt.gt(s, 0), pt.gt(y, 0.5)))
    opt = hf_optimizer([W1, b1, W2, b2], [x, y], s, [cost, error], mode=mode)
    return opt, opt.get_flat()


def make_data(n, rng):
    """``n`` cases of a noisy XOR-like task on 3 inputs."""
    X = rng.normal(size=(n, N_IN))
    Y = ((X[:, 0] * X[:, 1] + 0.3 * X[:, 2]) > 0).astype(np.float64)[:, None]
    return X, Y


def make_datasets():
    """``(gradient, cg, validation)`` datasets with their own seeds (so a resumed run replays exactly)."""
    from hf_symbolic import BatchDataset

    rng = np.random.default_rng(2025)
    train, valid = make_data(N_TRAIN, rng), make_data(N_VALID, rng)
    return (BatchDataset(list(train), GRADIENT_BATCH, seed=11),
            BatchDataset(list(train), CG_BATCH, seed=12),
            BatchDataset(list(valid), N_VALID, seed=13))


def exact_floats(x) -> list:
    """Float64 values as hex bit patterns (JSON carries them bit for bit)."""
    return [struct.pack("<d", float(v)).hex() for v in np.asarray(x, dtype=np.float64).ravel()]


def from_exact_floats(hexes) -> np.ndarray:
    return np.array([struct.unpack("<d", bytes.fromhex(h))[0] for h in hexes], dtype=np.float64)


def assert_same_checkpoint(path_a, path_b):
    """Equal arrays (dtype and bits) and metadata, the wall-clock fields of the history aside."""
    from hf_symbolic.train.checkpoint import load_checkpoint

    arrays_a, meta_a = load_checkpoint(path_a)
    arrays_b, meta_b = load_checkpoint(path_b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for name in arrays_a:
        assert arrays_a[name].dtype == arrays_b[name].dtype, name
        assert arrays_a[name].tobytes() == arrays_b[name].tobytes(), name
    for meta in (meta_a, meta_b):
        for record in meta["history"]:
            del record["seconds"], record["timings"]
    assert json.dumps(meta_a, sort_keys=True) == json.dumps(meta_b, sort_keys=True)


class _Probe:
    """Reports probe points on stdout and, in ``pause`` mode, waits for a line on stdin after each."""

    def __init__(self, mode):
        self.mode = mode
        self.update = 0

    def __call__(self, phase):
        if self.mode == "off":
            return
        os.write(1, f"@ {phase} {self.update}\n".encode("ascii"))
        if self.mode == "pause" and _read_line() != b"":
            raise SystemExit("expected an empty line on stdin to go on from a probe point (stdin closed?)")


def install_probes(probe):
    """Wrap the training loop, the evaluator and the checkpoint write so that they call ``probe``."""
    import hf_symbolic.evaluate as evaluate
    import hf_symbolic.train.hf_step as hf_step
    import hf_symbolic.train.loop as training

    make_evaluator = evaluate.EVALUATORS["serial"]

    def probed_evaluator(opt, **settings):
        ev = make_evaluator(opt, **settings)
        gradient, matvec, cost = ev.gradient, ev.matvec, ev.cost

        def probed_gradient(key):
            out = gradient(key)
            probe("gradient")
            return out

        def probed_matvec(v):
            out = matvec(v)
            probe("cg")
            return out

        def probed_cost(key):
            out = cost(key)
            probe("cost")
            return out

        ev.gradient, ev.matvec, ev.cost = probed_gradient, probed_matvec, probed_cost
        return ev

    evaluate.EVALUATORS["serial"] = probed_evaluator

    one_update = hf_step.HFStep.step

    def probed_one_update(self, run, u):
        probe.update = u
        return one_update(self, run, u)

    hf_step.HFStep.step = probed_one_update

    validate = training.Run.validate

    def probed_validate(*args):
        out = validate(*args)
        if out is not None:
            probe("validation")
        return out

    training.Run.validate = probed_validate

    save = training.save_checkpoint

    def probed_save(*args, **kwargs):
        probe("write_start")
        return save(*args, **kwargs)

    training.save_checkpoint = probed_save

    write_array = np.lib.format.write_array

    def probed_write_array(*args, **kwargs):
        out = write_array(*args, **kwargs)
        probe("write_member")
        return out

    np.lib.format.write_array = probed_write_array

    replace = os.replace

    def probed_replace(src, dst, *args, **kwargs):
        probe("before_rename")
        out = replace(src, dst, *args, **kwargs)
        probe("after_rename")
        return out

    os.replace = probed_replace


def run(opt, theta0, num_updates, checkpoint, *, callback=None):
    """Train ``opt`` from ``theta0`` (or from ``checkpoint`` when it exists) up to ``num_updates``."""
    opt.set_flat(theta0)
    gradient, cg, validation = make_datasets()
    opt.train(gradient, cg, num_updates=num_updates, validation=validation, save_progress=checkpoint,
              callback=callback, **TRAIN_OPTIONS)
    return opt.result


def _summary(result) -> dict:
    return {"x": exact_floats(result.x), "status": result.status, "updates": result.updates}


def _run_and_report(opt, theta0, probe, args):
    def callback(stats):
        if args.snapshots:
            shutil.copyfile(args.checkpoint, os.path.join(args.snapshots, f"{stats.update}.ckpt"))
        probe("after_update")

    result = run(opt, theta0, args.num_updates, args.checkpoint, callback=callback)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(_summary(result), f)


def _read_line(fd=0):
    """One line from ``fd`` without its newline, None at end of file.

    Read byte by byte, unbuffered, so that a forked child and its parent can
    take turns reading the same pipe.
    """
    out = bytearray()
    while True:
        ch = os.read(fd, 1)
        if not ch:
            return bytes(out) if out else None
        if ch == b"\n":
            return bytes(out)
        out += ch


def serve(opt, theta0, probe):
    """Fork one run per JSON command line on stdin; report ``pid <pid>`` (from the child) and ``exit <pid> <code>``.

    The optimizer is built and its functions compiled once, here; each run is
    a forked child that starts from that state, as a fresh process would
    (nothing has been trained in this process), and resumes from its checkpoint.
    """
    grad, _, _ = make_datasets()
    batch = next(grad.iterate(update=False))
    opt.gradient(batch), opt.cost(batch), opt.gauss_newton_product(np.zeros(opt.layout.size), batch)  # compile
    opt.set_flat(theta0)
    os.write(1, b"ready\n")
    while True:
        line = _read_line()
        if line is None:
            return 0
        if not line.strip():
            continue
        args = argparse.Namespace(snapshots=None, **json.loads(line))
        pid = os.fork()
        if pid == 0:  # the run
            code = 1
            try:
                os.write(1, f"pid {os.getpid()}\n".encode("ascii"))
                probe.mode = args.probe
                _run_and_report(opt, theta0, probe, args)
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        os.write(1, f"exit {pid} {os.waitstatus_to_exitcode(status)}\n".encode("ascii"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true",
                        help="build once, then fork one run per JSON command line on stdin")
    parser.add_argument("--checkpoint")
    parser.add_argument("--num-updates", type=int)
    parser.add_argument("--out", help="JSON summary written here on completion")
    parser.add_argument("--probe", choices=("off", "report", "pause"), default="off")
    parser.add_argument("--snapshots", default=None, help="copy the checkpoint here after every update")
    args = parser.parse_args(argv)
    if not args.serve and None in (args.checkpoint, args.num_updates, args.out):
        parser.error("--checkpoint, --num-updates and --out are required without --serve")

    opt, theta0 = build_optimizer()
    probe = _Probe(args.probe)
    install_probes(probe)
    if args.serve:
        return serve(opt, theta0, probe)
    _run_and_report(opt, theta0, probe, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
