"""Run the pathological suite (tasks x T x seeds x methods) and print its success table.

Each run is ``examples/pathological.py TASK --T T --seed S --method M --budget B
--workers W --json FILE [extra args]`` in its own process. Its record (the
example's ``--json``: verdict on 10000 fresh test sequences by the task's own
rule, updates, training seconds, stop reason, confirmations, curve) is appended,
with what the benchmark knows (the command reproducing the row, the CPU model,
the load average when the run started, wall seconds, exit code, date, commit),
as one line to a JSON-lines results file. Results from several sessions add up
in that file: a run whose row is already there (same task, T, seed, method,
budget and extra arguments) is skipped unless ``--rerun``; a run that crashed
(no record) is tried again.

The stopping rule is the example's: validation passes, then a fresh set of
10000 confirmation sequences must put the 95 % Clopper-Pearson bound of the
wrong fraction below 1 % (see examples/pathological.py). The verdict in the
table is the test set's, scored after training stopped.

Run by hand (each run takes up to ``--budget`` seconds; 2 cores: ``--jobs 2``
with ``--workers 1`` each, or ``--jobs 1 --workers 2``)::

    python benchmarks/pathological.py --tasks addition xor --seeds 0 1 2 --T 100 --budget 1800 --jobs 2
    python benchmarks/pathological.py --methods sgd adam --T 100 --budget 1800 -- --lr 0.001
    python benchmarks/pathological.py --table                    # the table, nothing run
    python benchmarks/pathological.py --small --results /tmp/p.jsonl   # seconds: checks the script

Arguments after ``--`` go to examples/pathological.py unchanged (and are part of a row's identity).
The example imports the ``hf_symbolic`` of this interpreter: install the
checkout (``pip install -e .``) so that the code measured is the code here;
each row records where ``hf_symbolic`` came from and the commit of this checkout.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from _common import cpu_model  # noqa: E402  (the examples' record of the CPU)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLE = os.path.join(ROOT, "examples", "pathological.py")
DEFAULT_RESULTS = os.path.join(HERE, "results", "pathological.jsonl")
#: The seven problems of Martens & Sutskever 2011, in their order (as ``hf_symbolic.datasets.PATHOLOGICAL_TASKS``).
TASKS = ("addition", "multiplication", "xor", "temporal_order", "temporal_order_3bit", "random_permutation",
         "noiseless_memorization")
SMALL = ["--hidden", "12", "--train", "300", "--valid", "100", "--confirm", "400", "--test", "300",
         "--gradient-batch", "300", "--cg-batch", "100", "--max-cg", "20", "--updates", "2"]
_append_lock = threading.Lock()
_say_lock = threading.Lock()


def say(text):
    """One line to stdout in one write (the ``--jobs`` threads do not interleave)."""
    with _say_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, metavar="TASK",
                    help=f"tasks to run, of {', '.join(TASKS)}")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds")
    ap.add_argument("--T", nargs="+", type=int, default=[100], help="sequence lengths")
    ap.add_argument("--methods", nargs="+", default=["hf"], choices=("hf", "sgd", "nesterov", "adam"),
                    help="training methods")
    ap.add_argument("--budget", type=float, default=1800.0, help="time budget of each run, seconds")
    ap.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    ap.add_argument("--workers", type=int, default=1, help="--workers of each run")
    ap.add_argument("--results", default=DEFAULT_RESULTS, help="JSON-lines file the rows are appended to")
    ap.add_argument("--rerun", action="store_true", help="run even when the row is in the results already")
    ap.add_argument("--table", action="store_true", help="print the table of the results file; run nothing")
    ap.add_argument("--logs", default=None, help="folder for each run's full output (default: not kept)")
    ap.add_argument("--small", action="store_true",
                    help=f"tiny runs that check the script in seconds (adds {' '.join(SMALL)} before the extra args)")
    args = ap.parse_args(argv)
    if args.jobs < 1 or args.workers < 1:
        ap.error(f"--jobs {args.jobs} --workers {args.workers}: expected at least 1 each")
    if args.budget <= 0:
        ap.error(f"--budget {args.budget}: expected a positive number of seconds")
    args.extra = (SMALL if args.small else []) + extra
    return args


# -- rows -----------------------------------------------------------------------------


def row_key(task, T, seed, method, budget, extra):
    """What makes two runs the same run: task, T, seed, method, budget and the extra arguments."""
    return (str(task), int(T), int(seed), str(method), float(budget), tuple(str(a) for a in extra))


def key_of(row):
    """:func:`row_key` of a results row."""
    return row_key(row["task"], row["T"], row["seed"], row["method"], row["budget"], row.get("extra", []))


def read_rows(path):
    """The rows of a results file (none if it does not exist); a line that is not JSON is skipped with a warning."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                print(f"warning: {path}:{number} is not a JSON row ({exc}); skipped", file=sys.stderr)
    return rows


