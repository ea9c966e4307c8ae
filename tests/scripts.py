"""Import the repository's scripts (``examples/``, ``benchmarks/``: not packages) by path, once per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script(folder: str, name: str):
    """The module ``<repository>/<folder>/<name>.py``, imported once (later calls return the same module)."""
    key = f"hf_{folder}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]
