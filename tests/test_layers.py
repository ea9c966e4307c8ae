"""The package's shape, read from its imports (module-level and inside functions alike).

- imports between hf_symbolic's layers point down only:
  optimizer -> train -> evaluate -> model -> graph, train -> solve;
  errors, _env and _checks are the floor every layer may use;
- no import cycle between modules;
- solve/ is numpy only (no PyTensor);
- no module is longer than 600 lines.
"""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "hf_symbolic"

#: Layer -> the layers it may import (besides itself and the floor).
ALLOWED = {
    "optimizer": {"train", "evaluate", "model", "graph", "solve"},
    "train": {"evaluate", "model", "graph", "solve"},
    "evaluate": {"model", "graph"},
    "model": {"graph"},
    "graph": set(),
    "solve": set(),
}
FLOOR = {"errors", "_env", "_checks"}
#: Modules kept so that release 0.1's documented names work; nothing inside the package imports them.
COMPAT = {"training", "distributed", "sgd"}


def _modules():
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name, path, modules):
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            cands = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in cands if c in modules and c != name}
    return found


def _layer(mod):
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "package"


MODULES = _modules()
EDGES = {m: _imports(m, p, MODULES) for m, p in MODULES.items()}


def test_the_layers_exist():
    assert {"hf_symbolic.model", "hf_symbolic.graph", "hf_symbolic.solve", "hf_symbolic.train",
            "hf_symbolic.evaluate"} <= set(MODULES)


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if _layer(m) in ALLOWED))
def test_imports_point_down_only(mod):
    mine = _layer(mod)
    wrong = sorted(t for t in EDGES[mod]
                   if _layer(t) not in ALLOWED[mine] | FLOOR | {mine} and not t.startswith(f"hf_symbolic.{mine}"))
    assert not wrong, f"{mod} ({mine}) imports {wrong}"


def test_nothing_inside_imports_the_compatibility_modules():
    users = sorted(m for m, ts in EDGES.items() if any(t.split(".")[-1] in COMPAT and t.count(".") == 1 for t in ts))
    assert not users


def test_no_import_cycle():
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v, counter=[0]):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in EDGES[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in MODULES:
        if m not in index:
            visit(m)
    # the package __init__ re-exports everything and nothing imports it back except through submodules
    cycles = [c for c in cycles if c != ["hf_symbolic"] and "hf_symbolic" not in c]
    assert not cycles


def test_solve_is_numpy_only():
    for mod, path in MODULES.items():
        if _layer(mod) == "solve":
            assert "pytensor" not in path.read_text(), mod


def test_no_module_over_600_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 600}
    assert not long
