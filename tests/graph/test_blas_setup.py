"""The import-time invariant: importing hf_symbolic before PyTensor asks PyTensor to link OpenBLAS.

``hf_symbolic/__init__.py`` calls ``graph.backend.configure_blas_before_import``
before anything imports PyTensor, because PyTensor reads ``PYTENSOR_FLAGS``
once, at its own import. Each case runs in a fresh interpreter (this test
process imported PyTensor long ago), on this checkout's package.
"""

import os
import subprocess
import sys

import pytest

from hf_symbolic.graph.backend import openblas_available

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE = ("import os, hf_symbolic, pytensor; "
         "print(os.environ.get('PYTENSOR_FLAGS', '<unset>')); print(pytensor.config.blas__ldflags)")


def _run(code, **env):
    """Printed lines of ``code`` run by a fresh interpreter, with ``env`` as the only PyTensor / BLAS settings."""
    child = {k: v for k, v in os.environ.items() if k not in ("PYTENSOR_FLAGS", "HF_SYMBOLIC_NO_BLAS_SETUP")}
    child.update(env)
    child["PYTHONPATH"] = ROOT + os.pathsep + child.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def _found_by_pytensor_alone():
    """``blas__ldflags`` of a process that never imports hf_symbolic."""
    (ldflags,) = _run("import pytensor; print(pytensor.config.blas__ldflags)")
    return ldflags


def test_the_probe_imports_this_checkout():
    assert _run("import hf_symbolic; print(hf_symbolic.__file__)") == [os.path.join(ROOT, "hf_symbolic", "__init__.py")]


def test_openblas_is_linked_when_installed():
    if not openblas_available():
        pytest.skip("libopenblas.so is not installed: nothing to link")
    assert _run(PROBE) == ["blas__ldflags=-lopenblas", "-lopenblas"]


def test_other_flags_of_the_user_are_kept():
    if not openblas_available():
        pytest.skip("libopenblas.so is not installed: nothing to link")
    lines = _run(PROBE + "; print(pytensor.config.floatX)", PYTENSOR_FLAGS="floatX=float32")
    assert lines == ["floatX=float32,blas__ldflags=-lopenblas", "-lopenblas", "float32"]


def test_an_explicit_user_setting_is_left_alone():
    assert _run(PROBE, PYTENSOR_FLAGS="blas__ldflags=-lmyblas") == ["blas__ldflags=-lmyblas", "-lmyblas"]


def test_opt_out_by_environment():
    flags, ldflags = _run(PROBE, HF_SYMBOLIC_NO_BLAS_SETUP="1")
    assert flags == "<unset>"
    assert ldflags == _found_by_pytensor_alone()


def test_nothing_changes_when_pytensor_was_imported_first():
    flags, ldflags = _run(PROBE.replace("hf_symbolic, pytensor", "pytensor, hf_symbolic"))
    assert flags == "<unset>"
    assert ldflags == _found_by_pytensor_alone()
