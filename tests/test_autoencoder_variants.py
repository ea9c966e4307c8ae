"""benchmarks/autoencoder_variants.py: train options and a growing CG batch reach the example's HF run."""

from __future__ import annotations

import pytest

import hf_symbolic
from scripts import load_script


def test_options_and_growing_cg_batch_reach_the_run_and_are_undone(capsys):
    variants = load_script("benchmarks", "autoencoder_variants")
    train, datasets = hf_symbolic.hf_optimizer.train, hf_symbolic.BatchDataset
    seen = {}

    def spy(self, *a, **kw):
        seen.update(kw)
        return train(self, *a, **kw)

    hf_symbolic.hf_optimizer.train = spy
    try:
        code = variants.main(["--grow", "100", "1", "--option", "cg_grid_start=5", "--option", "min_cg_iterations=3",
                              "--", "curves", "--train", "400", "--test", "100", "--cg-batch", "300",
                              "--layers", "20", "6", "--updates", "4", "--budget", "600", "--workers", "1",
                              "--eval-cases", "100", "--quiet"])
    finally:
        hf_symbolic.hf_optimizer.train = train
    out = capsys.readouterr().out
    assert code == 0
    assert seen["cg_grid_start"] == 5 and seen["min_cg_iterations"] == 3 and seen["max_cg_iterations"] == 250
    assert "CG batch cases after each update: [200, 300, 300, 300]" in out
    assert hf_symbolic.BatchDataset is datasets  # the script undid its changes
    assert hf_symbolic.hf_optimizer.train is train


@pytest.mark.parametrize("argv, message", [
    (["--option", "cg_grid_start"], "expected NAME=VALUE"),
    (["--option", "cg_grid_start=five"], "not a Python literal"),
    (["--grow", "0", "4"], "expected two positive numbers"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    variants = load_script("benchmarks", "autoencoder_variants")
    with pytest.raises(SystemExit) as exc:
        variants.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
