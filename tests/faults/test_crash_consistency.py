"""SIGKILL at many points of a checkpointed run, resume each time: nothing is lost, the result is bit-identical.

One uninterrupted run of ``crash_worker.py`` (a tiny float64 MLP, 60 updates,
checkpoint after each) is the reference; it keeps a copy of its checkpoint
after every update.  Then the same run is started over and over on a fresh
checkpoint path and killed with ``SIGKILL`` each time, at points drawn by a
seeded generator from every phase of an update: right after the gradient, in
the middle of CG, during backtracking / the line search, during validation
(lambda and the update counter already advanced in memory), at the start of
the checkpoint write, after any member of the archive was written to the
temporary file, with the temporary file complete but not renamed, right after
the rename, and after the update.  The worker stops at the chosen probe point
and waits on stdin, so the kill lands exactly there.  A few more runs are fresh
processes killed at random moments while they run freely.

After every kill:

* the checkpoint is either absent (no update completed yet) or loads, and it
  equals the reference checkpoint of the update it claims, bit for bit (the
  wall-clock fields of the history aside): never torn, never a mixture;
* it is the last completed update: the update being written when the kill
  came is lost only if the rename had not happened, never an earlier one;
* at most the one temporary file of the killed write is left, and the next
  run removes it when it takes the lock.

At the end a fresh process finishes the run and its parameters, and the whole
final checkpoint, equal the reference's bit for bit.
"""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import crash_worker as worker
from hf_symbolic.train.checkpoint import load_checkpoint  # before PyTensor: hf_symbolic links OpenBLAS

import pytensor  # noqa: E402  (only to read the BLAS flags the workers must share)

N_UPDATES = 60
SEED = 20251201
KILLS_PER_PHASE = 3
FREE_RUNNING_KILLS = 4
# how far into a run (in occurrences of the phase) a kill may come
MAX_OCCURRENCE = {"cg": 30, "cost": 8, "write_member": 14}
WRITING = {"write_member", "before_rename"}  # the temporary file exists at these points
WRITTEN = {"after_rename", "after_update"}  # the update being written is already in the checkpoint
WORKER = Path(worker.__file__).resolve()
REPO = WORKER.parent.parent
TIMEOUT = 240


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    flags = env.get("PYTENSOR_FLAGS", "")  # compile exactly like the other processes of this test
    if "blas__ldflags" not in flags:
        env["PYTENSOR_FLAGS"] = ",".join(f for f in (flags, f"blas__ldflags={pytensor.config.blas__ldflags}") if f)
    return env