def append_row(path, row):
    """Append one row as one line (one write, flushed and synced), safe between the threads of ``--jobs``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    line = json.dumps(row, sort_keys=True) + "\n"
    with _append_lock, open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def example_argv(task, T, seed, method, budget, workers, extra):
    """Arguments of examples/pathological.py for one run (without ``--json``)."""
    return [task, "--T", str(T), "--seed", str(seed), "--method", method, "--budget", f"{budget:g}",
            "--workers", str(workers), *extra]


def reproduce(argv):
    """The shell command, from the repository's root, that repeats a run."""
    return shlex.join(["python", "examples/pathological.py", *argv])


def git_commit():
    """The commit of this checkout (``-dirty`` when tracked files differ from it), or None outside git."""
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_one(task, T, seed, method, args, commit=None):
    """Run one configuration in a subprocess and return its row (a crash gives a row with ``crashed`` set)."""
    argv = example_argv(task, T, seed, method, args.budget, args.workers, args.extra)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    fd, record_path = tempfile.mkstemp(prefix="pathological-", suffix=".json")
    os.close(fd)
    os.unlink(record_path)  # the example creates it when it finishes
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, EXAMPLE, *argv, "--json", record_path], capture_output=True,
                              text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        record = None
        if os.path.exists(record_path):
            with open(record_path) as f:
                record = json.load(f)
    finally:
        if os.path.exists(record_path):
            os.unlink(record_path)
    if args.logs:
        os.makedirs(args.logs, exist_ok=True)
        name = f"{task}-T{T}-seed{seed}-{method}-{started.replace(':', '')}.log"
        with open(os.path.join(args.logs, name), "w") as f:
            f.write(proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr else ""))
    if record and not os.path.abspath(record.get("hf_symbolic", ROOT)).startswith(ROOT + os.sep):
        say(f"warning: the run imported hf_symbolic from {record['hf_symbolic']}, not from {ROOT} "
            "(pip install -e . here, or set PYTHONPATH)")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    verdict = next((line for line in reversed(lines) if line.startswith(("SOLVED", "NOT SOLVED"))), None)
    row = dict(record or {})
    row.update(task=task, T=T, seed=seed, method=method, budget=args.budget, extra=list(args.extra),
               workers=args.workers, command=reproduce(argv), cpu=cpu_model(), load_average_start=load,
               started=started, wall_seconds=wall, returncode=proc.returncode, final_line=verdict, commit=commit,
               crashed=record is None)
    if record is None:
        row.update(solved=False, stop_reason=f"crashed (exit {proc.returncode})",
                   error="\n".join(proc.stderr.strip().splitlines()[-5:]))
    return row


def plan(args, rows):
    """The runs still to do: ``(task, T, seed, method)`` whose row (not crashed) is not in ``rows``, unless rerun."""
    done = {key_of(r) for r in rows if not r.get("crashed")}
    todo = []
    for T in args.T:
        for task in args.tasks:
            for method in args.methods:
                for seed in args.seeds:
                    if args.rerun or row_key(task, T, seed, method, args.budget, args.extra) not in done:
                        todo.append((task, T, seed, method))
    return todo


