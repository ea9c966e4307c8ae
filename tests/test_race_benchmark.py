"""The autoencoder race's bookkeeping: its runs, learning-rate choice, table and failed runs (no training)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from scripts import load_script


@pytest.fixture(scope="module")
def race():
    return load_script("benchmarks", "race")


def args_of(race, tmp_path, *argv):
    return race.parse_args([*argv, "--out", str(tmp_path)])


def test_every_learning_rate_of_the_grid_is_run_unless_chosen(race, tmp_path):
    args = args_of(race, tmp_path, "--seeds", "1", "--preconditioners", "none", "kfac")
    keys = [key for key, _ in race.runs(args)]
    assert keys[:2] == [("curves", 600.0, 1, "hf", None), ("curves", 600.0, 1, "hf+kfac", None)]
    assert sorted(lr for *_, m, lr in keys if m == "adam") == sorted(race.GRIDS["adam"])
    assert len(keys) == 2 + sum(len(g) for g in race.GRIDS.values())

    args = args_of(race, tmp_path, "--seeds", "1", "2", "--lrs", "adam=1e-3", "sgd=0.01", "sgd=0.03")
    keys = [key for key, _ in race.runs(args)]
    assert [lr for *_, m, lr in keys if m == "adam"] == [0.001, 0.001]
    assert [lr for *_, m, lr in keys if m == "sgd"] == [0.01, 0.03, 0.01, 0.03]
    assert len([k for k in keys if k[3] == "nesterov"]) == 2 * len(race.GRIDS["nesterov"])
    cmd = dict(race.runs(args))[("curves", 600.0, 2, "adam", 0.001)]
    assert cmd[cmd.index("--lr") + 1] == "0.001" and cmd[cmd.index("--seed") + 1] == "2"
    assert cmd[cmd.index("--workers") + 1] == "1"


def test_each_hf_setting_runs_with_each_preconditioner(race, tmp_path):
    args = args_of(race, tmp_path, "--seeds", "0", "--hf-settings", "hf", "hf-small", "--preconditioners", "none",
                   "kfac", "--methods")
    cmds = dict(race.runs(args))
    assert [k[3] for k in cmds] == ["hf", "hf+kfac", "hf-small", "hf-small+kfac"]
    assert race.method_names(args) == ["hf", "hf+kfac", "hf-small", "hf-small+kfac"]
    small = cmds[("curves", 600.0, 0, "hf-small+kfac", None)]
    settings = race.HF_SETTINGS["hf-small"]
    assert small[small.index(settings[0]):][:len(settings)] == settings
    assert small[small.index("--preconditioner") + 1] == "kfac" and small[small.index("--method") + 1] == "hf"
    assert "--gradient-batch" not in cmds[("curves", 600.0, 0, "hf+kfac", None)]
    assert race.json_path(args, ("curves", 600.0, 0, "hf-small", None)).endswith("curves-600s-seed0-hf-small.json")
    with pytest.raises(SystemExit):
        race.parse_args(["--hf-settings", "hf-tiny"])


def test_growing_setting_is_the_small_one_with_growing_batches(race, tmp_path):
    args = args_of(race, tmp_path, "--seeds", "0", "--hf-settings", "hf-grow", "--preconditioners", "none",
                   "--methods")
    ((key, cmd),) = race.runs(args)
    assert key[3] == "hf-grow"
    small, grow = race.HF_SETTINGS["hf-small"], race.HF_SETTINGS["hf-grow"]
    assert grow[:len(small)] == small
    assert cmd[cmd.index("--batch-growth") + 1] == "1.002" and cmd[cmd.index("--max-growth") + 1] == "8"
    parsed = load_script("examples", "autoencoder").parse_args(["curves", *grow])  # the example accepts them
    assert (parsed.batch_growth, parsed.max_growth, parsed.gradient_batch, parsed.cg_batch) == (1.002, 8, 1000, 250)


@pytest.mark.parametrize("name, exponent", [("hf-grow-cg", 1.0), ("hf-grow-cg-sqrt", 0.5)])
def test_growing_cg_cap_settings_are_the_growing_one_with_an_exponent(race, name, exponent):
    grow, setting = race.HF_SETTINGS["hf-grow"], race.HF_SETTINGS[name]
    assert setting[:len(grow)] == grow and setting[len(grow)] == "--max-cg-exponent"
    assert float(setting[len(grow) + 1]) == exponent and len(setting) == len(grow) + 2
    parsed = load_script("examples", "autoencoder").parse_args(["curves", *setting])
    assert (parsed.max_cg_exponent, parsed.max_cg, parsed.batch_growth) == (exponent, 25, 1.002)


@pytest.mark.parametrize("item, named", [
    ("adam=0.002", "0.002 is not in the adam grid"),
    ("rmsprop=0.001", "expected METHOD=LR with METHOD one of"),
    ("adam=fast", "expected a number after '='"),
])
def test_a_learning_rate_outside_the_fixed_grid_is_refused(race, tmp_path, item, named, capsys):
    with pytest.raises(SystemExit) as exc:
        race.parse_args(["--lrs", item])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert named in err and repr(item) in err


def result(test, train=None, lr=None):
    return dict(test_error=test, train_error=test if train is None else train, learning_rate=lr, curve=[])


def test_table_reports_the_best_rate_per_seed_and_the_median_over_seeds(race, tmp_path):
    args = args_of(race, tmp_path, "--seeds", "0", "1", "2", "--methods", "adam")
    results = {
        ("curves", 600.0, 0, "hf", None): result(26.0, 25.0),
        ("curves", 600.0, 1, "hf", None): result(24.0, 23.0),
        ("curves", 600.0, 2, "hf", None): result(30.0, 29.0),
        ("curves", 600.0, 0, "adam", 0.001): result(4.0),
        ("curves", 600.0, 0, "adam", 0.003): result(float("nan")),  # diverged: never the best
        ("curves", 600.0, 1, "adam", 0.0003): result(5.0),
        ("curves", 600.0, 1, "adam", 0.001): result(3.0),
    }
    assert race.best_of_grid(results, "curves", 600.0, 0, "adam")[0] == 0.001
    lines = [line for line in race.table(args, results).splitlines()[2:]]
    assert len(lines) == 2
    hf = next(line for line in lines if line.split()[2] == "hf").split()
    assert hf[3:6] == ["26.000", "25.000", "0,1,2"]
    adam = next(line for line in lines if line.split()[2] == "adam").split()
    assert adam[3:] == ["3.500", "3.500", "0,1", "0.001", "0.001"]


def test_a_run_that_writes_no_json_is_reported_failed_and_not_kept(race, tmp_path, monkeypatch, capsys):
    args = args_of(race, tmp_path, "--seeds", "0")
    key, cmd = race.runs(args)[0]
    monkeypatch.setattr(race.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        cmd, 1, "", "Traceback\nModuleNotFoundError: No module named 'hf_symbolic'\n"))
    assert race.run_one(args, key, cmd) == (key, None, "failed")
    assert "No module named 'hf_symbolic'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

    def writes(c, **kw):
        Path(c[-1]).write_text(json.dumps(result(3.0)))
        return subprocess.CompletedProcess(c, 0, "", "")

    monkeypatch.setattr(race.subprocess, "run", writes)
    _, path, _ = race.run_one(args, key, cmd)
    assert json.loads(Path(path).read_text())["test_error"] == 3.0
    assert race.run_one(args, key, cmd) == (key, path, "kept")
