"""The pathological benchmark's bookkeeping: its table, which runs it skips, the rows it writes (no training)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import ROOT, load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks", "pathological")


def row(task="addition", T=100, seed=0, method="hf", budget=1800.0, extra=(), solved=True, wrong=0.0012,
        updates=40, seconds=650.0, reason="confirmed", **more):
    argv = [task, "--T", str(T), "--seed", str(seed), "--method", method, "--budget", f"{budget:g}",
            "--workers", "1", *extra]
    r = dict(task=task, T=T, seed=seed, method=method, budget=budget, extra=list(extra), solved=solved,
             test_wrong_fraction=wrong, test_n_wrong=round(wrong * 10000), test_n=10000, updates=updates,
             train_seconds=seconds, stop_reason=reason, cpu="Test CPU", crashed=False,
             command="python examples/pathological.py " + " ".join(argv))
    r.update(more)
    return r


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_table_from_a_results_file(bench, tmp_path):
    results = tmp_path / "r.jsonl"
    rows = [row(seed=0, seconds=600.0), row(seed=1, solved=False, wrong=0.0114, updates=45, seconds=707.4,
                                             reason="time_budget"),
            row(seed=2, seconds=800.0),
            row(task="xor", seed=0, solved=False, crashed=True, reason="crashed (exit 1)"),
            row(task="addition", T=200, seed=0, method="sgd", solved=False, wrong=0.5, updates=900, seconds=1800,
                reason="time_budget")]
    write(results, rows)
    with open(results, "a") as f:
        f.write("not json\n")
    table = bench.format_table(bench.read_rows(str(results)))
    lines = table.splitlines()
    assert lines[0].split() == ["task", "T", "seed", "method", "solved", "test", "wrong", "%", "updates", "seconds",
                                "stop", "command"]
    assert set(lines[1]) <= {"-", " "}
    body = lines[2:7]
    assert [line.split()[:8] for line in body] == [
        ["addition", "100", "0", "hf", "yes", "0.12", "40", "600"],
        ["addition", "100", "1", "hf", "no", "1.14", "45", "707"],
        ["addition", "100", "2", "hf", "yes", "0.12", "40", "800"],
        ["xor", "100", "0", "hf", "no", "-", "-", "-"],
        ["addition", "200", "0", "sgd", "no", "50.00", "900", "1800"],
    ]
    assert body[1].split()[8] == "time_budget" and "crashed (exit 1)" in body[3]
    assert body[1].endswith("python examples/pathological.py addition --T 100 --seed 1 --method hf --budget 1800 "
                            "--workers 1")
    assert ("  addition T=100 hf, budget 1800 s: solved in 2 of 3 seeds (0,1,2), median 700 s of training "
            "when solved") in lines
    assert "  xor T=100 hf, budget 1800 s: solved in 0 of 1 seeds (0)" in lines
    assert "  addition T=200 sgd, budget 1800 s: solved in 0 of 1 seeds (0)" in lines
    assert lines[-1] == "CPU: Test CPU"


def test_table_keeps_the_last_row_of_a_run(bench):
    rows = [row(seed=0, solved=False, wrong=0.02, reason="time_budget"), row(seed=0, solved=True, wrong=0.001)]
    table = bench.format_table(rows)
    assert "solved in 1 of 1 seeds" in table
    assert len([line for line in table.splitlines() if line.startswith("addition")]) == 1


def suite_args(bench, tmp_path, *argv):
    return bench.parse_args(["--results", str(tmp_path / "r.jsonl"), *argv])


def fake_runner(calls):
    def runner(task, T, seed, method, args, commit=None):
        calls.append((task, T, seed, method))
        return row(task, T, seed, method, args.budget, args.extra, crashed=task == "xor",
                   solved=task != "xor")
    return runner


def test_runs_already_in_the_results_are_skipped(bench, tmp_path):
    calls = []
    args = suite_args(bench, tmp_path, "--tasks", "addition", "xor", "--seeds", "0", "1")
    new = bench.run_suite(args, runner=fake_runner(calls))
    assert calls == [("addition", 100, 0, "hf"), ("addition", 100, 1, "hf"), ("xor", 100, 0, "hf"),
                     ("xor", 100, 1, "hf")]
    assert len(new) == 4 and len(bench.read_rows(args.results)) == 4
    calls.clear()  # again: the addition rows are there, the crashed xor rows are tried again
    bench.run_suite(args, runner=fake_runner(calls))
    assert calls == [("xor", 100, 0, "hf"), ("xor", 100, 1, "hf")]
    calls.clear()  # another seed, another budget, other extra arguments, another method: new runs
    bench.run_suite(suite_args(bench, tmp_path, "--tasks", "addition", "--seeds", "0", "2"),
                    runner=fake_runner(calls))
    bench.run_suite(suite_args(bench, tmp_path, "--tasks", "addition", "--seeds", "0", "--budget", "900"),
                    runner=fake_runner(calls))
    bench.run_suite(suite_args(bench, tmp_path, "--tasks", "addition", "--seeds", "0", "--", "--hidden", "50"),
                    runner=fake_runner(calls))
    bench.run_suite(suite_args(bench, tmp_path, "--tasks", "addition", "--seeds", "0", "--methods", "adam"),
                    runner=fake_runner(calls))
    assert calls == [("addition", 100, 2, "hf")] + [("addition", 100, 0, "hf")] * 2 + [("addition", 100, 0, "adam")]
    calls.clear()
    bench.run_suite(suite_args(bench, tmp_path, "--tasks", "addition", "--seeds", "0", "--rerun"),
                    runner=fake_runner(calls))
    assert calls == [("addition", 100, 0, "hf")]
    keys = [bench.key_of(r) for r in bench.read_rows(args.results)]
    assert keys.count(bench.row_key("addition", 100, 0, "hf", 1800, [])) == 2


def test_parallel_jobs_append_every_row(bench, tmp_path):
    calls = []
    args = suite_args(bench, tmp_path, "--tasks", "addition", "multiplication", "--seeds", "0", "1", "2",
                      "--jobs", "3", "--T", "100", "200")
    bench.run_suite(args, runner=fake_runner(calls))
    rows = bench.read_rows(args.results)
    assert len(calls) == len(rows) == 12
    assert sorted(bench.key_of(r)[:3] for r in rows) == sorted((t, T, s) for t in ("addition", "multiplication")
                                                               for T in (100, 200) for s in (0, 1, 2))


def test_parse_args_passes_what_follows_the_double_dash(bench):
    args = bench.parse_args(["--tasks", "xor", "--", "--hidden", "50", "--confirm", "0"])
    assert args.tasks == ["xor"] and args.extra == ["--hidden", "50", "--confirm", "0"]
    assert (args.seeds, args.T, args.methods, args.budget, args.jobs, args.workers) == ([0, 1, 2], [100], ["hf"],
                                                                                        1800.0, 1, 1)
    with pytest.raises(SystemExit):
        bench.parse_args(["--tasks", "nope"])


def test_run_one_row_from_the_record_and_from_a_crash(bench, tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        path = cmd[cmd.index("--json") + 1]
        if "--seed" in cmd and cmd[cmd.index("--seed") + 1] == "0":
            Path(path).write_text(json.dumps(dict(solved=True, test_wrong_fraction=0.0, updates=3,
                                                  train_seconds=1.5, stop_reason="confirmed",
                                                  hf_symbolic=str(ROOT / "hf_symbolic"))))
            return subprocess.CompletedProcess(cmd, 0, "update 1\nSOLVED: xor T=100 ...\n", "")
        return subprocess.CompletedProcess(cmd, 1, "", "Traceback\nValueError: boom\n")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    args = bench.parse_args(["--budget", "60", "--logs", str(tmp_path / "logs"), "--", "--hidden", "20"])
    r = bench.run_one("xor", 100, 0, "nesterov", args, commit="abc")
    assert seen["cmd"][:2] == [sys.executable, bench.EXAMPLE]
    assert seen["cmd"][2:-2] == ["xor", "--T", "100", "--seed", "0", "--method", "nesterov", "--budget", "60",
                                 "--workers", "1", "--hidden", "20"]
    assert r["command"] == ("python examples/pathological.py xor --T 100 --seed 0 --method nesterov --budget 60 "
                            "--workers 1 --hidden 20")
    assert r["solved"] and not r["crashed"] and r["returncode"] == 0 and r["commit"] == "abc"
    assert r["final_line"] == "SOLVED: xor T=100 ..." and r["extra"] == ["--hidden", "20"] and r["budget"] == 60
    assert "cpu" in r and "load_average_start" in r and r["wall_seconds"] >= 0
    assert not Path(seen["cmd"][-1]).exists()  # the record file was removed
    assert len(list((tmp_path / "logs").iterdir())) == 1
    bad = bench.run_one("xor", 100, 1, "hf", args)
    assert bad["crashed"] and not bad["solved"] and bad["stop_reason"] == "crashed (exit 1)"
    assert bad["error"].endswith("ValueError: boom")
    assert "crashed (exit 1)" in bench.format_table([r, bad])
