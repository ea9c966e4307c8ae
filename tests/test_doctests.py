"""The Examples sections of the public docstrings run and give what they show (every module, subpackages too)."""

import doctest
import importlib
import pkgutil

import pytest

import hf_symbolic
import hf_symbolic.datasets

MODULES = sorted(
    {"hf_symbolic"}
    | {name for pkg in (hf_symbolic, hf_symbolic.datasets)
       for _, name, _ in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")}
)


def test_every_layer_is_walked():
    assert {"hf_symbolic.graph.rewrites.row_loops", "hf_symbolic.solve.preconditioners", "hf_symbolic.optimizer",
            "hf_symbolic.train.loop", "hf_symbolic.evaluate.serial", "hf_symbolic.model.kinds"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
