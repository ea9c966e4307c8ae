"""Smoke tests of the example scripts (tiny settings) and checks of their shared builders."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from models import production_mode
from scripts import load_script

SCRIPTS = ("example_NN", "example_RNN", "pathological", "autoencoder")


def load(name):
    """Import ``examples/<name>.py`` by path (the examples are not a package)."""
    return load_script("examples", name)


def run(name, argv, capsys):
    rc = load(name).main(argv)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return rc, lines


def update_lines(lines):
    return [line for line in lines if line.startswith("update ")]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        load(name).main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    assert "--budget" in out or name == "example_NN" and "--updates" in out


# -- example_NN ---------------------------------------------------------------


def test_xor_solved_by_hf(capsys):
    rc, lines = run("example_NN", ["--seed", "1"], capsys)
    assert rc == 0
    assert lines[-1].startswith("SOLVED: XOR 2-50-40-30-1 (HF")
    n = int(re.search(r"after (\d+) updates", lines[-1]).group(1))
    updates = update_lines(lines)
    assert 1 <= n <= 30 and len(updates) == n
    assert "wrong 0/4" in updates[-1] and all("wrong 0/4" not in u for u in updates[:-1])


def test_xor_out_of_updates_returns_1(capsys):
    rc, lines = run("example_NN", ["--seed", "1", "--updates", "1", "--sgd", "--sgd-steps", "1"], capsys)
    assert rc == 1
    assert lines[-1].startswith("NOT SOLVED: XOR") and "after 1 updates" in lines[-1]
    assert len(update_lines(lines)) == 1


# -- example_RNN ----------------------------------------------------------------


def test_rnn_says_what_runs_first_and_draws_its_curves(tmp_path, capsys):
    history = tmp_path / "tiny.jsonl"
    argv = ["--T", "10", "--hidden", "10", "--train", "200", "--valid", "100", "--gradient-batch", "100",
            "--cg-batch", "50", "--updates", "2", "--workers", "2", "--history", str(history)]
    rc, lines = run("example_RNN", argv, capsys)
    assert rc == 1 and lines[-2].startswith("NOT SOLVED: T=10 seed=1 (HF)")
    # what runs comes first, before anything is compiled or trained
    assert lines[0].startswith("example_RNN: HF trains a 10-unit tanh RNN to remember the first bit of T=10 ")
    assert "200 training, 100 validation sequences, float32, seed 1" in lines[0] and "PyTensor" in lines[0]
    compiled = [line.split()[1] for line in lines if line.startswith("  compiled hf_")]
    assert sorted(compiled) == ["hf_cost", "hf_forward_cache", "hf_gradient"], lines
    first_compile = next(i for i, line in enumerate(lines) if line.startswith("  compiled"))
    first_update = lines.index(update_lines(lines)[0])
    assert first_compile < first_update and len(update_lines(lines)) == 2
    png = tmp_path / "tiny.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert lines[-1] == f"history: {history}  no plot: matplotlib is not installed: pip install -e '.[examples]'"
    else:
        assert lines[-1] == f"history: {history}  plot: {png}"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rnn_plot_marks_the_solving_update(tmp_path):
    pytest.importorskip("matplotlib")
    import json

    history = tmp_path / "h.jsonl"
    rows = [dict(update=u, costs=[c, e], validation=[c, e], lambda_=lam, seconds=s)
            for u, c, e, lam, s in [(1, 0.7, 0.4, 0.5, 3.0), (2, 0.3, 0.1, 0.3, 2.0), (3, 0.05, 0.0, 0.2, 4.0)]]
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ex = load("example_RNN")
    import matplotlib.pyplot as plt

    figures = []
    real_savefig = plt.Figure.savefig

    def keep(fig, *a, **k):
        figures.append(fig)
        return real_savefig(fig, *a, **k)

    plt.Figure.savefig = keep
    try:
        assert ex.plot_history(str(history), str(tmp_path / "h.png"), solved_update=3) is None
    finally:
        plt.Figure.savefig = real_savefig
    (fig,) = figures
    axes = fig.axes
    assert [ax.get_xlabel() for ax in axes] == ["update"] * 3 + ["training seconds (compile excluded)"] * 3
    for ax in axes:  # the solving update, at update 3 and after 3 + 2 + 4 = 9 s of training
        marks = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == ([3] if ax.get_xlabel() == "update" else [9.0])
    assert "solved at update 3" in axes[1].get_legend().get_texts()[0].get_text()
    assert list(axes[4].get_lines()[0].get_xdata()) == [3.0, 5.0, 9.0]
    assert list(axes[1].get_lines()[0].get_ydata()) == [0.4, 0.1, 0.0]


# -- pathological ---------------------------------------------------------------

FINAL = re.compile(r"^(SOLVED|NOT SOLVED): (\w+) T=(\d+) seed=\d+ \((HF|SGD|Nesterov|Adam)\) wrong fraction ([0-9.]+) "
                   r"\((\d+)/(\d+) fresh test sequences, cost ([0-9.]+)\) after (\d+) updates")
TINY = ["--hidden", "12", "--train", "200", "--valid", "100", "--test", "300", "--gradient-batch", "200",
        "--cg-batch", "100", "--max-cg", "30"]


@pytest.mark.parametrize("task, extra", [
    ("addition", ["--T", "10", "--updates", "2"]),
    ("noiseless_memorization", ["--T", "12", "--updates", "1"]),
    ("temporal_order", ["--T", "10", "--updates", "2", "--sgd", "--sgd-batch", "50", "--sgd-steps", "2"]),
    ("xor", ["--T", "10", "--updates", "2", "--method", "adam", "--sgd-batch", "50", "--sgd-steps", "2"]),
    ("xor", ["--T", "10", "--updates", "1", "--method", "nesterov", "--lr", "0.1", "--sgd-steps", "1"]),
])
def test_pathological_final_line(task, extra, capsys):
    rc, lines = run("pathological", [task, "--seed", "0", *TINY, *extra], capsys)
    m = FINAL.match(lines[-1])
    assert m, lines[-1]
    verdict, name, _, method, frac, n_wrong, n_cases, _, updates = m.groups()
    expected = {"--sgd": "SGD", "adam": "Adam", "nesterov": "Nesterov"}
    assert name == task and method == next((v for k, v in expected.items() if k in extra), "HF")
    assert int(n_cases) == 300 and float(frac) == pytest.approx(int(n_wrong) / 300, abs=1e-4)
    limit = 0 if task == "noiseless_memorization" else 0.01  # the tasks' own rules
    solved = int(n_wrong) == 0 if limit == 0 else int(n_wrong) / 300 < limit
    assert (verdict == "SOLVED") == solved and rc == (0 if solved else 1)
    assert int(updates) == len(update_lines(lines)) <= int(extra[extra.index("--updates") + 1])


def test_pathological_stopping_rule_decisions():
    from hf_symbolic.datasets import SuccessResult

    rule = load("pathological").stopping_rule
    solved, unsolved = SuccessResult(0.005, 5, 1000, True), SuccessResult(0.02, 20, 1000, False)
    assert rule(unsolved) == "train" and rule(unsolved, confirm=False) == "train"
    assert rule(unsolved, SuccessResult(0.0, 0, 10000, True)) == "train"  # validation first
    assert rule(solved) == "confirm" and rule(solved, confirm=False) == "stop"
    # the multiplication run of issue 16, had its test set been the confirmation set: train on
    assert rule(solved, SuccessResult(0.0114, 114, 10000, False)) == "train"
    # passes the 1 % rule but its 95 % bound does not: 9/1000 (bound 1.56 %) and 84/10000 (1.006 %)
    assert rule(solved, SuccessResult(0.009, 9, 1000, True)) == "train"
    assert rule(solved, SuccessResult(0.0084, 84, 10000, True)) == "train"
    assert rule(solved, SuccessResult(0.0083, 83, 10000, True)) == "stop"
    assert rule(solved, SuccessResult(0.0083, 83, 10000, True), confidence=0.99) == "train"
    # an "all right" rule: the scorer's own verdict counts (a missing pattern fails with nothing wrong)
    assert rule(solved, SuccessResult(0.0, 0, 10000, False)) == "train"
    assert rule(solved, SuccessResult(0.0, 0, 10000, True)) == "stop"
    assert rule(solved, SuccessResult(0.0, 0, 10000, True), max_wrong=1e-4) == "train"


def test_pathological_confidence_of_try_spends_the_error_once():
    mod = load("pathological")
    conf = [mod.confidence_of_try(0.95, k) for k in range(1, 40)]
    assert conf[0] == pytest.approx(0.975) and all(a < b for a, b in zip(conf, conf[1:]))
    assert sum(1 - c for c in conf) < 0.05  # the union bound over every try of a run
    from hf_symbolic.datasets import SuccessResult

    # 80/10000 wrong passes the first try (97.5 %), 81 does not; later tries are stricter
    first = mod.confidence_of_try(0.95, 1)
    assert mod.stopping_rule(SuccessResult(0.005, 5, 1000, True), SuccessResult(0.008, 80, 10000, True),
                             confidence=first) == "stop"
    assert mod.stopping_rule(SuccessResult(0.005, 5, 1000, True), SuccessResult(0.0081, 81, 10000, True),
                             confidence=first) == "train"
    for bad in (0, 1.5, -1):
        with pytest.raises(ValueError, match=f"k={bad}"):
            mod.confidence_of_try(0.95, bad)


@pytest.mark.parametrize("argv, message", [
    (["--confirm", "100"], "--confirm 100 can never confirm at --confidence 0.95"),
    (["--confirm", "-1"], "--confirm -1: expected 0"),
    (["--confidence", "1.5"], "confidence=1.5; expected a probability strictly between 0 and 1"),
    (["--valid", "0"], "--valid 0: expected at least 1"),
])
def test_pathological_rejects_bad_confirmation_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        load("pathological").main(["xor", "--T", "10", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    if argv[0] == "--confirm" and argv[1] == "100":
        assert "expected at least 368 sequences" in err


def test_pathological_json_record_and_confirmations(tmp_path, capsys):
    import json

    out = tmp_path / "run.json"
    argv = ["temporal_order", "--seed", "0", "--T", "12", "--hidden", "20", "--train", "1000", "--valid", "200",
            "--test", "2000", "--gradient-batch", "1000", "--cg-batch", "300", "--max-cg", "50", "--updates", "20",
            "--confirm", "2000", "--workers", "1", "--json", str(out)]
    rc, lines = run("pathological", argv, capsys)
    assert lines[-1] == f"record written to {out}"
    m = FINAL.match(lines[-2])
    assert m, lines[-2]
    r = json.loads(out.read_text())
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary file was renamed
    assert (r["task"], r["T"], r["seed"], r["method"]) == ("temporal_order", 12, 0, "hf")
    assert r["command"] == "python examples/pathological.py " + " ".join(argv)
    assert r["arguments"]["confirm"] == 2000 and r["arguments"]["hidden"] == 20 and r["cpu"]
    assert r["solved"] == (m.group(1) == "SOLVED") == (rc == 0)
    assert (r["test_n_wrong"], r["test_n"]) == (int(m.group(6)), 2000)
    assert r["test_wrong_fraction"] == r["test_n_wrong"] / 2000
    assert r["updates"] == int(m.group(9)) == len(r["curve"]) == len(update_lines(lines))
    assert [p["update"] for p in r["curve"]] == list(range(1, r["updates"] + 1))
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(r["curve"], r["curve"][1:]))
    assert r["train_seconds"] >= r["curve"][-1]["seconds"] and r["compile_seconds"] > 0
    said = [line for line in lines if line.strip().startswith("confirmation ")]
    assert len(said) == len(r["confirmations"])
    valid_passed = [p["update"] for p in r["curve"] if p["valid_wrong_fraction"] < 0.01]
    assert r["validation_first_solved"] == (valid_passed[0] if valid_passed else None)
    # one confirmation at every update whose validation passed, each a fresh draw of 2000 sequences
    assert [c["update"] for c in r["confirmations"]] == valid_passed[:len(r["confirmations"])]
    from hf_symbolic.datasets import SuccessResult
    for k, c in enumerate(r["confirmations"], start=1):
        assert c["confidence"] == pytest.approx(1 - 0.05 / 2 ** k)  # the k-th try, stricter each time
        bound = SuccessResult(c["n_wrong"] / c["n"], c["n_wrong"], c["n"], c["solved"]).wrong_upper_bound(
            c["confidence"])
        assert c["n"] == 2000 and c["bound"] == pytest.approx(bound, rel=1e-12)
        assert c["confirmed"] == (c["solved"] and c["bound"] < 0.01)
    assert [c["confirmed"] for c in r["confirmations"]] == [False] * (len(r["confirmations"]) - 1) + \
        [r["stop_reason"] == "confirmed"] * bool(r["confirmations"])
    if r["stop_reason"] == "confirmed":
        assert r["stopped_update"] == r["updates"] == r["confirmations"][-1]["update"]
    else:
        assert r["stop_reason"] == "num_updates" and r["stopped_update"] is None


def test_pathological_rejects_short_T(capsys):
    with pytest.raises(SystemExit) as exc:
        load("pathological").main(["xor", "--T", "5"])
    assert exc.value.code == 2
    assert "at least 10" in capsys.readouterr().err


# -- autoencoder --------------------------------------------------------------------


def test_autoencoder_curves_errors_match_numpy(tmp_path, capsys):
    from hf_symbolic.datasets import curves_data

    save = tmp_path / "params.npz"
    argv = ["curves", "--train", "200", "--test", "100", "--cg-batch", "100", "--layers", "40", "20", "6",
            "--updates", "2", "--max-cg", "20", "--float64", "--save", str(save),
            "--mode", production_mode()]  # the backend users get; FAST_COMPILE's Python elementwise loops took 34 s here
    rc, lines = run("autoencoder", argv, capsys)
    assert rc == 0
    assert lines[0].startswith("curves autoencoder 784-40-20-6-20-40-784 (HF): 200 training and 100 test cases")
    updates = update_lines(lines)
    assert len(updates) == 2 and all("train error" in u and "test error" in u for u in updates)
    m = re.match(r"FINAL: curves \(HF\) train error ([0-9.]+)  test error ([0-9.]+) .* after 2 updates", lines[-1])
    assert m, lines[-1]
    # Independent reference: numpy forward pass of the saved parameters on the same images.
    p = np.load(save)
    data = curves_data(n_train=200, n_test=100, seed=0, dtype="float64")
    acts = ["sigmoid", "sigmoid", "linear", "sigmoid", "sigmoid", "sigmoid"]
    for x, reported in ((data.train, float(m.group(1))), (data.test, float(m.group(2)))):
        a = x
        for i, act in enumerate(acts):
            z = a @ p[f"W{i}"] + p[f"b{i}"]
            a = z if act == "linear" else 1 / (1 + np.exp(-z))
        err = np.mean(np.sum((a - x) ** 2, axis=1))
        assert reported == pytest.approx(err, abs=1e-4 + 1e-6 * err)
    # It trained: the error after the updates is below the error of the first update's line.
    first = float(re.search(r"train error ([0-9.]+)", updates[0]).group(1))
    assert float(m.group(1)) <= first


def test_autoencoder_curve_uses_eval_cases_and_final_errors_all_cases(tmp_path, capsys):
    import json

    from hf_symbolic.datasets import curves_data

    save, out = tmp_path / "params.npz", tmp_path / "run.json"
    argv = ["curves", "--train", "200", "--test", "100", "--layers", "40", "20", "6", "--updates", "1",
            "--float64", "--method", "sgd", "--lr", "0.01", "--sgd-batch", "50", "--eval-cases", "30",
            "--save", str(save), "--json", str(out)]
    rc, _ = run("autoencoder", argv, capsys)
    assert rc == 0
    record = json.loads(out.read_text())
    p = np.load(save)
    data = curves_data(n_train=200, n_test=100, seed=0, dtype="float64")
    acts = ["sigmoid", "sigmoid", "linear", "sigmoid", "sigmoid", "sigmoid"]

    def error(x):
        a = x
        for i, act in enumerate(acts):
            z = a @ p[f"W{i}"] + p[f"b{i}"]
            a = z if act == "linear" else 1 / (1 + np.exp(-z))
        return np.mean(np.sum((a - x) ** 2, axis=1))

    (point,) = record["curve"]
    assert point["train_error"] == pytest.approx(error(data.train[:30]), rel=1e-9)
    assert point["test_error"] == pytest.approx(error(data.test[:30]), rel=1e-9)
    assert record["train_error"] == pytest.approx(error(data.train), rel=1e-9)
    assert record["test_error"] == pytest.approx(error(data.test), rel=1e-9)
    assert point["train_error"] != pytest.approx(record["train_error"], rel=1e-6)


@pytest.mark.parametrize("method", ["adam", "nesterov"])
def test_autoencoder_first_order_methods_write_their_json(tmp_path, capsys, method):
    import json

    out = tmp_path / "run.json"
    argv = ["curves", "--train", "200", "--test", "100", "--layers", "40", "20", "6", "--updates", "3",
            "--float64", "--method", method, "--lr", "0.001", "--sgd-batch", "50", "--json", str(out)]
    rc, lines = run("autoencoder", argv, capsys)
    assert rc == 0
    name = {"adam": "Adam", "nesterov": "Nesterov"}[method]
    m = re.search(rf"FINAL: curves \({name}\) train error ([0-9.]+)  test error ([0-9.]+) .* after 3 updates", "\n".join(lines))
    assert m, lines[-3:]
    record = json.loads(out.read_text())
    assert record["method"] == method and record["learning_rate"] == 0.001 and record["updates"] == 3
    assert record["train_error"] == pytest.approx(float(m.group(1)), abs=1e-4)
    assert record["test_error"] == pytest.approx(float(m.group(2)), abs=1e-4)
    assert [p["update"] for p in record["curve"]] == [1, 2, 3]
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(record["curve"], record["curve"][1:]))


def test_autoencoder_hf_with_growing_batches_records_them_and_its_damping(tmp_path, capsys, monkeypatch):
    import json

    import hf_symbolic

    made = []
    real = hf_symbolic.BatchDataset

    def spy(*a, **kw):
        made.append(real(*a, **kw))
        return made[-1]

    monkeypatch.setattr(hf_symbolic, "BatchDataset", spy)
    out = tmp_path / "run.json"
    argv = ["curves", "--train", "400", "--test", "100", "--layers", "20", "6", "--updates", "4", "--float64",
            "--gradient-batch", "50", "--cg-batch", "20", "--max-cg", "5", "--batch-growth", "1.5",
            "--max-growth", "3", "--max-cg-exponent", "1", "--eval-cases", "50", "--workers", "1", "--quiet",
            "--json", str(out)]
    rc, _ = run("autoencoder", argv, capsys)
    assert rc == 0
    record = json.loads(out.read_text())
    assert (record["batch_growth"], record["max_growth"], record["gradient_batch"], record["cg_batch"]) == (1.5, 3, 50, 20)
    # floor(1.5**u) minibatches after u updates, at most 3: 1, 2, 3, 3
    assert [p["batches"] for p in record["curve"]] == [1, 2, 3, 3]
    # and the CG cap of 5 grows with them: 5, 10, 15, 15
    assert record["max_cg_exponent"] == 1.0
    assert all(p["cg"] <= 5 * p["batches"] for p in record["curve"]) and max(p["cg"] for p in record["curve"]) > 5
    gradient_ds, cg_ds = made
    assert (gradient_ds.batch_size, cg_ds.batch_size) == (50, 20)
    assert gradient_ds.updates == cg_ds.updates == 4 and gradient_ds.number_batches == cg_ds.number_batches == 3
    first = record["curve"][0]
    assert first["lambda_"] == 45.0 and first["cg"] <= 5 and math.isfinite(first["rho"])
    assert first["timings"]["cg"] > 0 and first["timings"]["gradient"] > 0


def test_autoencoder_validation_frequency_and_the_per_case_preconditioner(tmp_path, capsys):
    """Errors measured every 3rd update and after the last (the best parameters are the last update's)."""
    import json

    out = tmp_path / "run.json"
    argv = ["curves", "--train", "400", "--test", "100", "--layers", "20", "6", "--updates", "5", "--float64",
            "--gradient-batch", "100", "--cg-batch", "50", "--max-cg", "5", "--validation-frequency", "3",
            "--preconditioner", "gauss_newton_per_case", "--eval-cases", "50", "--workers", "1", "--json", str(out)]
    rc, lines = run("autoencoder", argv, capsys)
    assert rc == 0
    text = "\n".join(lines)
    assert "(HF + gauss_newton_per_case)" in lines[0]
    # updates 1, 2, 4, 5 print no errors; update 3 does; the final validation makes update 5 the best
    assert len(re.findall(r"^update +\d+ .*test error", text, flags=re.M)) == 1
    assert len(re.findall(r"^update +\d+ ", text, flags=re.M)) == 5
    assert re.search(r"after 5 updates .*best update 5;", text), lines[-3:]
    record = json.loads(out.read_text())
    assert record["validation_frequency"] == 3 and record["preconditioner"] == "gauss_newton_per_case"
    assert [p["update"] for p in record["curve"]] == [3]
    # phase times summed over all five updates, not only the measured one
    assert record["timings"]["gradient"] > record["curve"][0]["timings"]["gradient"] > 0
    assert record["timings"]["validation"] > 0


def test_autoencoder_missing_fashion_mnist(tmp_path, capsys):
    rc = load("autoencoder").main(["fashion-mnist", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "not found" in err and str(tmp_path) in err


@pytest.mark.parametrize("argv, named", [
    (["--lambda-drop", "1.5"], "--lambda-drop 1.5: expected a factor in (0, 1)"),
    (["--lambda-drop", "0"], "--lambda-drop 0.0: expected a factor in (0, 1)"),
    (["--cg-batch", "0"], "--cg-batch 0: expected at least 1"),
    (["--train", "0"], "--train 0: expected at least 1"),
    (["--gradient-batch", "-5"], "--gradient-batch -5: expected 0"),
    (["--eval-cases", "-1"], "--eval-cases -1: expected 0"),
    (["--layers", "10", "0", "2"], "--layers [10, 0, 2]: expected positive widths"),
    (["--batch-growth", "0.9"], "--batch-growth 0.9: expected a factor >= 1"),
    (["--batch-growth", "nan"], "--batch-growth nan: expected a factor >= 1"),
    (["--max-growth", "0"], "--max-growth 0: expected at least 1"),
    (["--max-cg-exponent", "-1"], "--max-cg-exponent -1.0: expected a number >= 0"),
    (["--validation-frequency", "0"], "--validation-frequency 0: expected at least 1"),
])
def test_autoencoder_bad_arguments_named_before_any_compile(argv, named, capsys, monkeypatch):
    module = load("autoencoder")
    monkeypatch.setattr(module, "compile_now", lambda *a, **k: pytest.fail("compiled before checking its arguments"))
    with pytest.raises(SystemExit) as exc:
        module.main(["curves", *argv])
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


# -- shared builders ------------------------------------------------------------------


def test_sparse_weights_have_15_incoming():
    common = load("_common").__dict__
    rng = np.random.default_rng(0)
    w = common["sparse_weights"](50, 7, rng)
    assert w.shape == (50, 7)
    assert ((w != 0).sum(axis=0) == 15).all()
    small = common["sparse_weights"](4, 3, rng)  # fewer inputs than 15: dense
    assert (small != 0).all()
    r = common["sparse_recurrent"](40, rng, radius=1.1)
    assert np.max(np.abs(np.linalg.eigvals(r))) == pytest.approx(1.1, rel=1e-9)
    assert ((r != 0).sum(axis=0) == 15).all()


@pytest.mark.parametrize("output, steps", [("linear", 1), ("sigmoid", 1), ("softmax", 3)])
def test_rnn_builder_matches_numpy(output, steps):
    import pytensor

    common = load("_common").__dict__
    rng = np.random.default_rng(1)
    n_in, n_hidden, n_out, T, n = 3, 6, 2, 7, 5
    model = common["build_rnn"](n_in, n_hidden, n_out, output, rng, output_steps=steps, dtype="float64",
                                n_nonzero=3, input_scale=0.5, output_scale=1.0)
    x = rng.normal(size=(T, n, n_in))
    shape = (n, n_out) if steps == 1 else (steps, n, n_out)
    y = rng.uniform(size=shape) if output != "softmax" else np.eye(n_out)[rng.integers(0, n_out, size=shape[:-1])]
    f = pytensor.function(model.inputs, [model.out, model.costs[0], model.h, model.ha], mode="FAST_COMPILE")
    out, cost, h, ha = f(x, y)
    params = {q.name: q.get_value() for q in model.params}
    ref = common["rnn_forward"](params, x, output, steps)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    if output == "linear":
        ref_cost = 0.5 * np.sum((ref - y) ** 2) / n
    elif output == "sigmoid":
        ref_cost = -np.sum(y * np.log(ref) + (1 - y) * np.log(1 - ref)) / n
    else:
        ref_cost = -np.sum(y * np.log(ref)) / n
    assert cost == pytest.approx(ref_cost, rel=1e-10)
    np.testing.assert_allclose(h, (np.tanh(ha) + 1) / 2, rtol=1e-12)
    assert ha.shape == (T, n, n_hidden)