def run_suite(args, runner=run_one):
    """Run what :func:`plan` leaves, ``--jobs`` at a time, appending each row as it comes; returns the new rows."""
    rows = read_rows(args.results)
    todo = plan(args, rows)
    skipped = len(args.T) * len(args.tasks) * len(args.methods) * len(args.seeds) - len(todo)
    say(f"{len(todo)} run(s) to do, {skipped} already in {args.results}; budget {args.budget:g} s each, "
        f"{args.jobs} at a time with {args.workers} worker(s); CPU {cpu_model()}")
    commit = git_commit()
    new = []

    def one(job):
        task, T, seed, method = job
        say(f"start  {task} T={T} seed={seed} {method}")
        row = runner(task, T, seed, method, args, commit)
        append_row(args.results, row)
        say(f"done   {task} T={T} seed={seed} {method}: {summary_cell(row)}")
        return row

    if args.jobs == 1:
        new = [one(job) for job in todo]
    else:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            new = list(pool.map(one, todo))
    return new


# -- table ----------------------------------------------------------------------------


def summary_cell(row):
    if row.get("crashed"):
        return row.get("stop_reason", "crashed")
    pct = 100 * row["test_wrong_fraction"]
    return (f"{'SOLVED' if row['solved'] else 'not solved'}, test {pct:.2f}% wrong, {row['updates']} updates, "
            f"{row['train_seconds']:.0f} s, {row['stop_reason']}")


def latest(rows):
    """One row per run identity, the last one appended."""
    by_key = {}
    for row in rows:
        by_key.pop(key_of(row), None)
        by_key[key_of(row)] = row
    return list(by_key.values())


def format_table(rows):
    """The results as plain text: one line per run, then per task, T and method "solved in k of n seeds"."""
    rows = sorted(latest(rows), key=lambda r: (r["T"], TASKS.index(r["task"]) if r["task"] in TASKS else 99,
                                               r["method"], r["budget"], r.get("extra", []), r["seed"]))
    header = ("task", "T", "seed", "method", "solved", "test wrong %", "updates", "seconds", "stop", "command")
    body = []
    for r in rows:
        crashed = r.get("crashed")
        body.append((r["task"], str(r["T"]), str(r["seed"]), r["method"], "yes" if r["solved"] else "no",
                     "-" if crashed else f"{100 * r['test_wrong_fraction']:.2f}",
                     "-" if crashed else str(r["updates"]),
                     "-" if crashed else f"{r['train_seconds']:.0f}", r["stop_reason"], r["command"]))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    right = {1, 2, 5, 6, 7}

    def line(cells):
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    lines = [line(header), line(["-" * w for w in widths])] + [line(b) for b in body]
    groups = {}
    for r in rows:
        groups.setdefault((r["task"], r["T"], r["method"], r["budget"], tuple(r.get("extra", []))), []).append(r)
    lines += ["", "summary (solved on the fresh test sequences by the task's own rule):"]
    for (task, T, method, budget, extra), rs in groups.items():
        solved = [r for r in rs if r["solved"]]
        times = [r["train_seconds"] for r in solved]
        tail = f", median {statistics.median(times):.0f} s of training when solved" if times else ""
        seeds = ",".join(str(r["seed"]) for r in rs)
        more = f" ({' '.join(extra)})" if extra else ""
        lines.append(f"  {task} T={T} {method}, budget {budget:g} s{more}: solved in {len(solved)} of {len(rs)} "
                     f"seeds ({seeds}){tail}")
    cpus = sorted({r.get("cpu", "unknown") for r in rows})
    if cpus:
        lines.append(f"CPU: {'; '.join(cpus)}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if not args.table:
        run_suite(args)
    rows = read_rows(args.results)
    print(format_table(rows) if rows else f"no results in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
