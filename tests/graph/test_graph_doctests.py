"""The Examples sections of hf_symbolic.graph's docstrings run and give what they show.

(``tests/test_doctests.py`` walks the top-level modules only.)
"""

import doctest
import importlib
import pkgutil

import pytest

import hf_symbolic.graph

MODULES = sorted({"hf_symbolic.graph"} | {
    name for _, name, _ in pkgutil.walk_packages(hf_symbolic.graph.__path__, "hf_symbolic.graph.")
})


def test_every_graph_module_is_listed():
    assert {"hf_symbolic.graph.backend", "hf_symbolic.graph.partial_eval", "hf_symbolic.graph.rewrites",
            "hf_symbolic.graph.rewrites.row_loops"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
