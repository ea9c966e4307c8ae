"""The Examples sections of the public docstrings run and give what they show."""

import doctest
import importlib
import pkgutil

import pytest

import hf_symbolic
import hf_symbolic.datasets

MODULES = sorted(
    name
    for pkg in (hf_symbolic, hf_symbolic.datasets)
    for _, name, _ in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + ".")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