def _worker_cmd(checkpoint, out, probe="off", snapshots=None):
    cmd = [sys.executable, str(WORKER), "--checkpoint", str(checkpoint), "--num-updates", str(N_UPDATES),
           "--out", str(out), "--probe", probe]
    return cmd + (["--snapshots", str(snapshots)] if snapshots else [])


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (a fresh process), with a copy of its checkpoint after every update."""
    d = tmp_path_factory.mktemp("reference")
    (d / "snapshots").mkdir()
    with open(d / "stderr.txt", "wb") as err:
        proc = subprocess.run(_worker_cmd(d / "run.ckpt", d / "out.json", snapshots=d / "snapshots"),
                              env=_env(), stdout=subprocess.DEVNULL, stderr=err, timeout=TIMEOUT)
    assert proc.returncode == 0, (d / "stderr.txt").read_text()[-3000:]
    out = _read_json(d / "out.json")
    assert out["status"] == "num_updates" and out["updates"] == N_UPDATES
    return {"x": worker.from_exact_floats(out["x"]), "checkpoint": d / "run.ckpt", "snapshots": d / "snapshots"}


class Server:
    """``crash_worker.py --serve``: forks runs that stop at every probe point until told to go on."""

    def __init__(self, stderr_path):
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, env=_env())
        self.watchdog = threading.Timer(TIMEOUT, self.proc.kill)  # a hang fails the test instead of blocking it
        self.watchdog.start()
        assert self._line() == ["ready"]

    def _line(self):
        line = self.proc.stdout.readline()
        assert line, f"the server ended: {Path(self.stderr_path).read_text()[-3000:]}"
        return line.decode("ascii").split()

    def _send(self, text):
        self.proc.stdin.write(text.encode("ascii") + b"\n")
        self.proc.stdin.flush()

    def run_until(self, checkpoint, out, phase, occurrence):
        """Run until the ``occurrence``-th probe point of ``phase``, SIGKILL the run there; return that update.

        Returns None if the run ended before that point.
        """
        self._send(json.dumps({"checkpoint": str(checkpoint), "num_updates": N_UPDATES, "out": str(out),
                               "probe": "pause"}))
        tag, pid = self._line()
        assert tag == "pid"
        pid, seen = int(pid), 0
        while True:
            words = self._line()
            if words[0] == "exit":
                assert words == ["exit", str(pid), "0"], Path(self.stderr_path).read_text()[-3000:]
                return None
            assert words[0] == "@", words
            seen += words[1] == phase
            if seen == occurrence:
                os.kill(pid, signal.SIGKILL)  # the run is paused right at the probe point
                assert self._line() == ["exit", str(pid), str(-signal.SIGKILL)]
                return int(words[2])
            self._send("")

    def close(self):
        self.watchdog.cancel()
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self._err.close()


def _kill_free_running(checkpoint, out, after_lines, stderr_path):
    """A fresh process that runs freely, killed once it has reported ``after_lines`` probe points."""
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(_worker_cmd(checkpoint, out, probe="report"), stdout=subprocess.PIPE, stderr=err,
                                env=_env())
        watchdog = threading.Timer(TIMEOUT, proc.kill)
        watchdog.start()
        try:
            for _ in range(after_lines):
                if not proc.stdout.readline():
                    break
            proc.kill()
            proc.stdout.close()
            code = proc.wait(timeout=30)
        finally:
            watchdog.cancel()
    assert code in (0, -signal.SIGKILL), Path(stderr_path).read_text()[-3000:]
    return code == -signal.SIGKILL


def _plan(rng):
    """The kills, in order: every phase KILLS_PER_PHASE times (paused runs) and a few free-running ones."""
    plan = [("paused", phase, int(rng.integers(1, MAX_OCCURRENCE.get(phase, 2) + 1)))
            for phase in worker.PHASES for _ in range(KILLS_PER_PHASE)]
    plan = [plan[i] for i in rng.permutation(len(plan))]
    for _ in range(FREE_RUNNING_KILLS):
        plan.insert(int(rng.integers(0, len(plan) + 1)), ("free", None, int(rng.integers(5, 60))))
    return plan


def _temporaries(directory):
    return sorted(f for f in os.listdir(directory) if f.startswith(".run.ckpt.") and f.endswith(".tmp"))


def test_sigkill_anywhere_then_resume_loses_nothing_and_ends_bit_identical(tmp_path, reference):
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    run_dir.mkdir()
    out_dir.mkdir()
    checkpoint = run_dir / "run.ckpt"
    plan = _plan(np.random.default_rng(SEED))
    server = Server(tmp_path / "server_stderr.txt")
    last, kills = 0, []
    try:
        for i, (kind, phase, occurrence) in enumerate(plan):
            out = out_dir / f"{i}.json"
            if kind == "paused":
                update = server.run_until(checkpoint, out, phase, occurrence)
                assert update is not None, f"the run finished before kill {i}: raise N_UPDATES"
                expected = update if phase in WRITTEN else update - 1
            else:
                assert _kill_free_running(checkpoint, out, occurrence, tmp_path / f"stderr_{i}.txt"), \
                    f"the run finished before kill {i}: raise N_UPDATES"
                expected = None
            temporaries = _temporaries(run_dir)
            if kind == "paused":
                assert len(temporaries) == (1 if phase in WRITING else 0), (phase, temporaries)
            else:
                assert len(temporaries) <= 1, temporaries  # the previous run's were removed
            if checkpoint.exists():
                _, meta = load_checkpoint(checkpoint)  # never torn: it always loads
                done = meta["update"]
                worker.assert_same_checkpoint(checkpoint, reference["snapshots"] / f"{done}.ckpt")
            else:
                done = 0
            assert done >= last, f"kill {i} ({phase}) lost completed updates: {last} -> {done}"
            if expected is not None:
                assert done == expected, (i, phase, occurrence)
            kills.append((kind, phase, done))
            last = done
    finally:
        server.close()

    assert len(kills) >= 20
    assert {phase for _, phase, _ in kills} >= set(worker.PHASES)
    assert sum(phase in WRITING for _, phase, _ in kills) >= 2 * KILLS_PER_PHASE  # inside the write itself
    assert 0 < last < N_UPDATES

    # a fresh process resumes from the last checkpoint and finishes the run
    with open(tmp_path / "final_stderr.txt", "wb") as err:
        proc = subprocess.run(_worker_cmd(checkpoint, out_dir / "final.json"), env=_env(),
                              stdout=subprocess.DEVNULL, stderr=err, timeout=TIMEOUT)
    assert proc.returncode == 0, (tmp_path / "final_stderr.txt").read_text()[-3000:]
    final = _read_json(out_dir / "final.json")
    assert final["status"] == "num_updates" and final["updates"] == N_UPDATES
    x = worker.from_exact_floats(final["x"])
    assert x.tobytes() == reference["x"].tobytes()
    worker.assert_same_checkpoint(checkpoint, reference["checkpoint"])
    assert sorted(os.listdir(run_dir)) == ["run.ckpt", "run.ckpt.lock"]  # no temporary file left over
