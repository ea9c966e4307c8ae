"""Suite-wide settings, and the helpers every test folder imports (``models``, the worker scripts).

Backend. Unless ``HF_SYMBOLIC_MODE`` is already set, the optimizers the
suite builds with ``mode=None`` run in PyTensor's FAST_COMPILE mode (Python
thunks, few rewrites, less the one that is wrong: ``WRONG_REWRITES`` in
``hf_symbolic/model/checks.py``). Most tests check the graphs hf_symbolic
builds and what the solver makes of their numbers, not the backend; under the
library's default, the C VM, each small test model compiled its own C modules,
which a fresh machine has in no cache (788 modules, about 870 s). Scans whose
own ``mode`` is unset still compile their inner graphs in C (PyTensor's rule).
The C backend, its BLAS, its vector math and hf_symbolic's rewrites are tested
where they are the point, with :func:`models.production_mode` (``tests/graph``,
the parallel-compile test, an autoencoder example run), and
``tests/graph/test_backends.py`` compares the C VM, Numba and JAX with
FAST_COMPILE. Subprocesses started by the tests inherit the setting.
"""
import os
import sys

os.environ.setdefault("HF_SYMBOLIC_MODE", "FAST_COMPILE")

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
